"""Offline data then online: the mixed sampler, loading offline files, and the loop's use of them."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rlcontrol.cli import main
from rlcontrol.replay import PrioritizedReplayBuffer, ReplayBuffer
from rlcontrol.replay.mixed import MixedSampler, check_compatible, load_replay_file
from rlcontrol.replay.obs_layout import ObsLayout


@dataclass
class ArraySpec:
    shape: tuple
    dtype: np.dtype = np.dtype(np.float32)


DICT_SPEC = {"position": ArraySpec((2,)), "velocity": ArraySpec((3,))}


def fill(buffer, count, reward, obs_dim=5, action_dim=2, dict_parts=None, seed=0):
    """`count` transitions whose reward marks the buffer they came from."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal((count, obs_dim)).astype(np.float32)
    obs = flat if dict_parts is None else {"position": flat[:, :2], "velocity": flat[:, 2:]}
    buffer.add_batch({"obs": obs, "action": rng.uniform(-1, 1, (count, action_dim)).astype(np.float32),
                      "reward": np.full(count, reward, np.float32), "discount": np.full(count, 0.9, np.float32),
                      "next_obs": obs})
    return flat


@pytest.mark.parametrize("ratio, batch, offline_rows", [(0.5, 64, 32), (0.25, 10, 2), (0.3, 10, 3), (0.0, 8, 0),
                                                         (1.0, 8, 8)])
def test_a_batch_has_the_stated_offline_share_online_rows_first(ratio, batch, offline_rows):
    online, offline = ReplayBuffer(100, (5,), 2, seed=1), ReplayBuffer(100, (5,), 2, seed=2)
    fill(online, 50, reward=0.0)
    fill(offline, 80, reward=1.0)
    sampler = MixedSampler(online, offline, ratio)
    assert sampler.counts(batch) == (batch - offline_rows, offline_rows)
    for _ in range(5):
        b = sampler.sample(batch)
        assert b.reward.shape == (batch,) and b.obs.shape == (batch, 5) and b.action.shape == (batch, 2)
        expected = torch.cat([torch.zeros(batch - offline_rows), torch.ones(offline_rows)])
        assert torch.equal(b.reward, expected)


def test_flat_offline_file_serves_a_dict_observation_run(tmp_path):
    """bag-to-replay writes flat vectors; a run with dict observations splits them in spec order."""
    online = ReplayBuffer(100, DICT_SPEC, 2)
    fill(online, 20, reward=0.0, dict_parts=True)
    offline = ReplayBuffer(100, (5,), 2, seed=4)
    flat = fill(offline, 30, reward=1.0, seed=5)
    path = tmp_path / "offline.safetensors"
    offline.save(path)
    sampler = MixedSampler(online, load_replay_file(path), 0.5)
    b = sampler.sample(8)
    assert b.obs.keys() == {"position", "velocity"}
    rows = b.indices[4:].numpy()  # offline rows: indices into the offline buffer
    np.testing.assert_array_equal(b.obs["position"][4:].numpy(), flat[rows, :2])
    np.testing.assert_array_equal(b.next_obs["velocity"][4:].numpy(), flat[rows, 2:])


def test_offline_observations_stored_in_another_float_dtype_come_back_in_the_runs():
    online, offline = ReplayBuffer(100, (5,), 2), ReplayBuffer(100, (5,), 2, obs_dtype=torch.float64)
    fill(online, 20, 0.0)
    fill(offline, 20, 1.0)
    b = MixedSampler(online, offline, 0.5).sample(8)
    assert b.obs.dtype == b.next_obs.dtype == torch.float32


def test_incompatible_offline_data_is_refused():
    layout = ObsLayout.from_spec((5,))
    offline = ReplayBuffer(10, (4,), 2)
    fill(offline, 3, 1.0, obs_dim=4)
    with pytest.raises(ValueError, match=r"observations \{'obs': \[4\]\} do not match the task's \{'obs': \[5\]\}"):
        check_compatible(offline, layout, 2)
    with pytest.raises(ValueError, match="3-D actions, the task has 2"):
        check_compatible(ReplayBuffer(10, (5,), 3), layout, 2)
    with pytest.raises(ValueError, match="no transitions"):
        check_compatible(ReplayBuffer(10, (5,), 2), layout, 2)


def test_priorities_go_back_to_the_buffer_each_row_came_from():
    online = PrioritizedReplayBuffer(100, (5,), 2, seed=1)
    offline = PrioritizedReplayBuffer(100, (5,), 2, seed=2)
    fill(online, 40, 0.0)
    fill(offline, 40, 1.0)
    sampler = MixedSampler(online, offline, 0.5)
    b = sampler.sample(8)
    sampler.update_priorities(b.indices, torch.cat([torch.full((4,), 2.0), torch.full((4,), 5.0)]))
    expected_online = (2.0 + online.eps) ** online.alpha
    expected_offline = (5.0 + offline.eps) ** offline.alpha
    np.testing.assert_allclose(online.sum_tree.get(b.indices[:4].numpy()), expected_online)
    np.testing.assert_allclose(offline.sum_tree.get(b.indices[4:].numpy()), expected_offline)


def test_offline_rng_state_round_trips():
    online, offline = ReplayBuffer(100, (5,), 2), ReplayBuffer(100, (5,), 2)
    fill(online, 50, 0.0)
    fill(offline, 50, 1.0)
    sampler = MixedSampler(online, offline, 1.0)
    state = json.loads(json.dumps(sampler.rng_state()))  # it travels in the checkpoint's JSON
    first = sampler.sample(16).indices
    sampler.set_rng_state(state)
    assert torch.equal(sampler.sample(16).indices, first)


def test_load_replay_file_picks_the_saved_class_and_refuses_bad_files(tmp_path):
    prioritized = PrioritizedReplayBuffer(10, (5,), 2)
    fill(prioritized, 5, 1.0)
    prioritized.save(tmp_path / "p.safetensors")
    assert isinstance(load_replay_file(tmp_path / "p.safetensors"), PrioritizedReplayBuffer)
    with pytest.raises(FileNotFoundError):
        load_replay_file(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not an rlcontrol replay file"):
        load_replay_file(tmp_path / "junk.safetensors")
    truncated = (tmp_path / "p.safetensors").read_bytes()[:-40]
    (tmp_path / "t.safetensors").write_bytes(truncated)
    with pytest.raises(ValueError):
        load_replay_file(tmp_path / "t.safetensors")


# ----------------------------------------------------------------------------- through the loop

PENDULUM = """\
algo: {algo}
seed: 0
env:
  id: gym:Pendulum-v1
agent:
  batch_size: 32
  {hidden}
replay:
  capacity: 2000
train:
  total_env_steps: 400
  learning_starts: 200
  eval_every: 0
  eval_episodes: 1
  checkpoint_every: 400
  threads: 1
  video_frames: 0
"""


def pendulum_config(tmp_path, algo="td3"):
    hidden = "q_hidden: [16]" if algo == "qtopt" else "actor_hidden: [16]\n  critic_hidden: [16]"
    path = tmp_path / f"{algo}.yaml"
    path.write_text(PENDULUM.format(algo=algo, hidden=hidden))
    return path


def pendulum_offline_file(tmp_path, actions_scale=1.0):
    """200 Pendulum-shaped transitions (3-D observations, 1-D normalized actions)."""
    buffer = ReplayBuffer(200, (3,), 1, seed=9)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 3)).astype(np.float32)
    buffer.add_batch({"obs": obs, "action": (rng.uniform(-1, 1, (200, 1)) * actions_scale).astype(np.float32),
                      "reward": rng.uniform(-10, 0, 200).astype(np.float32),
                      "discount": np.full(200, 0.99, np.float32), "next_obs": obs})
    path = tmp_path / "offline.safetensors"
    buffer.save(path)
    return path


@pytest.mark.parametrize("algo", ["td3", "qtopt"])
def test_offline_pretraining_then_mixed_batches_in_the_loop(tmp_path, capsys, algo):
    offline = pendulum_offline_file(tmp_path)
    run = tmp_path / "run"
    args = ["train", str(pendulum_config(tmp_path, algo)), "--run-dir", str(run), "--no-progress", "--json",
            "--set", f"replay.offline_replay={offline}", "--set", "replay.offline_ratio=0.25",
            "--set", "replay.offline_pretrain_updates=50", "--set", "agent.obs_norm=true"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_steps"] == 400
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    pretrain = [r for r in rows if "offline_pretrain/updates" in r]
    assert len(pretrain) == 1 and pretrain[0]["offline_pretrain/updates"] == 50 and pretrain[0]["env_steps"] == 0
    state = json.loads(next((run / "checkpoints").glob("ckpt-*/state.json")).read_text())
    assert state["loop"]["offline_pretrain_updates"] == 50 and len(state["offline_rng"]) > 0


@pytest.mark.parametrize("make_file, expected", [
    (lambda tmp: tmp / "missing.safetensors", "replay.offline_replay: file not found: "),
    (lambda tmp: (tmp / "junk.safetensors").write_bytes(b"garbage" * 10) and tmp / "junk.safetensors",
     "not an rlcontrol replay file (truncated or corrupted?)"),
    (lambda tmp: pendulum_offline_file(tmp, actions_scale=2.0), "outside [-1, 1]: they look physical"),
])
def test_a_bad_offline_file_is_one_error_line_before_anything_is_written(tmp_path, capsys, make_file, expected):
    path = make_file(tmp_path)
    run = tmp_path / "run"
    args = ["train", str(pendulum_config(tmp_path)), "--run-dir", str(run), "--no-progress",
            "--set", f"replay.offline_replay={path}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err
    assert not run.exists()


def test_a_missing_offline_file_says_how_to_make_it(tmp_path, capsys):
    """configs/qtopt_grasp.yaml names a file another script makes: the error gives that command."""
    run = tmp_path / "run"
    missing = tmp_path / "grasp_offline.safetensors"
    assert main(["train", "configs/qtopt_grasp.yaml", "--run-dir", str(run), "--no-progress",
                 "--set", f"replay.offline_replay={missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"file not found: {missing}" in err
    assert "make it first: .venv/bin/python scripts/grasp_offline_replay.py configs/qtopt_grasp.yaml" in err
    assert not run.exists()


def test_pretraining_without_an_offline_file_is_a_config_error():
    from rlcontrol.config import config_from_dict
    from rlcontrol.errors import ConfigError

    with pytest.raises(ConfigError, match="replay.offline_pretrain_updates needs replay.offline_replay"):
        config_from_dict({"algo": "td3", "replay": {"offline_pretrain_updates": 10}})
    with pytest.raises(ConfigError, match="replay.offline_ratio must be <= 1.0"):
        config_from_dict({"algo": "td3", "replay": {"offline_replay": "x.safetensors", "offline_ratio": 1.5}})
