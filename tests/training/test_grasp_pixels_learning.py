"""QT-Opt learns to grasp from pixels within the CI budget, as a user runs it (configs/
qtopt_grasp_pixels_pretrained.yaml, scaled down): offline attempts whose frames first train the
frozen image encoder (scripts/grasp_offline_replay.py --pretrain-encoder) and are then stored as
latents, `rlcontrol train`, and the learned policy, which sees only the 64x64 camera image and the
gripper's own state, against QT-Opt's randomized scripted policy (`RandomDescent`) on the same
held-out attempts (object set "test": shapes and sizes never seen in training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_grasp_learning import ATTEMPTS, held_out_success  # (same folder: pytest puts it on sys.path)

from envs.grasp import RandomDescent
from rlcontrol.training import builders
from rlcontrol.training.evaluate_run import load_policy_agent

ROOT = Path(__file__).resolve().parents[2]
# Success-rate points above RandomDescent on the same 100 attempts (see the test's print and
# docs/benchmarks.md, "QT-Opt grasping", for the measured values).
MARGIN = 0.10

CONFIG = """
algo: qtopt
seed: 0
env:
  id: rlc:grasp
  pixels: true
  pixel_size: 64
  kwargs: {{include_state: true, observe_objects: false, object_set: train, max_steps: 20}}
agent:
  frozen_encoder: {encoder}
  q_hidden: [64, 64]
  lr: 3.0e-4
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
  total_env_steps: 1000
  learning_starts: 0
  eval_every: 0
  eval_episodes: 1
  checkpoint_every: 100000
  threads: 1
  video_frames: 0
"""


@pytest.mark.slow
def test_pixel_qtopt_grasps_held_out_objects_better_than_randomized_scripted_grasps(tmp_path):
    env_vars = {**os.environ, "MUJOCO_GL": "egl", "PYTHONHASHSEED": "0"}
    offline, encoder = tmp_path / "offline.safetensors", tmp_path / "encoder.safetensors"
    cfg = tmp_path / "qtopt_grasp_pixels_ci.yaml"
    cfg.write_text(CONFIG.format(offline=offline, encoder=encoder))
    made = subprocess.run([sys.executable, str(ROOT / "scripts/grasp_offline_replay.py"), str(cfg), "--attempts", "300",
                           "--scripted-fraction", "0.5", "--noise", "0.05", "--noise-max", "0.3", "--pretrain-encoder",
                           "--encoder-epochs", "3", "--encoder-channels", "16", "32", "64", "128",
                           "--out", str(offline)], capture_output=True, text=True, env=env_vars, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    data = json.loads(made.stdout.strip().splitlines()[-1])
    assert data["transitions"] == 300 * 20 and data["latent_part"].startswith("latent_")
    run_dir = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "train", str(cfg), "--run-dir", str(run_dir),
                              "--no-progress", "--json"], capture_output=True, text=True, env=env_vars, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]

    config, train_env, agent = load_policy_agent(run_dir)
    train_env.close()
    env = builders.make_env(replace(config.env, kwargs={**config.env.kwargs, "object_set": "test"}), 0)
    descent = RandomDescent(np.random.default_rng(0))
    learned = held_out_success(env, lambda _env, obs: agent.act(obs, explore=False))
    scripted = held_out_success(env, lambda e, _obs: descent(e))
    env.close()
    print(f"held-out grasp success over {ATTEMPTS} attempts from pixels: QT-Opt {learned:.2f}, "
          f"RandomDescent {scripted:.2f}; encoder {data['encoder']}")
    assert learned >= scripted + MARGIN, (learned, scripted, data["success_rate"])
