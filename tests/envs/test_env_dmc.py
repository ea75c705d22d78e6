"""dm_control backend specifics: the task's own time limit and observation order."""

import numpy as np

import envs


def test_own_time_limit_is_a_truncation() -> None:
    # time_limit is a suite task kwarg: 0.2 s at 0.01 s per control step = 20 steps.
    env = envs.make("dmc:cartpole-swingup", seed=0, time_limit=0.2)
    assert env.spec.max_episode_steps == 20
    env.reset()
    results = [env.step(np.zeros(1)) for _ in range(20)]
    assert [r.truncated for r in results] == [False] * 19 + [True]
    assert not any(r.terminated for r in results)
    assert results[-1].info["discount"] == 1.0  # dm_control's time-limit signal
    env.close()


def test_flat_observation_follows_task_order() -> None:
    flat = envs.make("dmc:reacher-easy", seed=2)
    as_dict = envs.make("dmc:reacher-easy", seed=2, obs_format="dict")
    d = as_dict.reset()
    assert list(d) == ["position", "to_target", "velocity"]
    np.testing.assert_array_equal(flat.reset(), np.concatenate(list(d.values())))
    flat.close()
    as_dict.close()


def test_scalar_entries_keep_their_shape_in_dict_format() -> None:
    # walker's "height" is a scalar: 0-d in dict format, one element in the flat vector.
    as_dict = envs.make("dmc:walker-stand", seed=0, obs_format="dict")
    assert as_dict.spec.observation["height"].shape == ()
    assert as_dict.reset()["height"].shape == ()
    flat = envs.make("dmc:walker-stand", seed=0)
    assert flat.spec.observation.shape == (14 + 1 + 9,)
    as_dict.close()
    flat.close()
