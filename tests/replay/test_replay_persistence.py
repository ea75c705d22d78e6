"""save/load of both buffers: exact round trips, corrupted files, atomic writes, mismatched states."""

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rlcontrol.replay import PrioritizedReplayBuffer, ReplayBuffer


@dataclass
class ArraySpec:
    shape: tuple
    dtype: np.dtype


FLAT_SPEC = (5,)
DICT_SPEC = {
    "pixels": ArraySpec((3, 4, 4), np.dtype(np.uint8)),
    "joints": ArraySpec((6,), np.dtype(np.float64)),
}


def random_obs(spec, rng, count):
    if not isinstance(spec, dict):
        return rng.standard_normal((count, *spec)).astype(np.float32)
    return {
        "pixels": rng.integers(0, 256, size=(count, 3, 4, 4), dtype=np.uint8),
        "joints": rng.standard_normal((count, 6)),
    }


def add_random(buffer, spec, count, rng):
    buffer.add_batch(
        {
            "obs": random_obs(spec, rng, count),
            "action": rng.standard_normal((count, 2)).astype(np.float32),
            "reward": rng.standard_normal(count).astype(np.float32),
            "discount": np.full(count, 0.99, np.float32),
            "next_obs": random_obs(spec, rng, count),
        }
    )


def make(kind, spec, capacity=50, seed=3):
    if kind == "uniform":
        return ReplayBuffer(capacity, spec, 2, seed=seed)
    return PrioritizedReplayBuffer(
        capacity, spec, 2, alpha=0.7, beta0=0.3, beta_steps=40, eps=1e-4, seed=seed
    )


def used_buffer(kind, spec, count):
    """A buffer after adds, samples and priority updates: some state in every part."""
    rng = np.random.default_rng(0)
    buffer = make(kind, spec)
    for chunk in np.array_split(np.arange(count), 3):  # several add_batch calls, wrapping past 50
        add_random(buffer, spec, chunk.size, rng)
    for _ in range(3):
        batch = buffer.sample(8)
        if kind == "prioritized":
            buffer.update_priorities(batch.indices, torch.rand(8) * 3)
    return buffer


def assert_same_batch(a, b):
    for name in ("obs", "next_obs"):
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        else:
            assert torch.equal(x, y)
    for name in ("action", "reward", "discount", "weights", "indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@pytest.mark.parametrize("spec", [FLAT_SPEC, DICT_SPEC], ids=["flat", "dict"])
@pytest.mark.parametrize("count", [0, 20, 73], ids=["empty", "partial", "wrapped"])
def test_round_trip_is_bit_identical_and_continues_identically(tmp_path, kind, spec, count):
    original = used_buffer(kind, spec, count) if count else make(kind, spec)
    path = tmp_path / "replay.safetensors"
    original.save(path)
    loaded = type(original).load(path)
    assert os.listdir(tmp_path) == ["replay.safetensors"]  # no temp file left behind
    tensors, meta = original.state_dict()
    loaded_tensors, loaded_meta = loaded.state_dict()
    assert meta == loaded_meta
    assert tensors.keys() == loaded_tensors.keys()
    for name in tensors:
        assert tensors[name].dtype == loaded_tensors[name].dtype, name
        assert torch.equal(tensors[name], loaded_tensors[name]), name
    if count == 0:
        return
    for _ in range(5):  # the same future: same batches, same priority updates
        a, b = original.sample(16), loaded.sample(16)
        assert_same_batch(a, b)
        if kind == "prioritized":
            td = torch.rand(16)
            original.update_priorities(a.indices, td)
            loaded.update_priorities(b.indices, td)
    if kind == "prioritized":
        assert loaded.beta == original.beta and loaded.sample_calls == original.sample_calls
        np.testing.assert_array_equal(loaded.sum_tree.priorities, original.sum_tree.priorities)
        assert loaded.sum_tree.total == original.sum_tree.total


def test_uint8_parts_stay_uint8_on_disk(tmp_path):
    buffer = used_buffer("uniform", DICT_SPEC, 10)
    buffer.save(tmp_path / "r.safetensors")
    tensors, _ = ReplayBuffer.load(tmp_path / "r.safetensors").state_dict()
    assert tensors["obs/pixels"].dtype == torch.uint8 and tensors["obs/joints"].dtype == torch.float32


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "replay.safetensors"
    used_buffer("prioritized", FLAT_SPEC, 30).save(path)
    return path


def test_truncated_file_raises_value_error(saved):
    data = saved.read_bytes()
    for cut in [len(data) - 1, len(data) // 2, 100, 7, 0]:
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupted"):
            PrioritizedReplayBuffer.load(saved)


def test_garbage_file_raises_value_error(saved):
    saved.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError):
        PrioritizedReplayBuffer.load(saved)


def test_flipped_data_byte_is_caught_by_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data, past the header
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        PrioritizedReplayBuffer.load(saved)


def test_foreign_safetensors_file_raises_value_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="no rlcontrol replay metadata"):
        ReplayBuffer.load(path)


def test_wrong_class_and_missing_file(saved, tmp_path):
    with pytest.raises(ValueError, match="PrioritizedReplayBuffer"):
        ReplayBuffer.load(saved)
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.load(tmp_path / "nope.safetensors")


def test_failed_replace_leaves_the_old_file_intact(saved, monkeypatch):
    before = saved.read_bytes()
    buffer = used_buffer("prioritized", FLAT_SPEC, 45)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        buffer.save(saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]  # the temp file was removed
    monkeypatch.undo()
    buffer.save(saved)  # and a later save works and replaces it
    assert len(PrioritizedReplayBuffer.load(saved)) == 45


def test_failed_write_leaves_the_old_file_intact(saved, monkeypatch):
    before = saved.read_bytes()

    def failing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt  # e.g. the job is killed mid-write

    monkeypatch.setattr("rlcontrol.replay.safetensors_io.save_file", failing_save_file)
    with pytest.raises(KeyboardInterrupt):
        used_buffer("prioritized", FLAT_SPEC, 45).save(saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_state_from_a_differently_configured_buffer_is_rejected_without_changes():
    source = used_buffer("prioritized", FLAT_SPEC, 30)
    tensors, meta = source.state_dict()
    cases = [
        (PrioritizedReplayBuffer(60, FLAT_SPEC, 2, alpha=0.7, eps=1e-4), "capacity"),
        (PrioritizedReplayBuffer(50, (6,), 2, alpha=0.7, eps=1e-4), "obs_layout"),
        (PrioritizedReplayBuffer(50, FLAT_SPEC, 3, alpha=0.7, eps=1e-4), "action_dim"),
        (PrioritizedReplayBuffer(50, FLAT_SPEC, 2, alpha=0.5, eps=1e-4), "alpha"),
        (ReplayBuffer(50, FLAT_SPEC, 2), "class"),
    ]
    for target, field in cases:
        with pytest.raises(ValueError, match=field):
            target.load_state_dict(tensors, meta)
        assert len(target) == 0


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda t, m: t.update(reward=t["reward"][:-1]), "'reward'"),
        (lambda t, m: t.update(action=t["action"].double()), "'action'"),
        (lambda t, m: t.pop("next_obs"), "do not match"),
        (lambda t, m: t.update(priorities=-t["priorities"]), "priorities"),
        (lambda t, m: m.update(size=51), "size"),
        (lambda t, m: m.update(pos=3), "inconsistent"),
        (lambda t, m: m.update(format_version=99), "format_version"),
        (lambda t, m: m.update(sample_calls=-1), "sample_calls"),
        (lambda t, m: t.update(rng_state=t["rng_state"][:10]), "rng_state"),
    ],
)
def test_inconsistent_states_are_rejected_without_changes(corrupt, message):
    source = used_buffer("prioritized", FLAT_SPEC, 30)
    tensors, meta = source.state_dict()
    meta = json.loads(json.dumps(meta))  # as it comes back from a file
    corrupt(tensors, meta)
    target = make("prioritized", FLAT_SPEC)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(tensors, meta)
    assert len(target) == 0 and target.sum_tree.total == 0


def test_bad_metadata_in_a_file_raises_value_error(tmp_path):
    buffer = used_buffer("uniform", FLAT_SPEC, 5)
    tensors, meta = buffer.state_dict()
    from rlcontrol.replay.safetensors_io import atomic_save

    del meta["obs_layout"]
    atomic_save(tensors, meta, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError):
        ReplayBuffer.load(tmp_path / "bad.safetensors")
