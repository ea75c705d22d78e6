"""kill -9 mid-training, --resume, and get exactly the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlcontrol.training.checkpoint import CheckpointManager

CONFIG = """\
algo: td3
seed: 3
env:
  id: gym:Pendulum-v1
agent:
  actor_hidden: [32, 32]
  critic_hidden: [32, 32]
  batch_size: 64
replay:
  capacity: 5000
  n_step: 3
  prioritized: true
train:
  total_env_steps: 2400
  learning_starts: 400
  eval_every: 800
  eval_episodes: 1
  checkpoint_every: 400
  log_every: 200
  threads: 1
  video_frames: 0
"""


# QT-Opt (its own agent: generator for the target CEM noise, Q networks) with offline data mixed
# into every batch after offline pretraining: the offline sampling RNG is part of the checkpoint.
QTOPT_CONFIG = CONFIG.replace("algo: td3", "algo: qtopt").replace(
    "  actor_hidden: [32, 32]\n  critic_hidden: [32, 32]\n",
    "  q_hidden: [32, 32]\n  cem_samples: 16\n  cem_elites: 3\n  epsilon: 0.2\n  exploration_sigma: 0.1\n"
    "  obs_norm: true\n").replace(
    "  prioritized: true\n",
    "  prioritized: true\n  offline_replay: {offline}\n  offline_ratio: 0.25\n  offline_pretrain_updates: 100\n")


def write_offline_replay(path: Path) -> Path:
    """300 Pendulum-shaped transitions (3-D observations, 1-D normalized actions)."""
    import numpy as np

    from rlcontrol.replay import ReplayBuffer

    rng = np.random.default_rng(0)
    obs = rng.standard_normal((300, 3)).astype(np.float32)
    buffer = ReplayBuffer(300, (3,), 1)
    buffer.add_batch({"obs": obs, "action": rng.uniform(-1, 1, (300, 1)).astype(np.float32),
                      "reward": rng.uniform(-10, 0, 300).astype(np.float32),
                      "discount": np.full(300, 0.97, np.float32), "next_obs": obs[::-1].copy()})
    buffer.save(path)
    return path


# SAC with the DroQ/REDQ critic options (dropout masks, the REDQ subset and both policy samples come
# from the agent's generator; log alpha and its optimizer are in the checkpoint) at two updates per step.
SAC_CONFIG = CONFIG.replace("algo: td3", "algo: sac").replace(
    "  batch_size: 64\n",
    "  batch_size: 64\n  n_critics: 3\n  target_critics: 2\n  actor_q: mean\n  critic_dropout: 0.1\n"
    "  critic_layer_norm: true\n  obs_norm: true\n").replace("  learning_starts: 400\n",
                                                          "  learning_starts: 400\n  updates_per_step: 2\n")


def train_cmd(cfg, run_dir, *extra):
    return [sys.executable, "-m", "rlcontrol.cli", "train", str(cfg), "--run-dir", str(run_dir), "--no-progress", *extra]


def comparable(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Wall-clock throughput and time differ between runs by nature; everything else must match exactly.
    return [{k: v for k, v in r.items() if k not in ("charts/SPS", "eval/train_seconds")} for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "sac", "qtopt"])
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, algo):
    cfg = tmp_path / f"{algo}_pendulum_small.yaml"
    if algo == "td3":
        cfg.write_text(CONFIG)
    elif algo == "sac":
        cfg.write_text(SAC_CONFIG)
    else:
        cfg.write_text(QTOPT_CONFIG.format(offline=write_offline_replay(tmp_path / "offline.safetensors")))
    env = dict(os.environ, PYTHONHASHSEED="0")
    full = tmp_path / "full"
    subprocess.run(train_cmd(cfg, full), check=True, env=env, capture_output=True, timeout=300)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(cfg, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = CheckpointManager(cut / "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline:
        latest = ckpts.latest()
        if latest is not None and latest.name >= "ckpt-0000001200":
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = ckpts.latest()
    assert killed_at is not None and not (cut / "summary.json").exists()

    # A torn checkpoint write (as left by kill -9 in the middle of one) must be ignored.
    torn = cut / "checkpoints" / ".ckpt-0000009999.tmp"
    torn.mkdir(exist_ok=True)
    (torn / "agent.pt").write_bytes(b"\x00garbage")

    done = subprocess.run(train_cmd(cfg, cut, "--resume", "--json"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == 2400
    assert not torn.exists()

    assert comparable(cut) == comparable(full)
    assert (cut / "eval.csv").read_text() == (full / "eval.csv").read_text()


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.replace("total_env_steps: 2400", "total_env_steps: 450").replace("learning_starts: 400", "learning_starts: 300"))
    run = tmp_path / "run"
    subprocess.run(train_cmd(cfg, run), check=True, capture_output=True, timeout=300)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    again = subprocess.run(train_cmd(cfg, run), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    changed = subprocess.run(train_cmd(cfg, run, "--resume", "--set", "agent.tau=0.5"), capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "agent.tau was 0.005, now 0.5" in changed.stderr


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    import torch

    class ExplodingReplay:
        def save(self, path):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    class GoodReplay:
        def save(self, path):
            Path(path).write_bytes(b"ok")

    mgr = CheckpointManager(tmp_path / "ck")
    mgr.save(100, {"w": torch.ones(2)}, GoodReplay(), {"loop": {}})
    with pytest.raises(OSError):
        mgr.save(200, {"w": torch.zeros(2)}, ExplodingReplay(), {"loop": {}})
    latest = mgr.latest()
    assert latest.name == "ckpt-0000000100"
    agent_state, _, _ = mgr.load(latest)
    assert torch.equal(agent_state["w"], torch.ones(2))


def test_resume_from_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.replace("total_env_steps: 2400", "total_env_steps: 450").replace("learning_starts: 400", "learning_starts: 300"))
    run = tmp_path / "run"
    subprocess.run(train_cmd(cfg, run), check=True, capture_output=True, timeout=300)
    latest = CheckpointManager(run / "checkpoints").latest()
    replay_file = latest / "replay.safetensors"
    data = bytearray(replay_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the stored tensors
    replay_file.write_bytes(bytes(data))
    before = {p.name: p.stat().st_size for p in latest.iterdir()}
    again = subprocess.run(train_cmd(cfg, run, "--resume", "--steps", "900"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcontrol: error: damaged checkpoint"), again.stderr
    assert {p.name: p.stat().st_size for p in latest.iterdir()} == before  # nothing rewritten or removed
