"""`make(env_id)`: one entry point for every environment rlcontrol trains or deploys.

Ids are either prefixed ("dmc:cheetah-run", "gym:Pendulum-v1": the part after the
prefix names a task of that backend) or exact ids of the project's own tasks
("rlc:obstacle-course"), added with `register`. A factory is any callable
`factory(env_id, *, seed, obs_format, **kwargs) -> Env` that builds the bare task
(action_repeat 1, the task's own time limit); `make` adds the generic wrappers.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from envs.core import Env, UnknownEnvError, check_obs_format
from envs.wrappers import ActionRepeat, PixelObservation, TimeLimit

EnvFactory = Callable[..., Env]

# Prefix registrations end with ":"; anything else is an exact id.
_PREFIX_FACTORIES: dict[str, EnvFactory] = {}
_ID_FACTORIES: dict[str, EnvFactory] = {}

# Backend ids that `registered_ids()` lists next to the project's own tasks: cheap,
# well-understood tasks that the env contract tests run against.
_EXAMPLE_BACKEND_IDS = (
    "dmc:cartpole-swingup",
    "dmc:cheetah-run",
    "dmc:reacher-easy",
    "gym:Pendulum-v1",
)

__all__ = ["UnknownEnvError", "make", "register", "registered_ids"]


def register(prefix_or_id: str, factory: EnvFactory) -> None:
    """Registers a factory for a prefix ("name:") or for one exact id ("rlc:task").

    Raises ValueError if the name is already taken by a different factory; registering
    the same factory again is a no-op so that re-imports are harmless.
    """
    if not prefix_or_id or not callable(factory):
        raise ValueError("register needs a non-empty id or prefix and a callable factory")
    table = _PREFIX_FACTORIES if prefix_or_id.endswith(":") else _ID_FACTORIES
    existing = table.get(prefix_or_id)
    if existing is not None and existing is not factory:
        raise ValueError(f"{prefix_or_id!r} is already registered to {existing!r}")
    table[prefix_or_id] = factory


def registered_ids() -> list[str]:
    """Every exact id registered so far plus a few representative backend ids."""
    return sorted(_ID_FACTORIES) + [i for i in _EXAMPLE_BACKEND_IDS if i not in _ID_FACTORIES]


def make(
    env_id: str,
    *,
    seed: int | None = None,
    action_repeat: int = 1,
    obs_format: str = "flat",
    pixels: bool = False,
    pixel_size: int = 84,
    camera: int | str = 0,
    max_episode_steps: int | None = None,
    **kwargs,
) -> Env:
    """Builds an environment by id, with normalized actions in [-1, 1]^action_dim.

    Args:
      env_id: "dmc:DOMAIN-TASK", "gym:ID" or an id added with `register`.
      seed: seeds all task randomness; None draws fresh entropy.
      action_repeat: physics control steps per agent step (rewards summed).
      obs_format: "flat" (one float32 vector) or "dict" (ordered name -> float32 array).
        Ignored when pixels=True, where the observation is always a dict.
      pixels: observe {"pixels": uint8 (3, pixel_size, pixel_size)} rendered from
        `camera`; pass include_state=True to also get {"state": float32 flat vector}.
      max_episode_steps: truncate after this many agent steps if the task's own limit
        is not reached first.
      kwargs: forwarded to the backend factory (e.g. control_period for gym envs
        without a dt, task kwargs for dmc).
    Raises:
      UnknownEnvError: the id matches no backend task or registered id.
    """
    check_obs_format(obs_format)
    include_state = bool(kwargs.pop("include_state", False))
    if include_state and not pixels:
        raise ValueError("include_state only applies to pixel observations (pixels=True)")

    factory = _find_factory(env_id)
    try:
        env = factory(env_id, seed=seed, obs_format="flat" if pixels else obs_format, **kwargs)
    except UnknownEnvError as err:
        raise UnknownEnvError(f"{err} {_valid_ids_sentence()}") from None

    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps)
    if pixels:
        env = PixelObservation(env, size=pixel_size, camera=camera, include_state=include_state)
    return env


def _find_factory(env_id: str) -> EnvFactory:
    if env_id in _ID_FACTORIES:
        return _ID_FACTORIES[env_id]
    prefix, sep, _ = env_id.partition(":")
    if sep and prefix + ":" in _PREFIX_FACTORIES:
        return _PREFIX_FACTORIES[prefix + ":"]
    close = difflib.get_close_matches(env_id, registered_ids(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownEnvError(f"Unknown environment id {env_id!r}.{hint} {_valid_ids_sentence()}")


def _valid_ids_sentence() -> str:
    prefixes = ", ".join(f"'{p}'" for p in sorted(_PREFIX_FACTORIES))
    own = ", ".join(f"'{i}'" for i in sorted(_ID_FACTORIES)) or "none yet"
    return f"Valid ids start with one of the prefixes {prefixes} or are registered ids ({own})."


def _lazy_factory(module_name: str, class_name: str) -> EnvFactory:
    """Imports the backend only when first used: dm_control and gymnasium import slowly."""

    def factory(env_id: str, **kwargs) -> Env:
        env_class = getattr(importlib.import_module(module_name), class_name)
        return env_class(env_id, **kwargs)

    factory.__qualname__ = f"lazy {module_name}.{class_name}"
    return factory


register("dmc:", _lazy_factory("envs.dmc", "DMCEnv"))
register("gym:", _lazy_factory("envs.gym_env", "GymEnv"))
register("rlc:obstacle-course", _lazy_factory("envs.obstacle_course", "ObstacleCourseEnv"))
register("rlc:grasp", _lazy_factory("envs.grasp", "GraspEnv"))
register("rlc:lane-following", _lazy_factory("envs.lane", "LaneFollowingEnv"))
