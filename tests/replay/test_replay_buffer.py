"""Uniform ReplayBuffer: storage, wraparound, sampling distribution, determinism, dtypes, validation."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rlcontrol.replay import Batch, PrioritizedReplayBuffer, ReplayBuffer, make_replay

OBS_DIM, ACTION_DIM = 3, 2


def transition(i, obs_dim=OBS_DIM, action_dim=ACTION_DIM):
    """Transition number i: every value encodes i, so a sampled row tells where it came from."""
    return {
        "obs": np.full(obs_dim, i, np.float32),
        "action": np.full(action_dim, -i, np.float32),
        "reward": float(i) / 2,
        "discount": 0.99,
        "next_obs": np.full(obs_dim, i + 1, np.float32),
    }


def stacked(indices):
    parts = [transition(i) for i in indices]
    return {key: np.stack([np.asarray(p[key]) for p in parts]) for key in parts[0]}


def assert_rows_consistent(batch):
    """Each sampled row's fields come from one and the same transition."""
    i = batch.obs[:, 0]
    assert torch.equal(batch.obs, i[:, None].expand(-1, OBS_DIM))
    assert torch.equal(batch.action, -i[:, None].expand(-1, ACTION_DIM))
    assert torch.equal(batch.reward, i / 2)
    assert torch.equal(batch.next_obs, (i + 1)[:, None].expand(-1, OBS_DIM))
    assert torch.allclose(batch.discount, torch.full_like(batch.discount, 0.99))


def test_add_returns_indices_and_tracks_size_and_pos():
    buffer = ReplayBuffer(4, (OBS_DIM,), ACTION_DIM)
    assert (len(buffer), buffer.size, buffer.pos, buffer.capacity) == (0, 0, 0, 4)
    assert [buffer.add(transition(i)) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert (len(buffer), buffer.pos) == (4, 2)


def test_batch_shapes_dtypes_and_contents():
    buffer = ReplayBuffer(100, (OBS_DIM,), ACTION_DIM, seed=1)
    for i in range(10):
        buffer.add(transition(i))
    batch = buffer.sample(64)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (64, OBS_DIM) and batch.next_obs.shape == (64, OBS_DIM)
    assert batch.action.shape == (64, ACTION_DIM)
    assert batch.reward.shape == batch.discount.shape == batch.weights.shape == (64,)
    assert batch.indices.shape == (64,) and batch.indices.dtype == torch.int64
    assert all(t.dtype == torch.float32 for t in (batch.obs, batch.action, batch.reward, batch.discount))
    assert torch.equal(batch.weights, torch.ones(64))
    # Only the 10 filled rows are ever sampled, and each row is one whole transition.
    assert int(batch.indices.max()) < 10
    assert torch.equal(batch.obs[:, 0], batch.indices.float())
    assert_rows_consistent(batch)
    with pytest.raises(AttributeError):
        batch.reward = batch.discount  # frozen


def test_wraparound_overwrites_the_oldest():
    buffer = ReplayBuffer(5, (OBS_DIM,), ACTION_DIM)
    for i in range(7):
        buffer.add(transition(i))
    seen = buffer.sample(500).obs[:, 0].unique().tolist()
    assert seen == [2.0, 3.0, 4.0, 5.0, 6.0]
    tensors, meta = buffer.state_dict()
    assert tensors["obs"][:, 0].tolist() == [5, 6, 2, 3, 4]  # slots 0 and 1 were overwritten
    assert (meta["size"], meta["pos"]) == (5, 2)


def test_add_batch_matches_repeated_add_including_wraparound():
    one_by_one = ReplayBuffer(8, (OBS_DIM,), ACTION_DIM)
    batched = ReplayBuffer(8, (OBS_DIM,), ACTION_DIM)
    for i in range(5):
        one_by_one.add(transition(i))
    batched.add_batch(stacked(range(5)))
    indices = [one_by_one.add(transition(i)) for i in range(5, 11)]
    np.testing.assert_array_equal(batched.add_batch(stacked(range(5, 11))), indices)  # [5,6,7,0,1,2]
    for name, tensor in one_by_one.state_dict()[0].items():
        assert torch.equal(tensor, batched.state_dict()[0][name]), name
    empty = {key: value[:0] for key, value in stacked([0]).items()}
    assert batched.add_batch(empty).shape == (0,) and len(batched) == 8
    with pytest.raises(ValueError, match="capacity"):
        batched.add_batch(stacked(range(9)))


def test_sampling_is_uniform():
    capacity, batches, batch_size = 50, 200, 256
    buffer = ReplayBuffer(capacity, (OBS_DIM,), ACTION_DIM, seed=3)
    buffer.add_batch(stacked(range(capacity)))
    counts = np.zeros(capacity)
    for _ in range(batches):
        np.add.at(counts, buffer.sample(batch_size).indices.numpy(), 1)
    expected = batches * batch_size / capacity
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 49 degrees of freedom: mean 49, sd ~9.9; 49 + 6 sd would be a clear bias, not chance.
    assert chi_square < 110, chi_square


def test_same_seed_same_batches_and_independent_of_global_rng():
    def batches(seed):
        buffer = ReplayBuffer(100, (OBS_DIM,), ACTION_DIM, seed=seed)
        buffer.add_batch(stacked(range(100)))
        torch.manual_seed(12345 + seed)  # must not matter
        return [buffer.sample(32).indices for _ in range(5)]

    assert all(torch.equal(a, b) for a, b in zip(batches(7), batches(7), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(batches(7), batches(8), strict=True))


@dataclass
class ArraySpec:
    """Stand-in for envs.core.ArraySpec: anything with .shape and .dtype."""

    shape: tuple
    dtype: np.dtype


OBS_SPECS = {
    "flat_float32": (ArraySpec((4,), np.dtype(np.float64)), {"": np.float32}),
    "flat_uint8": (ArraySpec((2, 3), np.dtype(np.uint8)), {"": np.uint8}),
    "dict_mixed": (
        {"pixels": ArraySpec((2, 2, 3), np.dtype(np.uint8)), "joints": (5,)},
        {"pixels": np.uint8, "joints": np.float32},
    ),
}


def random_obs(spec, rng):
    def part(s):
        shape = getattr(s, "shape", s)
        if getattr(s, "dtype", None) == np.uint8:
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        return rng.standard_normal(shape)  # float64 from the "simulator", stored as float32

    return {k: part(v) for k, v in spec.items()} if isinstance(spec, dict) else part(spec)


@pytest.mark.parametrize("kind", sorted(OBS_SPECS))
def test_dtype_sweep_stores_uint8_as_uint8_and_floats_as_float32(kind):
    spec, expected_dtypes = OBS_SPECS[kind]
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(10, spec, ACTION_DIM, seed=0)
    added = []
    for i in range(10):
        tr = {
            "obs": random_obs(spec, rng),
            "action": rng.standard_normal(ACTION_DIM),
            "reward": i,
            "discount": 1.0,
        }
        tr["next_obs"] = random_obs(spec, rng)
        added.append(tr)
        buffer.add(tr)
    batch = buffer.sample(20)

    def parts(observation):
        return observation if isinstance(observation, dict) else {"": observation}

    for row, index in enumerate(batch.indices.tolist()):
        for key in ("obs", "next_obs"):
            got, want = parts(getattr(batch, key)), parts(added[index][key])
            assert set(got) == set(expected_dtypes)
            for name, dtype in expected_dtypes.items():
                assert got[name].dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
                np.testing.assert_array_equal(got[name][row].numpy(), want[name].astype(dtype))


def test_float_values_for_a_uint8_part_are_rejected():
    buffer = ReplayBuffer(4, {"pixels": ArraySpec((2,), np.dtype(np.uint8))}, 1)
    tr = {
        "obs": {"pixels": np.array([0.5, 0.5])},
        "action": [0.0],
        "reward": 0,
        "discount": 1,
        "next_obs": None,
    }
    tr["next_obs"] = tr["obs"]
    with pytest.raises(ValueError, match="uint8"):
        buffer.add(tr)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(obs=np.zeros(OBS_DIM + 1)), "obs: expected shape"),
        (lambda t: t.update(obs=np.zeros(1)), "obs: expected shape"),  # would broadcast silently
        (lambda t: t.update(action=np.zeros((1, ACTION_DIM))), "action: expected shape"),
        (lambda t: t.update(reward=np.zeros(2)), "reward: expected shape"),
        (lambda t: t.pop("discount"), "missing \\['discount'\\]"),
        (lambda t: t.update(info=1), "unexpected \\['info'\\]"),
        (lambda t: t.update(obs={"a": np.zeros(3)}), "expected an array observation"),
    ],
)
def test_malformed_transitions_raise_value_error(change, message):
    buffer = ReplayBuffer(4, (OBS_DIM,), ACTION_DIM)
    bad = transition(0)
    change(bad)
    with pytest.raises(ValueError, match=message):
        buffer.add(bad)
    assert len(buffer) == 0


def test_scalar_reward_may_be_a_length_one_array_or_tensor_values():
    buffer = ReplayBuffer(4, (OBS_DIM,), ACTION_DIM)
    tr = transition(3)
    tr.update(reward=np.array([1.5]), obs=torch.full((OBS_DIM,), 3.0), discount=np.float64(0.5))
    buffer.add(tr)
    batch = buffer.sample(1)
    assert (batch.reward.item(), batch.discount.item(), batch.obs[0, 0].item()) == (1.5, 0.5, 3.0)


def test_sampling_an_empty_buffer_and_bad_arguments_raise():
    buffer = ReplayBuffer(4, (OBS_DIM,), ACTION_DIM)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(2)
    buffer.add(transition(0))
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)
    for bad in [dict(capacity=0), dict(action_dim=0)]:
        kwargs = dict(capacity=4, obs_spec=(OBS_DIM,), action_dim=1) | bad
        with pytest.raises(ValueError):
            ReplayBuffer(**kwargs)
    with pytest.raises(ValueError, match="part names"):
        ReplayBuffer(4, {"a/b": (1,)}, 1)


def test_make_replay_picks_the_class():
    uniform = make_replay(
        10, (OBS_DIM,), ACTION_DIM, prioritized=False, alpha=0.6, beta0=0.4, beta_steps=10, eps=1e-6, seed=0
    )
    per = make_replay(
        10, (OBS_DIM,), ACTION_DIM, prioritized=True, alpha=0.7, beta0=0.5, beta_steps=10, eps=1e-3, seed=0
    )
    assert type(uniform) is ReplayBuffer
    assert isinstance(per, PrioritizedReplayBuffer) and (per.alpha, per.beta, per.eps) == (0.7, 0.5, 1e-3)


@pytest.mark.parametrize("obs_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_obs_dtype_sweep_add_sample_and_save_load(tmp_path, obs_dtype):
    spec = {"joints": (3,), "pixels": ArraySpec((2, 2), np.dtype(np.uint8))}
    buffer = ReplayBuffer(6, spec, ACTION_DIM, obs_dtype=obs_dtype)
    for i in range(8):  # wraps
        obs = {"joints": np.full(3, i / 4), "pixels": np.full((2, 2), i, np.uint8)}
        buffer.add({"obs": obs, "action": np.ones(ACTION_DIM), "reward": i, "discount": 1.0, "next_obs": obs})
    batch = buffer.sample(16)
    assert batch.obs["joints"].dtype == obs_dtype and batch.obs["pixels"].dtype == torch.uint8
    assert torch.equal(batch.obs["joints"][:, 0].float() * 4, batch.reward)  # i/4 is exact in all four
    assert torch.equal(batch.obs["pixels"][:, 0, 0].float(), batch.reward)
    buffer.save(tmp_path / "r.safetensors")
    loaded = ReplayBuffer.load(tmp_path / "r.safetensors")
    assert loaded.obs_layout == buffer.obs_layout
    for name, tensor in buffer.state_dict()[0].items():
        assert torch.equal(tensor, loaded.state_dict()[0][name]), name
