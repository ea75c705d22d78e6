"""`make` id resolution, helpful errors for unknown ids, and registering own tasks."""

import numpy as np
import pytest

import envs
from envs import registry
from envs.gym_env import GymEnv


def test_misspelled_dmc_id_suggests_the_nearest_task() -> None:
    with pytest.raises(envs.UnknownEnvError) as excinfo:
        envs.make("dmc:cheeta-run")
    assert "cheetah-run" in str(excinfo.value)
    assert "dmc:cheeta-run" in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_dmc_id_without_task_is_unknown() -> None:
    with pytest.raises(envs.UnknownEnvError, match="DOMAIN-TASK"):
        envs.make("dmc:cheetah")


def test_unprefixed_unknown_id_lists_valid_prefixes() -> None:
    with pytest.raises(envs.UnknownEnvError) as excinfo:
        envs.make("foo")
    message = str(excinfo.value)
    assert "'foo'" in message and "dmc:" in message and "gym:" in message


def test_misspelled_gym_id_suggests_a_registered_gymnasium_id() -> None:
    with pytest.raises(envs.UnknownEnvError, match="gym:Pendulum-v1"):
        envs.make("gym:Pendulm-v1")


def test_underscored_dmc_names_resolve() -> None:
    env = envs.make("dmc:ball_in_cup-catch", seed=0)
    assert env.spec.env_id == "dmc:ball_in_cup-catch" and env.spec.action_dim == 2
    env.close()


def test_discrete_gym_env_is_rejected() -> None:
    with pytest.raises(ValueError, match="Box action space"):
        envs.make("gym:CartPole-v1")


def test_bad_make_arguments_raise() -> None:
    with pytest.raises(ValueError, match="obs_format"):
        envs.make("gym:Pendulum-v1", obs_format="nested")
    with pytest.raises(ValueError, match="include_state"):
        envs.make("gym:Pendulum-v1", include_state=True)
    with pytest.raises(ValueError, match="max_episode_steps"):
        envs.make("gym:Pendulum-v1", max_episode_steps=0)


def test_registered_ids_cover_the_contract_examples() -> None:
    ids = envs.registered_ids()
    for expected in ("dmc:cartpole-swingup", "dmc:cheetah-run", "dmc:reacher-easy", "gym:Pendulum-v1"):
        assert expected in ids


def test_register_own_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_ID_FACTORIES", {})  # keep the global registry clean
    calls = []

    def pendulum_task(env_id, *, seed, obs_format, **kwargs):
        calls.append((env_id, seed, obs_format, kwargs))
        return GymEnv("gym:Pendulum-v1", seed=seed, obs_format=obs_format)

    envs.register("rlc:test-pendulum", pendulum_task)
    envs.register("rlc:test-pendulum", pendulum_task)  # same factory again: harmless
    assert "rlc:test-pendulum" in envs.registered_ids()

    env = envs.make("rlc:test-pendulum", seed=5, obs_format="dict", action_repeat=2, level=3)
    assert calls == [("rlc:test-pendulum", 5, "dict", {"level": 3})]
    assert env.spec.action_repeat == 2 and env.spec.max_episode_steps == 100
    assert set(env.reset()) == {"observation"}
    env.close()

    with pytest.raises(ValueError, match="already registered"):
        envs.register("rlc:test-pendulum", lambda *a, **k: None)
    with pytest.raises(envs.UnknownEnvError, match="rlc:test-pendulum"):
        envs.make("rlc:test-pendulm")  # misspelled own id: suggestion names the real one


def test_registered_prefix_receives_full_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_PREFIX_FACTORIES", dict(registry._PREFIX_FACTORIES))
    seen = []

    def factory(env_id, *, seed, obs_format, **kwargs):
        seen.append(env_id)
        return GymEnv("gym:Pendulum-v1", seed=seed, obs_format=obs_format)

    envs.register("test:", factory)
    envs.make("test:anything", seed=0).close()
    assert seen == ["test:anything"]
    assert np.isfinite(envs.make("gym:Pendulum-v1", seed=0).reset()).all()  # built-ins untouched
