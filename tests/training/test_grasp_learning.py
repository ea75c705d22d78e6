"""QT-Opt learns to grasp (state variant of rlc:grasp) within the CI budget, as a user runs it:
offline attempts of QT-Opt's randomized scripted policy (scripts/grasp_offline_replay.py), then
`rlcontrol train` (offline pretraining, then online with offline data mixed in), then the learned
CEM policy against uniform random actions on the same held-out attempts (object set "test":
shapes and sizes never seen in training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from envs.grasp import random_policy
from rlcontrol.training import builders
from rlcontrol.training.evaluate_run import load_policy_agent

ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 100
# Success-rate points above uniform random (0.00 on these attempts). Measured on the 2-core AMD
# machine, 100 attempts: seed 0 0.48; seeds 1-3 (same settings) 0.21, 0.28, 0.35. With lr 1e-3
# instead of 3e-4 the same seeds reached only 0.06-0.14: the Q function swung between
# evaluations (0.0 to 0.4 on training objects), and CI failed at 0.14 on a seed that passed
# on an Intel machine before.
MARGIN = 0.15

CONFIG = """
algo: qtopt
seed: 0
env:
  id: rlc:grasp
  obs_format: dict
  kwargs: {{object_set: train, max_steps: 20}}
agent:
  q_hidden: [64, 64]
  lr: 3.0e-4  # as configs/qtopt_grasp.yaml; 1e-3 made the small Q net unstable (see MARGIN)
  batch_size: 128
  gamma: 0.9
  loss: cross_entropy
  cem_samples: 64
  cem_elites: 6
  cem_iterations: 2
  epsilon: 0.2
  obs_norm: true
replay:
  capacity: 20000
  n_step: 5
  offline_replay: {offline}
  offline_ratio: 0.5
  offline_pretrain_updates: 2000
train:
  total_env_steps: 3000
  learning_starts: 0
  eval_every: 1000
  eval_episodes: 20
  checkpoint_every: 100000
  threads: 1
  video_frames: 0
"""


def held_out_success(env, act) -> float:
    """Success rate of `act(env, obs)` over ATTEMPTS seeded attempts (the same seeds for every policy)."""
    successes = 0
    for i in range(ATTEMPTS):
        obs = env.reset(seed=20_000_000 + i)
        while True:
            result = env.step(act(env, obs))
            obs = result.obs
            if result.terminated or result.truncated:
                successes += int(result.reward > 0)
                break
    return successes / ATTEMPTS


@pytest.mark.slow
def test_qtopt_grasps_held_out_objects_far_better_than_random(tmp_path):
    env_vars = {**os.environ, "MUJOCO_GL": "egl", "PYTHONHASHSEED": "0"}
    offline, cfg = tmp_path / "offline.safetensors", tmp_path / "qtopt_grasp_ci.yaml"
    cfg.write_text(CONFIG.format(offline=offline))
    made = subprocess.run([sys.executable, str(ROOT / "scripts/grasp_offline_replay.py"), str(cfg), "--attempts", "400",
                           "--out", str(offline)], capture_output=True, text=True, env=env_vars, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    data = json.loads(made.stdout.strip().splitlines()[-1])
    assert data["transitions"] == 400 * 20 and data["n_step"] == 5
    run_dir = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "train", str(cfg), "--run-dir", str(run_dir),
                              "--no-progress", "--json"], capture_output=True, text=True, env=env_vars, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]

    config, train_env, agent = load_policy_agent(run_dir)
    train_env.close()
    env = builders.make_env(replace(config.env, kwargs={**config.env.kwargs, "object_set": "test"}), 0)
    uniform = random_policy(np.random.default_rng(0))
    learned = held_out_success(env, lambda _env, obs: agent.act(obs, explore=False))
    random_rate = held_out_success(env, lambda e, _obs: uniform(e))
    env.close()
    print(f"held-out grasp success over {ATTEMPTS} attempts: QT-Opt {learned:.2f}, uniform random {random_rate:.2f}")
    assert learned >= random_rate + MARGIN, (learned, random_rate, data["success_rate"])
