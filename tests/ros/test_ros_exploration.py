"""Exploration noise on the policy node's command (ros_nodes/exploration.py), without ROS."""

import numpy as np
import pytest

from ros_nodes.exploration import ActionNoise


def test_noise_is_gaussian_in_normalized_units_and_clipped_to_bounds():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 10.0])  # half ranges 2 and 5
    noise = ActionNoise(low, high, std=0.1, seed=3)
    center = np.array([0.0, 5.0])
    draws = np.stack([noise.apply(center).copy() for _ in range(20000)])
    np.testing.assert_allclose(draws.mean(axis=0), center, atol=0.01)
    np.testing.assert_allclose(draws.std(axis=0), [0.2, 0.5], rtol=0.03)
    edge = np.stack([noise.apply(high.copy()).copy() for _ in range(1000)])
    assert (edge <= high).all() and (edge >= low).all() and (edge < high).any()


def test_zero_std_is_the_policy_action_itself_and_seeds_repeat():
    low, high = -np.ones(3), np.ones(3)
    action = np.array([0.1, -0.2, 0.3])
    assert ActionNoise(low, high, 0.0).apply(action) is action
    a, b = ActionNoise(low, high, 0.3, seed=1), ActionNoise(low, high, 0.3, seed=1)
    assert all(np.array_equal(a.apply(action), b.apply(action)) for _ in range(10))
    assert not np.array_equal(ActionNoise(low, high, 0.3, seed=2).apply(action), ActionNoise(low, high, 0.3, 1).apply(action))


def test_non_finite_actions_stay_non_finite_for_the_safety_layer():
    out = ActionNoise(-np.ones(2), np.ones(2), 0.2).apply(np.array([np.nan, 0.0]))
    assert np.isnan(out[0]) and np.isfinite(out[1])


@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf")])
def test_bad_std_is_refused(std):
    with pytest.raises(ValueError, match="exploration_std must be a finite number >= 0"):
        ActionNoise(-np.ones(1), np.ones(1), std)
