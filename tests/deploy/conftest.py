"""Run folders with an untrained-but-nontrivial policy, built without training: the export
path only needs config.yaml and policy.pt, and random weights with real normalizer
statistics exercise every part of the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlcontrol.agents import make_agent
from rlcontrol.config import config_from_dict, save_config
from rlcontrol.training import builders
from rlcontrol.training.loop import write_policy


def make_run(root: Path, algo: str = "td3", env_id: str = "dmc:cartpole-swingup", obs_format: str = "flat",
             obs_norm: bool = True, hidden=(256, 256), seed: int = 0, encoders: dict | None = None,
             env: dict | None = None, agent: dict | None = None) -> Path:
    """`env`/`agent`: more settings of those sections (QT-Opt has no actor: `hidden` is its Q network's)."""
    if algo == "qtopt":
        agent_cfg = {"obs_norm": obs_norm, "q_hidden": list(hidden)}
    else:
        agent_cfg = {"obs_norm": obs_norm, "actor_hidden": list(hidden), "critic_hidden": [32, 32],
                     "encoders": encoders or {}}
    config = config_from_dict({"algo": algo, "seed": seed,
                               "env": {"id": env_id, "obs_format": obs_format, **(env or {})},
                               "agent": {**agent_cfg, **(agent or {})}})
    env = builders.make_env(config.env, seed)
    agent = make_agent(config, env.spec)
    if obs_norm:  # statistics far from (0, 1), so a missing or wrong normalization shows
        rng = np.random.default_rng(seed)
        # (a normalizer of image + state observations takes the whole vector, normalizes the state)
        dim = getattr(agent.normalizer, "width", agent.normalizer.mean.numel())
        agent.normalizer.update(torch.as_tensor(rng.normal(2.0, 5.0, size=(500, dim))))
    env.close()
    pixels = "-pixels" if config.env.pixels else ""
    run_dir = root / f"{algo}-{obs_format}{pixels}-{'norm' if obs_norm else 'raw'}{'-split' if encoders else ''}"
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    write_policy(agent, run_dir, 0)
    return run_dir


@pytest.fixture(scope="session")
def td3_export(tmp_path_factory):
    """(run_dir, policy.onnx, export summary) for a TD3 cartpole policy with normalization."""
    from rlcontrol.deploy.export import export_run

    root = tmp_path_factory.mktemp("deploy")
    run_dir = make_run(root)
    out = root / "policy.onnx"
    summary = export_run(run_dir, out, parity_samples=200)
    return run_dir, out, summary


@pytest.fixture
def make_run_dir(tmp_path):
    """make_run bound to this test's tmp_path: make_run_dir(algo, env_id, obs_format, obs_norm, ...)."""
    return lambda *args, **kwargs: make_run(tmp_path, *args, **kwargs)
