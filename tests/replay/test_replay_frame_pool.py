"""Frame-pool pixel replay: same batches as the plain buffer, each frame written once, no frame
ever returned for a transition it does not belong to, persistence and memory accounting.

Every observation has a global index g; its frame is filled with g % 251 and its "state" part
holds the g of every frame in its stack, so any sampled row can be checked by hand."""

from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rlcontrol.replay import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer, make_replay
from rlcontrol.replay.frame_pool import FrameReplayBuffer, PrioritizedFrameReplayBuffer
from rlcontrol.replay.mixed import load_replay_file


@dataclass
class ArraySpec:
    shape: tuple
    dtype: np.dtype


C, H, W = 3, 8, 8
GAMMA = 0.9


def spec(k=1, size=(H, W)):
    return {"pixels": ArraySpec((k * C, *size), np.dtype(np.uint8)), "state": ArraySpec((k,), np.dtype(np.float32))}


def observation(stack, size=(H, W)):
    """Stacked frames of the global indices ``stack`` (oldest first) and those indices as state."""
    frames = [np.full((C, *size), g % 251, np.uint8) for g in stack]
    return {"pixels": np.concatenate(frames), "state": np.array(stack, np.float32)}


def episodes(lengths, n, k=1, ends=None, size=(H, W), start=0):
    """n-step transitions of episodes of ``lengths`` steps (alternately terminated and truncated
    unless ``ends`` says), observed through a k-frame stack that repeats the first frame at reset."""
    accumulator, g, out = NStepAccumulator(n, GAMMA), start, []
    for i, length in enumerate(lengths):
        end = (ends or ["term", "trunc"])[i % 2]
        stack = deque([g] * k, maxlen=k)
        obs = observation(stack, size)
        for t in range(length):
            g += 1
            stack.append(g)
            next_obs = observation(stack, size)
            last = t == length - 1
            out += accumulator.add(obs, np.array([g, -g], np.float32) / 1000, float(g % 7), next_obs,
                                   terminated=last and end == "term", truncated=last and end == "trunc")
            obs = next_obs
        g += 1  # the next episode starts from a new frame
    return out


def rows(buffer):
    """Every valid row, oldest first, as a Batch (through the private gather the sampler uses)."""
    count = len(buffer)
    start = (buffer.pos - count) % buffer.capacity
    indices = (start + torch.arange(count)) % buffer.capacity
    return buffer._gather(indices, torch.ones(count))


def assert_same(a, b):
    for name in ("obs", "next_obs"):
        for part in ("pixels", "state"):
            assert torch.equal(getattr(a, name)[part], getattr(b, name)[part]), (name, part)
    for name in ("action", "reward", "discount", "weights", "indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def assert_frames_belong(batch):
    """Each frame of each sampled stack is the one its state says (g % 251, per C-channel block)."""
    for obs in (batch.obs, batch.next_obs):
        k = obs["state"].shape[1]
        pixels = obs["pixels"].reshape(len(obs["state"]), k, -1).long()
        expected = obs["state"].long() % 251
        assert torch.equal(pixels.amin(-1), expected) and torch.equal(pixels.amax(-1), expected)


def assert_no_dangling(buffer):
    """The valid rows are exactly a suffix of the ring whose frame ids are all still in the pool."""
    pool = buffer.frame_pools["pixels"]
    count = len(buffer)
    assert count <= buffer.capacity
    slots = (buffer.pos - count + np.arange(count)) % buffer.capacity
    ids = buffer._storage.read_field("frame_ids/pixels", buffer.capacity)[torch.from_numpy(slots)]
    assert count == 0 or (int(ids.min()) >= pool.oldest_id and int(ids.max()) < pool.next_id)


# ---------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("k", [1, 3], ids=["single", "stack3"])
def test_same_batches_as_the_plain_buffer_and_each_frame_written_once(n, k):
    lengths = [5, 1, 7, 4, 2, 9]
    stream = episodes(lengths, n, k)
    plain = ReplayBuffer(100, spec(k), 2, seed=7)
    frames = FrameReplayBuffer(100, spec(k), 2, seed=7, frames_per_obs=k, pool_capacity=200)
    for transition in stream:
        assert plain.add(transition) == frames.add(transition)
    assert len(frames) == len(plain) == sum(lengths)
    assert frames.frame_pools["pixels"].next_id == sum(length + 1 for length in lengths)  # T+1 per episode
    assert_same(rows(frames), rows(plain))
    for _ in range(5):
        batch = frames.sample(32)
        assert_same(batch, plain.sample(32))
        assert_frames_belong(batch)


def test_add_batch_dedups_like_single_adds():
    stream = episodes([6, 3, 8], n=3, k=3)
    batched = {key: np.stack([t[key] for t in stream]) for key in ("action", "reward", "discount")}
    for key in ("obs", "next_obs"):
        batched[key] = {part: np.stack([t[key][part] for t in stream]) for part in ("pixels", "state")}
    one, many = (FrameReplayBuffer(40, spec(3), 2, frames_per_obs=3, seed=1) for _ in range(2))
    for transition in stream:
        one.add(transition)
    many.add_batch(batched)
    assert many.frame_pools["pixels"].next_id == one.frame_pools["pixels"].next_id == 7 + 4 + 9
    assert_same(rows(one), rows(many))
    assert_same(one.sample(16), many.sample(16))


def test_stacks_repeat_a_frame_by_index_not_by_copy():
    buffer = FrameReplayBuffer(10, spec(3), 2, frames_per_obs=3)
    buffer.add(episodes([1], n=1, k=3)[0])  # reset stack (0, 0, 0) -> (0, 0, 1)
    ids = buffer._storage.read_field("frame_ids/pixels", 1)[0].tolist()
    assert ids == [0, 0, 0, 0, 0, 1] and buffer.frame_pools["pixels"].next_id == 2


# ---------------------------------------------------------------------------------------- wrap-around
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("pool_capacity", [14, 26], ids=["pool-bound", "ring-bound"])
def test_wraparound_of_both_rings_never_returns_a_foreign_frame(n, pool_capacity):
    buffer = FrameReplayBuffer(12, spec(3), 2, frames_per_obs=3, pool_capacity=pool_capacity, recent_frames=6,
                               seed=3)
    rng = np.random.default_rng(0)
    stream = episodes(rng.integers(1, 9, size=60).tolist(), n, k=3)
    sizes = set()
    for i, transition in enumerate(stream):
        buffer.add(transition)
        assert_no_dangling(buffer)
        sizes.add(len(buffer))
        if i % 7 == 0:
            assert_frames_belong(buffer.sample(64))
    pool = buffer.frame_pools["pixels"]
    assert pool.next_id > 5 * pool.capacity and min(sizes) >= 1 and min(sizes) < buffer.capacity
    # The small pool limits the valid rows; the larger one lets the ring fill up between invalidations.
    assert (max(sizes) == buffer.capacity) == (pool_capacity == 26)
    assert_frames_belong(rows(buffer))


def test_random_small_configurations_never_dangle():
    """Random ring/pool/window sizes, n, k and single or batched adds: after every add the valid
    rows are a suffix whose frames are all pooled, and every sampled frame belongs to its row."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        capacity, k, n, recent = (int(v) for v in rng.integers([2, 1, 1, 1], [12, 4, 4, 8]))
        pool_capacity = int(rng.integers(recent + 2 * k, recent + 2 * k + 2 * capacity + 4))
        buffer = FrameReplayBuffer(capacity, spec(k), 2, frames_per_obs=k, pool_capacity=pool_capacity,
                                   recent_frames=recent, seed=seed)
        for transition in episodes(rng.integers(1, 9, size=25).tolist(), n, k=k):
            if rng.random() < 0.2:
                buffer.add_batch({key: ({p: v[None] for p, v in value.items()} if isinstance(value, dict)
                                        else np.asarray(value)[None]) for key, value in transition.items()})
            else:
                buffer.add(transition)
            assert_no_dangling(buffer)
            assert_frames_belong(buffer.sample(16))


def test_a_batch_larger_than_the_pool_keeps_only_rows_whose_frames_survive():
    buffer = FrameReplayBuffer(20, ArraySpec((C, H, W), np.uint8), 1, pool_capacity=12, recent_frames=2)
    g = np.arange(20)
    frames = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None, None], (40, C, H, W))
    buffer.add_batch({  # 20 transitions with 40 distinct frames into a pool of 12
        "obs": frames[0::2], "action": g[:, None].astype(np.float32), "reward": np.zeros(20),
        "discount": np.ones(20), "next_obs": frames[1::2],
    })
    assert len(buffer) == (12 - 2) // 2  # valid while birth >= next_id - pool_capacity + recent_frames
    batch = buffer.sample(64)
    assert torch.equal(batch.obs[:, 0, 0, 0].long(), 2 * batch.action[:, 0].long())
    assert torch.equal(batch.next_obs[:, 0, 0, 0].long(), 2 * batch.action[:, 0].long() + 1)
    assert set(batch.indices.tolist()) <= set(range(15, 20))


# ---------------------------------------------------------------------------------------- prioritized
def random_pixels_buffer(capacity=8, count=13, **kwargs):
    """2 new frames per transition and a pool of 10: only the newest 4 rows are valid."""
    buffer = PrioritizedFrameReplayBuffer(capacity, spec(), 2, pool_capacity=10, recent_frames=2, alpha=0.7,
                                          eps=1e-3, seed=5, **kwargs)
    for g in range(count):
        buffer.add({"obs": observation([2 * g]), "action": np.zeros(2), "reward": 0.0, "discount": 1.0,
                    "next_obs": observation([2 * g + 1])})
    return buffer


def test_prioritized_never_samples_invalidated_rows_and_matches_the_tree():
    buffer = random_pixels_buffer()
    valid = sorted((buffer.pos - 1 - np.arange(len(buffer))) % buffer.capacity)
    assert len(buffer) == 4
    buffer.update_priorities(valid, [0.5, 2.0, 0.0, 1.0])
    priorities = buffer.sum_tree.priorities
    invalid = [i for i in range(buffer.capacity) if i not in valid]
    assert np.all(priorities[invalid] == 0) and np.all(priorities[valid] > 0)
    counts = np.zeros(buffer.capacity)
    for _ in range(300):
        batch = buffer.sample(64)
        assert_frames_belong(batch)
        np.add.at(counts, batch.indices.numpy(), 1)
    assert counts[invalid].sum() == 0
    # Brute force: P(i) = (|td_i| + eps)^alpha / sum; 19,200 draws, sd <= 0.0036: 0.02 is > 5 sd.
    expected = (np.array([0.5, 2.0, 0.0, 1.0]) + 1e-3) ** 0.7
    np.testing.assert_allclose(counts[valid] / counts.sum(), expected / expected.sum(), atol=0.02)


def test_update_priorities_skips_rows_invalidated_since_they_were_sampled():
    buffer = random_pixels_buffer()
    batch = buffer.sample(32)
    buffer.add({"obs": observation([100]), "action": np.zeros(2), "reward": 0.0, "discount": 1.0,
                "next_obs": observation([101])})  # invalidates the oldest valid row
    stale = [i for i in batch.indices.tolist() if not buffer._is_valid(np.array([i]))[0]]
    assert stale
    buffer.update_priorities(batch.indices, torch.full((32,), 3.0))
    assert np.all(buffer.sum_tree.priorities[stale] == 0)
    for _ in range(50):
        assert not set(buffer.sample(64).indices.tolist()) & set(stale)
    with pytest.raises(IndexError):
        buffer.update_priorities([buffer.capacity], [1.0])


# ---------------------------------------------------------------------------------------- persistence
def used(kind, image_spec=None):
    """A buffer after wrap-around, invalidation, samples and priority updates."""
    image_spec = image_spec or spec(3)
    cls = PrioritizedFrameReplayBuffer if kind == "prioritized" else FrameReplayBuffer
    buffer = cls(16, image_spec, 2, frames_per_obs=3, pool_capacity=18, recent_frames=6, seed=2)
    for transition in episodes([3, 5, 2, 6, 4, 7, 1, 5], n=3, k=3)[:-3]:
        if not isinstance(image_spec, dict):
            transition = {**transition, "obs": transition["obs"]["pixels"],
                          "next_obs": transition["next_obs"]["pixels"]}
        buffer.add(transition)
    for _ in range(3):
        batch = buffer.sample(8)
        if kind == "prioritized":
            buffer.update_priorities(batch.indices, torch.rand(8) * 3)
    assert 0 < len(buffer) < buffer._size  # some rows invalidated
    return buffer


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@pytest.mark.parametrize("flat", [False, True], ids=["dict", "flat"])
def test_round_trip_is_bit_identical_and_continues_identically(tmp_path, kind, flat):
    original = used(kind, ArraySpec((3 * C, H, W), np.uint8) if flat else None)
    path = tmp_path / "replay.safetensors"
    original.save(path)
    for loaded in (type(original).load(path), load_replay_file(path)):
        assert type(loaded) is type(original) and len(loaded) == len(original)
        tensors, meta = original.state_dict()
        loaded_tensors, loaded_meta = loaded.state_dict()
        assert meta == loaded_meta and tensors.keys() == loaded_tensors.keys()
        assert all(torch.equal(tensors[name], loaded_tensors[name]) for name in tensors)
    copy = type(original).load(path)
    more = episodes([4, 6], n=3, k=3, start=1000)
    for buffer in (original, copy):
        for transition in more:
            if flat:
                transition = {**transition, "obs": transition["obs"]["pixels"],
                              "next_obs": transition["next_obs"]["pixels"]}
            buffer.add(transition)
    # The reloaded buffer deduplicates the next frames like the original (its recent map was rebuilt).
    assert [p.next_id for p in copy.frame_pools.values()] == [p.next_id for p in original.frame_pools.values()]
    for _ in range(4):
        a, b = original.sample(16), copy.sample(16)
        for name in ("obs", "next_obs"):
            x, y = getattr(a, name), getattr(b, name)
            assert all(torch.equal(x[p], y[p]) for p in x) if isinstance(x, dict) else torch.equal(x, y)
        for name in ("action", "reward", "discount", "weights", "indices"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_truncated_or_garbage_file_raises_a_one_line_value_error(tmp_path):
    path = tmp_path / "replay.safetensors"
    used("prioritized").save(path)
    data = path.read_bytes()
    for content in (data[: len(data) // 2], data[:100], np.random.default_rng(0).bytes(5000)):
        path.write_bytes(content)
        for load in (PrioritizedFrameReplayBuffer.load, load_replay_file):
            with pytest.raises(ValueError) as error:
                load(path)
            assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda t, m: m["frame_next_ids"].update(pixels=3), "frames/pixels"),
        (lambda t, m: m["frame_next_ids"].update(pixels=m["frame_next_ids"]["pixels"] + 50), "outside"),
        (lambda t, m: t["frame_ids/pixels"].sub_(1000), "outside the saved pool"),
        (lambda t, m: t["frame_birth/pixels"].sub_(1000), "outside the saved pool"),
        (lambda t, m: m.update(valid=m["size"] + 1), "valid"),
        (lambda t, m: t.pop("frames/pixels"), "frames/pixels"),
    ],
)
def test_inconsistent_states_are_rejected_without_changes(corrupt, message):
    tensors, meta = used("prioritized").state_dict()
    tensors = {name: tensor.clone() for name, tensor in tensors.items()}
    corrupt(tensors, meta)
    target = PrioritizedFrameReplayBuffer(16, spec(3), 2, frames_per_obs=3, pool_capacity=18, recent_frames=6)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(tensors, meta)
    assert len(target) == 0 and target.frame_pools["pixels"].next_id == 0


# ---------------------------------------------------------------------------------------- memory, factory
def test_bytes_per_transition_is_one_frame_plus_a_small_row():
    pixels = {"pixels": ArraySpec((3, 64, 64), np.uint8), "state": ArraySpec((1,), np.float32)}
    buffer = FrameReplayBuffer(400, pixels, 2)
    accumulator = NStepAccumulator(3, GAMMA)
    for episode in range(2):
        frames = np.random.default_rng(episode).integers(0, 256, size=(201, 3, 64, 64), dtype=np.uint8)
        for t in range(200):
            obs = {"pixels": frames[t], "state": np.zeros(1, np.float32)}
            next_obs = {"pixels": frames[t + 1], "state": np.zeros(1, np.float32)}
            for transition in accumulator.add(obs, np.zeros(2), 0.0, next_obs, False, t == 199):
                buffer.add(transition)
    report = buffer.memory_report()
    # 402 frames for 400 transitions; a row is 6 float32 + 2 int64 ids + 1 int64 birth = 48 bytes.
    assert report["frames"] == 402 * 12288 and report["rows"] == 400 * 48
    assert report["bytes_per_transition"] == pytest.approx(12288 * 402 / 400 + 48)
    estimate = FrameReplayBuffer.estimate(1_000_000, pixels, 2)
    assert estimate["total"] < 14e9  # vs 2 x 12,288 x 1M = 24.6 GB for two copies per row
    assert estimate["frames"] == (1_000_000 + 62_500 + 2 * (1 + 64)) * 12288
    prioritized = FrameReplayBuffer.estimate(1_000_000, pixels, 2, prioritized=True)
    assert prioritized["total"] - estimate["total"] == 16 * 2**20


def test_make_replay_picks_frame_buffers_for_image_observations():
    image = {"pixels": ArraySpec((3, 8, 8), np.uint8), "state": (2,)}
    assert type(make_replay(10, image, 1, prioritized=False)) is FrameReplayBuffer
    assert type(make_replay(10, image, 1, prioritized=True)) is PrioritizedFrameReplayBuffer
    assert type(make_replay(10, image, 1, prioritized=False, frame_pool=False)) is ReplayBuffer
    assert type(make_replay(10, (5,), 1, prioritized=True)) is PrioritizedReplayBuffer
    with pytest.raises(ValueError, match="uint8 image parts"):
        make_replay(10, (5,), 1, prioritized=False, frame_pool=True)


def test_bad_inputs_are_rejected():
    buffer = FrameReplayBuffer(10, spec(), 2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1)
    good = episodes([1], n=1)[0]
    with pytest.raises(ValueError, match="uint8"):
        buffer.add({**good, "obs": {**good["obs"], "pixels": good["obs"]["pixels"] / 255.0}})
    with pytest.raises(ValueError, match="shape"):
        buffer.add({**good, "next_obs": {**good["next_obs"], "pixels": good["obs"]["pixels"][:2]}})
    with pytest.raises(ValueError, match="split"):
        FrameReplayBuffer(10, spec(), 2, frames_per_obs=2)
    assert len(buffer) == 0 and buffer.frame_pools["pixels"].next_id == 0
