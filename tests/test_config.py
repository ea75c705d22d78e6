"""Every config error of the foundation issue: one clear line, exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlcontrol.config import TD3Config, load_config
from rlcontrol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_every_shipped_config_validates():
    """Run configs (<algo>_<task>.yaml) by the run-config loader, sysid_*.yaml by sysid's own."""
    from sim2real.sysid import load_config as load_sysid_config

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        if path.stem.startswith("sysid_"):
            sysid = load_sysid_config(path)
            assert sysid.params and sysid.env["id"]
            continue
        cfg = load_config(path)
        assert cfg.algo in path.stem


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "algo: td3\nagent:\n  actor_lr: 3e-4\n"),
                      ["agent.tau=0.01", "train.total_env_steps=123", "agent.actor_hidden=[64, 32]"])
    assert isinstance(cfg.agent, TD3Config)
    assert cfg.agent.actor_lr == pytest.approx(3e-4)  # PyYAML reads 3e-4 as a string; coerced
    assert cfg.agent.tau == 0.01 and cfg.train.total_env_steps == 123 and cfg.agent.actor_hidden == [64, 32]
    assert cfg.agent.policy_delay == 2 and cfg.agent.n_critics == 2


@pytest.mark.parametrize("text, overrides, expected", [
    ("algo: td3\nagent:\n\tgamma: 0.9\n", [], "YAML syntax error at line 3"),
    ("algo: td3\nagent:\n  actr_lr: 0.1\n", [], "unknown key 'agent.actr_lr' (line 3); did you mean 'agent.actor_lr'?"),
    ("algo: td3\ntrain:\n  tau: 0.1\n", [], "did you mean 'agent.tau'?"),
    ("algo: td3\nagent:\n  batch_size: many\n", [], "agent.batch_size must be an integer, got 'many'"),
    ("algo: td3\nagent:\n  gamma: 1.5\n", [], "agent.gamma must be <= 1.0, got 1.5"),
    ("algo: td3\nagent:\n  actor_lr: 0\n", [], "agent.actor_lr must be > 0.0"),
    ("algo: td3\nagent:\n  huber: 1\n", [], "agent.huber must be true or false"),
    ("algo: td4\n", [], "unknown algo 'td4' (did you mean 'td3'?)"),
    ("algo: td3\nagent:\n  exploration: gauss\n", [], "agent.exploration must be one of gaussian, ou"),
    ("algo: ddpg\nagent:\n  n_critics: 0\n", [], "agent.n_critics must be >= 1"),
    # The critic options of issue 16: nonsensical combinations are one line at load.
    ("algo: sac\nagent:\n  n_critics: 4\n  target_critics: 5\n", [], "agent.target_critics (5) must be <= agent.n_critics (4)"),
    ("algo: td3\nagent:\n  critic_dropout: 1.0\n", [], "agent.critic_dropout must be in [0, 1), got 1.0"),
    ("algo: sac\nagent:\n  critic_dropout: -0.1\n", [], "agent.critic_dropout must be >= 0.0"),
    ("algo: sac\nagent:\n  exploration: ou\n", [], "agent.exploration: ou does not apply to SAC"),
    ("algo: sac\nagent:\n  actor_q: median\n", [], "agent.actor_q must be one of first, min, mean"),
    ("algo: sac\nagent:\n  critic_residual_blocks: 2\n", [], "give critic_hidden one width"),
    ("algo: sac\nagent:\n  log_std_min: 2\n  log_std_max: -5\n", [], "agent.log_std_min (2.0) must be < agent.log_std_max"),
    ("algo: sac\nagent:\n  init_alpha: 0\n", [], "agent.init_alpha must be > 0.0"),
    ("algo: sac\ntrain:\n  device: cuda\n  cuda_graphs: true\n", [], "train.cuda_graphs supports DDPG, TD3 and D4PG"),
    ("algo: sac\nenv:\n  obs_format: dict\nagent:\n  critic_hidden: [64]\n  critic_residual_blocks: 1\n"
     "  encoders:\n    position: {type: mlp}\n", [], "cannot be combined with agent.encoders"),
    ("algo: td3\n", ["agent.actor_lr"], "bad --set 'agent.actor_lr': expected KEY=VALUE"),
    ("algo: td3\n", ["=3"], "bad --set '=3'"),
    ("algo: td3\n", ["agent.nope=3"], "unknown key 'agent.nope'"),
    ("- a\n- b\n", [], "expected a mapping of sections"),
    ("algo: td3\nagent: 5\n", [], "'agent' must be a mapping"),
])
def test_config_errors(tmp_path, text, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlcontrol.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, expected", [
    (["train", "/nonexistent.yaml"], "config file not found"),
    (["train", "{cfg}", "--set", "agent.actr_lr=1"], "did you mean 'agent.actor_lr'?"),
    (["train", "{cfg}", "--set", "novalue"], "bad --set 'novalue'"),
    (["train", "{cfg}", "--steps", "-5"], "expected a number >= 1"),
    (["train", "{cfg}", "--set", "env.id=dmc:cheeta-run"], "cheetah-run"),
    (["train", "{cfg}", "--set", "env.id=nosuch"], "nosuch"),
    (["train", "{cfg}", "--set", "env.id=gym:CartPole-v1"], "Discrete action space"),
    (["train", "{cfg}", "--set", "train.cuda_graphs=true"], "train.cuda_graphs needs train.device: cuda"),
    (["eval", "/nonexistent_run"], "run folder not found"),
    (["finetune", "/nonexistent_run", "--exploration-std", "-1"], "--exploration-std: expected a number >= 0"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, expected):
    cfg = write(tmp_path, "algo: td3\nenv:\n  id: gym:Pendulum-v1\ntrain:\n  total_env_steps: 10\n  video_frames: 0\n")
    args = [a.replace("{cfg}", str(cfg)) for a in args]
    if args[0] == "train":
        args += ["--run-dir", str(tmp_path / "run")]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcontrol: error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a machine without a CUDA GPU gives")
def test_cuda_device_without_a_gpu_is_one_line_exit_2(tmp_path):
    cfg = write(tmp_path, "algo: td3\nenv:\n  id: gym:Pendulum-v1\ntrain:\n  total_env_steps: 10\n  video_frames: 0\n")
    proc = run_cli("train", str(cfg), "--set", "train.device=cuda", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.device is cuda but this torch build sees no CUDA GPU" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written
