"""Action repeat: k sub-steps per agent step, rewards summed, stopping at episode end."""

import math

import numpy as np
import pytest

import envs


def test_repeat_sums_sub_step_rewards_of_an_unrepeated_twin() -> None:
    repeated = envs.make("dmc:cartpole-swingup", seed=3, action_repeat=3)
    single = envs.make("dmc:cartpole-swingup", seed=3)
    np.testing.assert_array_equal(repeated.reset(), single.reset())
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 1))
    for action in actions:
        result = repeated.step(action)
        sub_results = [single.step(action) for _ in range(3)]
        assert result.reward == pytest.approx(sum(r.reward for r in sub_results), rel=1e-12, abs=1e-15)
        np.testing.assert_array_equal(result.obs, sub_results[-1].obs)
        assert result.info["sub_steps"] == 3
    repeated.close()
    single.close()


def test_repeat_scales_spec() -> None:
    base = envs.make("dmc:cartpole-swingup", seed=0)
    repeated = envs.make("dmc:cartpole-swingup", seed=0, action_repeat=3)
    assert repeated.spec.action_repeat == 3
    assert repeated.spec.control_period == pytest.approx(3 * base.spec.control_period)
    assert repeated.spec.max_episode_steps == math.ceil(base.spec.max_episode_steps / 3)  # 334
    base.close()
    repeated.close()


def test_repeat_stops_at_the_time_limit() -> None:
    # Pendulum: 200 env steps; with repeat 3 the 67th agent step runs only 2 sub-steps.
    env = envs.make("gym:Pendulum-v1", seed=0, action_repeat=3)
    assert env.spec.max_episode_steps == 67
    env.reset()
    for _ in range(66):
        result = env.step(np.zeros(1))
        assert not (result.terminated or result.truncated)
    result = env.step(np.zeros(1))
    assert result.truncated and not result.terminated
    assert result.info["sub_steps"] == 2
    env.close()


def test_time_limit_override_counts_agent_steps() -> None:
    env = envs.make("gym:Pendulum-v1", seed=0, action_repeat=4, max_episode_steps=5)
    assert env.spec.max_episode_steps == 5
    env.reset()
    endings = [env.step(np.zeros(1)).truncated for _ in range(5)]
    assert endings == [False] * 4 + [True]
    env.close()


def test_time_limit_override_never_extends_the_task_limit() -> None:
    env = envs.make("gym:Pendulum-v1", seed=0, max_episode_steps=10_000)
    assert env.spec.max_episode_steps == 200
    env.close()


@pytest.mark.parametrize("repeat", [0, -1, 1.5])
def test_invalid_repeat_raises(repeat) -> None:
    with pytest.raises(ValueError):
        envs.make("gym:Pendulum-v1", action_repeat=repeat)
