"""sim2real.randomization: per-episode draws from the seed, noise statistics, exact latency, visuals."""

import numpy as np
import pytest

import envs
from envs.core import ArraySpec, Env, EnvSpec, StepResult
from sim2real.physics import get_params
from sim2real.randomization import (
    DomainRandomization,
    RandomizationError,
    RandomizedEnv,
    apply_visual,
    sample_episode,
)


class ConstantEnv(Env):
    """Observes zeros (and a mid-grey image) forever; records every action it receives."""

    def __init__(self, obs_format: str = "flat", image: bool = False, action_dim: int = 2):
        if obs_format == "flat":
            observation = ArraySpec((5,), np.float32)
        else:
            observation = {"a": ArraySpec((2,), np.float32), "b": ArraySpec((3,), np.float32)}
            if image:
                observation["pixels"] = ArraySpec((3, 8, 8), np.uint8)
        self.spec = EnvSpec("test:constant", observation, action_dim, -np.ones(action_dim), np.ones(action_dim),
                            0.1, None, 1, obs_layout=(("a", (2,)), ("b", (3,))))
        self.received: list[np.ndarray] = []

    def _obs(self):
        if isinstance(self.spec.observation, ArraySpec):
            return np.zeros(5, np.float32)
        obs = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
        if "pixels" in self.spec.observation:
            obs["pixels"] = np.full((3, 8, 8), 128, np.uint8)
        return obs

    def reset(self, seed=None):
        self.received = []
        return self._obs()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        self.received.append(action.copy())
        return StepResult(self._obs(), 0.0, False, False, {"applied_action": np.clip(action, -1, 1)})

    def render(self, height=84, width=84, camera=0):
        return np.zeros((height, width, 3), np.uint8)


PHYSICS = {"mass": [0.5, 2.0], "friction": {"low": 0.25, "high": 4.0, "log_uniform": True}, "gravity": 1.1}


def test_sampled_values_lie_in_their_ranges_and_follow_the_seed():
    dr = DomainRandomization.from_dict({"physics": PHYSICS, "latency_steps": [1, 3],
                                        "visual": {"brightness": 0.2, "contrast": 0.3, "color": 0.1}})
    draws = [sample_episode(dr, seed) for seed in range(200)]
    for d in draws:
        assert 0.5 <= d["mass"] <= 2.0 and 0.25 <= d["friction"] <= 4.0 and d["gravity"] == 1.1
        assert d["latency_steps"] in (1.0, 2.0, 3.0)
        assert abs(d["visual_brightness"]) <= 0.2 and 0.7 <= d["visual_contrast"] <= 1.3
        assert all(0.9 <= d[f"visual_color_{c}"] <= 1.1 for c in "rgb")
    assert len({d["mass"] for d in draws}) == 200  # different episodes, different worlds
    assert {d["latency_steps"] for d in draws} == {1.0, 2.0, 3.0}
    # log-uniform: as many draws below the geometric mean (1.0) as above it
    assert 70 < sum(d["friction"] < 1.0 for d in draws) < 130
    assert sample_episode(dr, 17) == draws[17]  # a pure function of the seed
    # each parameter's draw is its own: randomizing something else does not move it
    alone = DomainRandomization.from_dict({"physics": {"mass": [0.5, 2.0]}})
    assert sample_episode(alone, 17)["mass"] == draws[17]["mass"]


def test_episodes_are_reproducible_in_any_call_order_and_exposed():
    dr = {"physics": {"mass": [0.5, 2.0], "damping": [0.5, 2.0]}, "obs_noise_std": 0.1, "latency_steps": [0, 2]}
    env = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), dr, seed=0)
    model = env.unwrapped.dm_env.physics.model.ptr
    nominal_mass = model.body_mass.copy()
    first = env.reset(seed=5)
    sampled_5 = dict(env.sampled)
    assert model.body_mass[1] == nominal_mass[1] * sampled_5["mass"]
    assert get_params(env)["mass"] == sampled_5["mass"]
    result = env.step(np.zeros(1))
    assert result.info["randomization"] == sampled_5
    env.reset(seed=6)
    assert env.sampled != sampled_5
    other = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), dr, seed=123)
    other.reset(seed=9)
    np.testing.assert_array_equal(other.reset(seed=5), first)  # seed 5 after seed 9: same episode
    assert other.sampled == sampled_5
    # reset() without a seed: episode seeds from the wrapper's own seed
    a = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), dr, seed=3)
    b = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), dr, seed=3)
    for _ in range(3):
        np.testing.assert_array_equal(a.reset(), b.reset())
        assert a.sampled == b.sampled


def test_observation_bias_is_per_episode_and_noise_per_step():
    env = RandomizedEnv(ConstantEnv(), {"obs_noise_std": 0.1, "obs_bias_std": 0.5}, seed=0)
    biases = []
    for episode in range(300):
        first = env.reset(seed=episode)
        bias = env.obs_bias[None]
        biases.append(bias)
        if episode < 3:
            steps = np.array([first] + [env.step(np.zeros(2)).obs for _ in range(2000)], dtype=np.float64)
            assert steps.dtype == np.float64 and first.dtype == np.float32
            np.testing.assert_allclose(steps.mean(axis=0), bias, atol=0.01)  # 4.5 standard errors
            np.testing.assert_allclose(steps.std(axis=0), 0.1, rtol=0.05)
    biases = np.array(biases)
    np.testing.assert_allclose(biases.std(axis=0), 0.5, rtol=0.15)
    assert np.abs(biases.mean(axis=0)).max() < 0.15


def test_noise_by_entry_name_and_images_untouched():
    flat = RandomizedEnv(ConstantEnv(), {"obs_noise_std": {"b": 0.2}}, seed=0)
    obs = np.array([flat.reset(seed=1)] + [flat.step(np.zeros(2)).obs for _ in range(500)])
    assert np.all(obs[:, :2] == 0.0)  # "a" named no noise
    np.testing.assert_allclose(obs[:, 2:].std(axis=0), 0.2, rtol=0.15)

    env = RandomizedEnv(ConstantEnv("dict", image=True), {"obs_noise_std": 0.3, "obs_bias_std": 0.3}, seed=0)
    obs = env.reset(seed=2)
    assert list(obs) == ["a", "b", "pixels"] and obs["a"].dtype == np.float32
    assert np.all(obs["pixels"] == 128) and obs["pixels"].dtype == np.uint8
    assert np.all(obs["a"] != 0) and np.all(obs["b"] != 0)
    with pytest.raises(ValueError, match="no float observation entry 'pixels'; its entries are a, b"):
        RandomizedEnv(ConstantEnv("dict", image=True), {"obs_noise_std": {"pixels": 1.0}})


def test_visual_randomization_is_one_appearance_per_episode():
    dr = {"visual": {"brightness": 0.2, "contrast": 0.5, "color": 0.3}}
    env = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0, pixels=True, pixel_size=16), dr, seed=0)
    plain = envs.make("dmc:cartpole-swingup", seed=0, pixels=True, pixel_size=16)
    for seed in (1, 2):
        raw, seen = plain.reset(seed=seed)["pixels"], env.reset(seed=seed)["pixels"]
        np.testing.assert_array_equal(seen, apply_visual(raw, env.sampled))
        assert seen.dtype == np.uint8 and not np.array_equal(seen, raw)
        raw, seen = plain.step(np.ones(1)).obs["pixels"], env.step(np.ones(1)).obs["pixels"]
        np.testing.assert_array_equal(seen, apply_visual(raw, env.sampled))  # same draws at every step
    with pytest.raises(ValueError, match="visual randomization needs image observations"):
        RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), dr)


def test_apply_visual_by_hand():
    frame = np.array([[[100, 200]], [[50, 60]], [[0, 255]]], dtype=np.uint8)  # (3, 1, 2)
    draws = {"visual_brightness": 0.1, "visual_contrast": 2.0, "visual_color_r": 1.0, "visual_color_g": 0.5,
             "visual_color_b": 1.0}
    # gains: r [100, 200], g [25, 30], b [0, 255]; mean 101.666..; x2 about the mean; +25.5
    expected = np.clip(np.floor((np.array([[100, 200], [25, 30], [0, 255]]) - 610 / 6) * 2 + 610 / 6 + 25.5 + 0.5),
                       0, 255)
    np.testing.assert_array_equal(apply_visual(frame, draws)[:, 0, :], expected)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_latency_delays_actions_by_exactly_k_steps(k):
    inner = ConstantEnv()
    env = RandomizedEnv(inner, {"latency_steps": [k, k]}, seed=0)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(20, 2))
    env.reset(seed=0)
    delays = [env.step(a).info["action_delay"] for a in actions]
    received = np.array(inner.received)
    np.testing.assert_array_equal(received[:k], 0.0)  # the safe action until the first command arrives
    np.testing.assert_array_equal(received[k:], actions[:20 - k])
    assert delays == [None] * k + [k] * (20 - k)
    # the next episode starts with an empty pipeline again
    env.reset(seed=1)
    env.step(actions[0])
    np.testing.assert_array_equal(inner.received[0], np.zeros(2) if k else actions[0])


def test_latency_on_a_real_task_shows_in_the_applied_action():
    env = RandomizedEnv(envs.make("dmc:cartpole-swingup", seed=0), {"latency_steps": [2, 2]},
                        initial_action=np.array([0.5]))
    env.reset(seed=0)
    applied = [float(env.step(np.array([a])).info["applied_action"][0]) for a in (1.0, -1.0, 1.0, -1.0)]
    low, high = env.spec.action_low[0], env.spec.action_high[0]
    assert applied == [0.75 * high + 0.25 * low] * 2 + [high, low]


def test_jitter_holds_the_last_command_and_never_runs_backwards():
    inner = ConstantEnv(action_dim=1)
    env = RandomizedEnv(inner, {"latency_steps": [1, 1], "jitter": 0.3}, seed=0)
    env.reset(seed=0)
    n = 4000
    delays = [env.step(np.array([t / n])).info["action_delay"] for t in range(n)]
    assert delays[0] is None
    # From step 2 on, command t-1 has arrived unless it is late (p = 0.3); then command t-2 (never
    # late by more than one step) is held: the delay is 1 or 2, and 2 in 30% of the steps.
    steady = np.array(delays[2:])
    assert set(steady.tolist()) == {1, 2}
    assert 0.27 < np.mean(steady == 2) < 0.33
    sent = np.array([t - d for t, d in enumerate(delays) if d is not None])
    assert np.all(np.diff(sent) >= 0)  # a late command overtaken by a newer one is never applied
    executed = np.array(inner.received)[len(delays) - len(sent):, 0]
    np.testing.assert_array_equal(executed, sent / n)


def test_action_noise_is_added_to_what_the_actuators_execute():
    inner = ConstantEnv()
    env = RandomizedEnv(inner, {"action_noise_std": 0.05}, seed=0)
    env.reset(seed=0)
    for _ in range(3000):
        env.step(np.array([0.2, -0.3]))
    noise = np.array(inner.received) - [0.2, -0.3]
    np.testing.assert_allclose(noise.std(axis=0), 0.05, rtol=0.06)
    assert np.abs(noise.mean(axis=0)).max() < 0.005


def test_bad_actions_and_stepping_before_reset_are_rejected():
    env = RandomizedEnv(ConstantEnv(), {"latency_steps": [2, 2]}, seed=0)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2))
    env.reset(seed=0)
    for bad in (np.full(2, np.nan), np.zeros(3)):
        with pytest.raises(ValueError):
            env.step(bad)


def test_unsupported_parameters_name_the_env_and_close_restores_nominal():
    with pytest.raises(ValueError, match="gym:Pendulum-v1 has no physical parameters"):
        RandomizedEnv(envs.make("gym:Pendulum-v1", seed=0), {"physics": {"mass": [0.9, 1.1]}})
    with pytest.raises(ValueError, match="rlc:lane-following has no physical parameter 'mass'"):
        RandomizedEnv(envs.make("rlc:lane-following", seed=0), {"physics": {"mass": [0.9, 1.1]}})
    # gym:Pendulum-v1 still gets everything that is not physics
    pendulum = RandomizedEnv(envs.make("gym:Pendulum-v1", seed=0), {"obs_noise_std": 0.1, "latency_steps": [1, 1]})
    pendulum.reset(seed=0)
    pendulum.step(np.ones(1))
    lane = RandomizedEnv(envs.make("rlc:lane-following", seed=0), {"physics": {"steering_gain": [0.8, 0.9]}})
    lane.reset(seed=0)
    assert 0.8 <= lane.unwrapped.vehicle.steering_gain <= 0.9
    lane.close()
    assert lane.unwrapped.vehicle.steering_gain == 1.0


@pytest.mark.parametrize("data, message", [
    ({"physics": {"mas": [1, 2]}}, "unknown key 'physics.mas'; did you mean 'physics.mass'?"),
    ({"physics": {"mass": [2, 1]}}, "physics.mass: low must be <= high"),
    ({"physics": {"mass": [0, 1]}}, "physics.mass: must be > 0"),
    ({"physics": {"gravity": {"low": 0.0, "high": 1.0, "log_uniform": True}}}, "log_uniform needs low > 0"),
    ({"obs_noise_std": -0.1}, "obs_noise_std: must be >= 0"),
    ({"latency_steps": [1.5, 2]}, "latency_steps: must be whole numbers"),
    ({"jitter": 1.5}, "jitter: must be in [0, 1.0]"),
    ({"visual": {"colour": 0.1}}, "did you mean 'visual.color'?"),
    ({"noise": 0.1}, "unknown key 'noise'"),
])
def test_bad_settings_are_one_line_naming_the_key(data, message):
    with pytest.raises(RandomizationError) as err:
        DomainRandomization.from_dict(data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_round_trips_through_plain_dicts():
    dr = DomainRandomization.from_dict({"physics": PHYSICS, "obs_noise_std": {"a": 0.1}, "latency_steps": 2,
                                        "visual": {"brightness": 0.1}})
    assert dr.latency_steps == [2, 2] and dr.physics["gravity"].low == dr.physics["gravity"].high == 1.1
    assert DomainRandomization.from_dict(dr.to_dict()) == dr
    assert dr.enabled and not DomainRandomization().enabled


def test_a_task_that_writes_its_own_physics_at_reset_gets_scaled_too():
    """rlc:grasp draws each object's mass at reset: the episode's scale applies on top of that draw."""
    env = RandomizedEnv(envs.make("rlc:grasp", seed=0), {"physics": {"mass": [1.5, 1.5]}}, seed=0)
    inner = env.unwrapped
    for seed in (1, 2):
        env.reset(seed=seed)
        masses = inner.model.body_mass[inner._obj_bodies[:len(inner.objects)]]
        np.testing.assert_allclose(masses, [obj.mass * 1.5 for obj in inner.objects], rtol=1e-12)
