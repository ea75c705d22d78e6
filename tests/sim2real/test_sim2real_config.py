"""env.randomization in run configs: validated in one line, applied to training envs only, logged per episode."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from rlcontrol.config import load_config, save_config
from rlcontrol.distributed.worker import ActorWorker
from rlcontrol.errors import ConfigError, UserError
from rlcontrol.training import builders
from rlcontrol.training.logger import read_jsonl
from rlcontrol.training.loop import Trainer
from sim2real.randomization import RandomizedEnv

ROOT = Path(__file__).resolve().parents[2]
DR_CONFIG = ROOT / "configs" / "td3_cartpole_swingup_dr.yaml"


def write(tmp_path, randomization: str, env_id: str = "dmc:cartpole-swingup"):
    path = tmp_path / "c.yaml"
    path.write_text(f"algo: td3\nenv:\n  id: {env_id}\n  randomization:\n" + randomization)
    return path


@pytest.mark.parametrize("randomization, expected", [
    ("    physics:\n      mas: [0.8, 1.2]\n",
     "unknown key 'env.randomization.physics.mas' (line 6); did you mean 'env.randomization.physics.mass'?"),
    ("    phyiscs: {}\n", "unknown key 'env.randomization.phyiscs' (line 5); did you mean 'env.randomization.physics'?"),
    ("    physics:\n      mass: [1.2, 0.8]\n", "env.randomization.physics.mass (line 6): low must be <= high, got [1.2, 0.8]"),
    ("    physics:\n      friction: [-0.5, 1]\n", "env.randomization.physics.friction (line 6): must be >= 0.0"),
    ("    obs_noise_std: -0.01\n", "env.randomization.obs_noise_std (line 5): must be >= 0, got -0.01"),
    ("    obs_bias_std: {position: -1}\n", "env.randomization.obs_bias_std.position (line 5): must be >= 0"),
    ("    action_noise_std: lots\n", "env.randomization.action_noise_std (line 5): must be a number, got 'lots'"),
    ("    latency_steps: [3, 1]\n", "env.randomization.latency_steps (line 5): min must be <= max, got [3, 1]"),
    ("    jitter: 2\n", "env.randomization.jitter (line 5): must be in [0, 1.0], got 2.0"),
    ("    visual: {brigthness: 0.1}\n", "did you mean 'env.randomization.visual.brightness'?"),
])
def test_config_errors_are_one_line(tmp_path, randomization, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, randomization))
    assert expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_cli_reports_a_bad_key_in_one_line_with_exit_2(tmp_path):
    path = write(tmp_path, "    physics:\n      mass: [0.8, 1.2]\n")
    out = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "train", str(path), "--set",
                          "env.randomization.physics.gravty=[0.9,1.1]"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'env.randomization.physics.gravity'?" in lines[0], out.stderr


def test_shipped_dr_config_round_trips(tmp_path):
    config = load_config(DR_CONFIG)
    dr = config.env.randomization
    assert dr.physics["damping"].log_uniform and dr.latency_steps == [0, 1] and not config.env.randomize_eval
    save_config(config, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again.to_dict() == config.to_dict() and again.digest() == config.digest()
    plain = load_config(ROOT / "configs" / "td3_cartpole_swingup.yaml")
    assert plain.env.randomization is None
    # the DR config is the nominal one plus randomization
    assert dataclasses.replace(config.env, randomization=None) == plain.env
    assert (config.agent, config.replay, config.train) == (plain.agent, plain.replay, plain.train)


def test_training_envs_are_randomized_and_evaluation_envs_are_not():
    env_cfg = load_config(DR_CONFIG).env
    assert isinstance(builders.make_env(env_cfg, 0), RandomizedEnv)
    assert not isinstance(builders.make_env(env_cfg, 1, evaluation=True), RandomizedEnv)
    both = dataclasses.replace(env_cfg, randomize_eval=True)
    assert isinstance(builders.make_env(both, 1, evaluation=True), RandomizedEnv)


def test_parameters_the_task_lacks_are_one_user_error():
    env_cfg = dataclasses.replace(load_config(DR_CONFIG).env, id="rlc:lane-following", action_repeat=1)
    with pytest.raises(UserError, match="env.randomization: rlc:lane-following has no physical parameter 'mass'; "
                                        "it supports steering_gain, speed_time_constant"):
        builders.make_env(env_cfg, 0)


def tiny_run_overrides(steps: int) -> list[str]:
    # 10 agent steps x action repeat 8 per episode; no learning (learning_starts > steps), no video.
    return ["env.max_episode_steps=10", f"train.total_env_steps={steps}", "train.learning_starts=100000",
            "train.eval_every=0", "train.eval_episodes=1", "train.video_frames=0", "train.checkpoint_every=100000",
            "agent.actor_hidden=[8]", "agent.critic_hidden=[8]"]


def test_training_logs_each_episodes_draws(tmp_path):
    config = load_config(DR_CONFIG, tiny_run_overrides(240))
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer.run()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "charts/episodic_return" in r]
    assert len(rows) == 3
    names = {f"randomization/{k}" for k in ("mass", "damping", "actuator_gain", "gravity", "latency_steps")}
    for row in rows:
        assert names <= row.keys()
        assert 0.8 <= row["randomization/mass"] <= 1.25 and row["randomization/latency_steps"] in (0.0, 1.0)
    assert len({row["randomization/mass"] for row in rows}) == 3
    # episode i of the run is drawn from its episode seed: a second run logs the same worlds
    again = Trainer(config, tmp_path / "again", progress=False)
    again.run()
    rows_again = [r for r in read_jsonl(tmp_path / "again" / "metrics.jsonl") if "charts/episodic_return" in r]
    assert [r["randomization/mass"] for r in rows_again] == [r["randomization/mass"] for r in rows]


def test_actor_workers_report_their_episodes_draws():
    config = load_config(DR_CONFIG, tiny_run_overrides(240))
    worker = ActorWorker(config, 0)
    chunk = worker.collect(25, learning_started=False)
    assert len(chunk["episode_returns"]) == 2 == len(chunk["episode_randomization"])
    assert {"mass", "latency_steps"} <= chunk["episode_randomization"][0].keys()
    assert chunk["episode_randomization"][0] != chunk["episode_randomization"][1]
