"""Gymnasium backend specifics: Dict observation spaces, control period, seeding.

No installed gymnasium env has a Dict observation space with a Box action space, so a
small real one (a point that moves toward a goal) is defined and registered here.
"""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import envs

GOAL_REACH_ID = "rlcontrol_test/GoalReach-v0"


class GoalReachEnv(gymnasium.Env):
    """2-D point mass: action = velocity command (m/s), 0.1 s per step, random goal."""

    metadata = {"render_modes": []}  # no dt and no render_fps: the period is unknown

    def __init__(self):
        box = spaces.Box(-5.0, 5.0, shape=(2,), dtype=np.float64)
        # Given in the order position, goal; gymnasium sorts plain-dict keys: goal, position.
        self.observation_space = spaces.Dict({"position": box, "goal": box})
        self.action_space = spaces.Box(-0.5, 0.5, shape=(2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._position = np.zeros(2)
        self._goal = self.np_random.uniform(-2.0, 2.0, size=2)
        return self._observation(), {}

    def step(self, action):
        self._position = self._position + 0.1 * np.asarray(action, dtype=np.float64)
        distance = float(np.linalg.norm(self._goal - self._position))
        return self._observation(), -distance, distance < 0.05, False, {"distance": distance}

    def _observation(self):
        return {"position": self._position.copy(), "goal": self._goal.copy()}


if GOAL_REACH_ID not in gymnasium.registry:
    gymnasium.register(GOAL_REACH_ID, entry_point=GoalReachEnv, max_episode_steps=30)


def make_goal_reach(**kwargs) -> envs.Env:
    return envs.make(f"gym:{GOAL_REACH_ID}", control_period=0.1, **kwargs)


def test_dict_observation_space_stays_a_dict() -> None:
    env = make_goal_reach(seed=0, obs_format="dict")
    assert list(env.spec.observation) == ["goal", "position"]
    obs = env.reset()
    assert list(obs) == ["goal", "position"]
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in obs.values())
    np.testing.assert_array_equal(obs["position"], [0.0, 0.0])
    env.close()


def test_flat_observation_concatenates_in_space_order() -> None:
    as_dict = make_goal_reach(seed=4, obs_format="dict")
    flat = make_goal_reach(seed=4, obs_format="flat")
    assert flat.spec.observation == envs.ArraySpec((4,), np.dtype("float32"))
    d, f = as_dict.reset(), flat.reset()
    np.testing.assert_array_equal(f, np.concatenate([d["goal"], d["position"]]))
    result = flat.step(np.array([1.0, -1.0]))
    np.testing.assert_allclose(result.obs[2:], [0.05, -0.05], rtol=1e-6)  # 0.1 s x 0.5 m/s
    np.testing.assert_array_equal(result.info["applied_action"], [0.5, -0.5])
    assert "distance" in result.info  # gymnasium's own info is passed through
    as_dict.close()
    flat.close()


def test_unknown_control_period_must_be_given() -> None:
    with pytest.raises(ValueError, match="control_period"):
        envs.make(f"gym:{GOAL_REACH_ID}")
    env = make_goal_reach(action_repeat=2)
    assert env.spec.control_period == pytest.approx(0.2) and env.spec.max_episode_steps == 15
    env.close()


def test_construction_seed_drives_the_first_reset_only() -> None:
    env = make_goal_reach(seed=9)
    twin = make_goal_reach(seed=9)
    first = env.reset()
    np.testing.assert_array_equal(first, twin.reset())
    # Unseeded resets continue the stream instead of replaying the construction seed.
    assert not np.array_equal(env.reset()[:2], first[:2])
    np.testing.assert_array_equal(env.reset(seed=9), first)
    env.close()
    twin.close()


def test_pendulum_spec() -> None:
    env = envs.make("gym:Pendulum-v1", seed=0)
    assert env.spec.control_period == pytest.approx(0.05)
    assert env.spec.max_episode_steps == 200
    np.testing.assert_array_equal(env.spec.action_high, np.array([2.0], np.float32))
    env.close()
