"""Shared by the docs tests: the folder the runnable doc examples run in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def export_example_policy(root: Path) -> Path:
    """An untrained TD3 policy for dmc:cartpole-swingup with the demo config's settings (action
    repeat 8, no observation normalization) but small networks, exported to root/policy.onnx:
    what docs/contributing.md promises the runnable examples. No training: random weights."""
    from rlcontrol.agents import make_agent
    from rlcontrol.config import load_config, save_config
    from rlcontrol.deploy.export import export_run
    from rlcontrol.training import builders
    from rlcontrol.training.loop import write_policy

    config = load_config(ROOT / "configs" / "td3_cartpole_swingup.yaml",
                         ["agent.actor_hidden=[32, 32]", "agent.critic_hidden=[32, 32]"])
    env = builders.make_env(config.env, config.seed)
    agent = make_agent(config, env.spec)
    env.close()
    run_dir = root / "td3_cartpole_swingup-untrained"
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    write_policy(agent, run_dir, 0)
    out = root / "policy.onnx"
    export_run(run_dir, out, parity_samples=20)
    return out


@pytest.fixture(scope="session")
def example_policy(tmp_path_factory) -> Path:
    return export_example_policy(tmp_path_factory.mktemp("doc-policy"))


@pytest.fixture
def example_dir(tmp_path, example_policy) -> Path:
    """A fresh folder with policy.onnx and a link configs/ -> the repository's configs."""
    shutil.copy(example_policy, tmp_path / "policy.onnx")
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    return tmp_path
