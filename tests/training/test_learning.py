"""Honest learning tests: fixed seeds, real environments, asserted returns.

Pendulum-v1 returns lie in about [-1600, 0]; a uniformly random policy scores about -1200
and a policy that swings up and balances about -150. The thresholds below are well above
anything a non-learning agent reaches and were met with margin at the fixed seed.
"""

import json

import pytest

from rlcontrol.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("algo, config, overrides, threshold", [
    ("td3", "configs/td3_pendulum.yaml", [], -400.0),
    # SAC: tanh-Gaussian actor, learned temperature, twin critics (reached -41 at this seed).
    ("sac", "configs/sac_pendulum.yaml", [], -400.0),
    # DDPG with Ornstein-Uhlenbeck exploration and one critic, same budget.
    ("ddpg", "configs/td3_pendulum.yaml", ["algo=ddpg", "agent.exploration=ou", "agent.exploration_sigma=0.3"], -500.0),
    # D4PG: categorical critic, 3-step returns, prioritized replay (reached -40 at this seed).
    ("d4pg", "configs/d4pg_pendulum.yaml", [], -400.0),
    # QT-Opt: no actor, CEM argmax of Q, clipped double Q (reached -93 at this seed, -130 by 4000 steps).
    ("qtopt", "configs/qtopt_pendulum.yaml", [], -400.0),
])
def test_agent_learns_pendulum(tmp_path, capsys, algo, config, overrides, threshold):
    args = ["train", config, "--run-dir", str(tmp_path / algo), "--no-progress", "--json", "--seed", "0"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_steps"] == 8000
    assert summary["eval_return"] >= threshold, summary
    # The eval command reproduces the learned policy's quality from policy.pt alone.
    assert main(["eval", str(tmp_path / algo), "--episodes", "3", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["episodes"] == 3 and evaluated["mean_return"] >= threshold - 100


@pytest.mark.slow
def test_high_update_to_data_sac_learns_pendulum_from_far_less_data(tmp_path, capsys):
    """DroQ-style SAC (LayerNorm + dropout critics, mean-Q actor) at 4 updates per env step solves
    Pendulum from 3,000 env steps, where the tests above use 8,000 at one update per step.
    (At this seed in trial runs: -123 after 2,000 and -132 after 3,000 env steps; random is about -1200.)"""
    args = ["train", "configs/sac_pendulum.yaml", "--run-dir", str(tmp_path / "droq"), "--no-progress", "--json",
            "--seed", "0", "--set", "train.total_env_steps=3000", "--set", "train.learning_starts=500",
            "--set", "train.updates_per_step=4", "--set", "train.eval_every=0", "--set", "agent.critic_layer_norm=true",
            "--set", "agent.critic_dropout=0.01", "--set", "agent.actor_q=mean"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_steps"] == 3000
    assert summary["updates_per_s"] > 0
    assert summary["eval_return"] >= -400.0, summary
