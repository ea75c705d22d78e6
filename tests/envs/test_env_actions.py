"""Normalized <-> physical action mapping, shared by training, ONNX export and ROS nodes."""

import numpy as np
import pytest

import envs
from envs.core import normalized_to_physical

LOW = np.array([-2.0, 0.0])
HIGH = np.array([2.0, 4.0])


def test_scale_action_hand_computed_example() -> None:
    # dim 0: midpoint 0, half-range 2 -> 0.5 * 2 = 1;  dim 1: -1 is the low bound, 0.
    np.testing.assert_array_equal(envs.scale_action(np.array([0.5, -1.0]), LOW, HIGH), [1.0, 0.0])
    np.testing.assert_array_equal(envs.unscale_action(np.array([1.0, 0.0]), LOW, HIGH), [0.5, -1.0])


def test_scale_unscale_round_trip() -> None:
    rng = np.random.default_rng(0)
    a_norm = rng.uniform(-1.0, 1.0, size=(100, 2))
    np.testing.assert_allclose(envs.unscale_action(envs.scale_action(a_norm, LOW, HIGH), LOW, HIGH), a_norm)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_endpoints_are_exact(dtype) -> None:
    # For about half of random bounds, low + 1.0 * (high - low) misses `high` by an ulp
    # (e.g. low=-1.1, high=0.3); the interpolation form must hit both bounds exactly.
    rng = np.random.default_rng(0)
    low = rng.uniform(-5.0, 0.0, size=1000).astype(dtype)
    high = rng.uniform(0.0, 5.0, size=1000).astype(dtype)
    np.testing.assert_array_equal(envs.scale_action(np.ones(1000, dtype), low, high), high)
    np.testing.assert_array_equal(envs.scale_action(-np.ones(1000, dtype), low, high), low)


def test_normalized_to_physical_clips_then_scales() -> None:
    physical = normalized_to_physical(np.array([3.0, -9.0]), LOW, HIGH)
    np.testing.assert_array_equal(physical, [2.0, 0.0])


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf], [-np.inf, 0.0]])
def test_non_finite_action_raises(bad) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        normalized_to_physical(np.array(bad), LOW, HIGH)


def test_env_rejects_non_finite_action_before_stepping() -> None:
    env = envs.make("gym:Pendulum-v1", seed=0)
    obs = env.reset()
    with pytest.raises(ValueError):
        env.step(np.array([np.nan]))
    # The failed call must not have advanced the simulation.
    reference = envs.make("gym:Pendulum-v1", seed=0)
    reference.reset()
    np.testing.assert_array_equal(env.step(np.array([0.5])).obs, reference.step(np.array([0.5])).obs)
    assert obs.shape == (3,)
    env.close()
    reference.close()


def test_spec_bounds_are_read_only_and_specs_compare_by_value() -> None:
    env = envs.make("gym:Pendulum-v1", seed=0)
    with pytest.raises(ValueError):
        env.spec.action_high[0] = 100.0  # would silently desync exporters from the env
    twin = envs.make("gym:Pendulum-v1", seed=1)
    assert env.spec == twin.spec and hash(env.spec) == hash(twin.spec)
    assert env.spec != envs.make("gym:Pendulum-v1", action_repeat=2).spec
    env.close()
    twin.close()
