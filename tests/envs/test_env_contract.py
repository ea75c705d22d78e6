"""The `Env` contract, checked on real simulators for every id in `registered_ids()`.

New tasks registered with `envs.register` are picked up here automatically. The same contract
holds for tasks under sim2real's domain randomization (`test_randomized_env_contract`).
"""

import functools

import numpy as np
import pytest

import envs
from sim2real.physics import supported_params
from sim2real.randomization import RandomizedEnv
from sim2real.stand_in import PRESETS

N_STEPS = 50
TRUNCATE_AT = 20
# Tasks whose initial state is the same for every seed by design (none yet); for them
# "different seeds give different initial observations" does not apply.
DETERMINISTIC_INIT_IDS: set[str] = set()


def as_dict(obs) -> dict[str, np.ndarray]:
    return obs if isinstance(obs, dict) else {"": obs}


def assert_matches_spec(obs, spec: envs.EnvSpec) -> None:
    if isinstance(spec.observation, envs.ArraySpec):
        assert isinstance(obs, np.ndarray)
        expected = {"": spec.observation}
    else:
        assert isinstance(obs, dict)
        expected = spec.observation
    obs = as_dict(obs)
    assert list(obs) == list(expected)  # same entries, same order
    for name, array_spec in expected.items():
        assert obs[name].shape == array_spec.shape, name
        assert obs[name].dtype == array_spec.dtype, name


def assert_obs_equal(a, b) -> None:
    a, b = as_dict(a), as_dict(b)
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def assert_independent(new, old) -> None:
    """`new` shares no memory with `old` (the previous observation)."""
    new, old = as_dict(new), as_dict(old)
    for name in new:
        assert new[name] is not old[name]
        assert not np.shares_memory(new[name], old[name]), name


def scribble_over(obs) -> None:
    for array in as_dict(obs).values():
        array.fill(12345.0)


def check_spec(spec: envs.EnvSpec, env_id: str, obs_format: str) -> None:
    assert spec.env_id == env_id
    assert isinstance(spec.action_dim, int) and spec.action_dim > 0
    for bound in (spec.action_low, spec.action_high):
        assert bound.dtype == np.float32 and bound.shape == (spec.action_dim,)
    assert np.all(spec.action_low <= spec.action_high)
    assert spec.control_period > 0 and spec.action_repeat == 1
    assert spec.max_episode_steps is None or spec.max_episode_steps > 0
    # Deployment contract (exported into ONNX metadata): one name per action, and for flat
    # observations a named layout that adds up to the vector.
    assert len(spec.action_names) == spec.action_dim and all(spec.action_names)
    if obs_format == "flat" and spec.obs_layout:
        assert sum(int(np.prod(shape)) for _, shape in spec.obs_layout) == spec.observation.shape[0]
    observation_type = envs.ArraySpec if obs_format == "flat" else dict
    assert isinstance(spec.observation, observation_type)


def check_lockstep_determinism(env_id: str, obs_format: str, make=envs.make) -> None:
    """Two envs, one seed, one action sequence: identical trajectories.

    Along the way env_a's previous observation is overwritten before each step, so any
    aliasing of simulator buffers would show up as a divergence from env_b.
    """
    env_a = make(env_id, seed=7, obs_format=obs_format)
    env_b = make(env_id, seed=7, obs_format=obs_format)
    check_spec(env_a.spec, env_id, obs_format)
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, size=(N_STEPS, env_a.spec.action_dim))

    obs_a, obs_b = env_a.reset(), env_b.reset()
    assert_matches_spec(obs_a, env_a.spec)
    assert_obs_equal(obs_a, obs_b)
    for action in actions:
        scribble_over(obs_a)
        previous = obs_a
        result_a, result_b = env_a.step(action), env_b.step(action)
        obs_a = result_a.obs
        assert_matches_spec(obs_a, env_a.spec)
        assert_independent(obs_a, previous)
        assert_obs_equal(obs_a, result_b.obs)
        assert isinstance(result_a.reward, float) and np.isfinite(result_a.reward)
        assert result_a.reward == result_b.reward
        assert isinstance(result_a.terminated, bool) and isinstance(result_a.truncated, bool)
        assert (result_a.terminated, result_a.truncated) == (result_b.terminated, result_b.truncated)
        if result_a.terminated or result_a.truncated:
            obs_a, obs_b = env_a.reset(), env_b.reset()
            assert_obs_equal(obs_a, obs_b)
    env_b.close()

    # reset(seed) on one env replays the same start, whatever happened before.
    first = env_a.reset(seed=11)
    env_a.step(actions[0])
    assert_obs_equal(env_a.reset(seed=11), first)
    if env_id not in DETERMINISTIC_INIT_IDS:
        with pytest.raises(AssertionError):
            assert_obs_equal(env_a.reset(seed=12), first)
    env_a.close()


def check_action_bounds(env_id: str, obs_format: str, make=envs.make) -> None:
    """+-1 lands exactly on the physical bounds; beyond +-1 is clipped; bad input raises."""
    env = make(env_id, seed=0, obs_format=obs_format)
    spec = env.spec
    env.reset()
    for normalized, expected in ((1.0, spec.action_high), (-1.0, spec.action_low), (7.5, spec.action_high)):
        result = env.step(np.full(spec.action_dim, normalized, dtype=np.float32))
        applied = np.asarray(result.info["applied_action"], dtype=np.float32)
        np.testing.assert_array_equal(applied, expected)
        if env_id.startswith("dmc:"):  # what the simulator actually received
            ctrl = env.unwrapped.dm_env.physics.data.ctrl
            np.testing.assert_array_equal(ctrl.astype(np.float32), expected)
    for bad in (
        np.full(spec.action_dim, np.nan),
        np.full(spec.action_dim, np.inf),
        np.zeros(spec.action_dim + 1),
    ):
        with pytest.raises(ValueError):
            env.step(bad)
    env.close()


def check_truncation(env_id: str, obs_format: str, make=envs.make) -> None:
    env = make(env_id, seed=0, obs_format=obs_format, max_episode_steps=TRUNCATE_AT)
    assert env.spec.max_episode_steps == TRUNCATE_AT
    env.reset()
    for step in range(1, TRUNCATE_AT + 1):
        result = env.step(np.zeros(env.spec.action_dim))
        if result.terminated and not env_id.startswith("dmc:"):
            break  # a task may legitimately end early; dmc suite tasks used here don't
        assert not result.terminated
        assert result.truncated == (step == TRUNCATE_AT)
    with pytest.raises(RuntimeError):  # the episode is over until reset()
        env.step(np.zeros(env.spec.action_dim))
    env.close()


@pytest.mark.parametrize("obs_format", ["flat", "dict"])
@pytest.mark.parametrize("env_id", envs.registered_ids())
def test_env_contract(env_id: str, obs_format: str) -> None:
    check_lockstep_determinism(env_id, obs_format)
    check_action_bounds(env_id, obs_format)
    check_truncation(env_id, obs_format)


# rlc:lane-following with its variations set (envs/lane_variation.py): the ranges a domain-randomized
# config draws from, and the fixed values of the lane-car stand-in (sim2real/stand_in.py).
LANE_VARIATIONS = {
    "ranges": {"camera_height": [1.25, 1.55], "camera_pitch": [9.0, 15.0], "steering_offset": [-0.02, 0.02]},
    "stand-in": PRESETS["lane-car"]["env_kwargs"],
}


@pytest.mark.parametrize("obs_format", ["flat", "dict"])
@pytest.mark.parametrize("variation", list(LANE_VARIATIONS))
def test_lane_variation_contract(variation: str, obs_format: str) -> None:
    make = functools.partial(envs.make, **LANE_VARIATIONS[variation])
    check_lockstep_determinism("rlc:lane-following", obs_format, make)
    check_action_bounds("rlc:lane-following", obs_format, make)
    check_truncation("rlc:lane-following", obs_format, make)


def randomized(randomization: dict):
    """`envs.make` followed by RandomizedEnv, with every physical parameter the task has in 0.8-1.25."""

    def make(env_id: str, *, seed=None, **kwargs):
        env = envs.make(env_id, seed=seed, **kwargs)
        physics = {name: [0.8, 1.25] for name in supported_params(env)}
        return RandomizedEnv(env, {**randomization, "physics": physics}, seed=seed)

    return make


# Sensing only (actions reach the task unchanged, so the action-bound checks apply as they are)...
SENSING = {"obs_noise_std": 0.01, "obs_bias_std": 0.01}
# ...and everything that also delays and perturbs the actions.
ACTING = {**SENSING, "action_noise_std": 0.1, "latency_steps": [0, 2], "jitter": 0.3}


@pytest.mark.parametrize("obs_format", ["flat", "dict"])
@pytest.mark.parametrize("env_id", ["dmc:cartpole-swingup", "rlc:grasp", "rlc:obstacle-course", "rlc:lane-following",
                                    "gym:Pendulum-v1"])
def test_randomized_env_contract(env_id: str, obs_format: str) -> None:
    check_lockstep_determinism(env_id, obs_format, randomized(ACTING))
    check_action_bounds(env_id, obs_format, randomized(SENSING))
    check_truncation(env_id, obs_format, randomized(ACTING))
