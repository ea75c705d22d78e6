"""Gymnasium environments with a Box action space behind the `Env` interface ("gym:ID").

Observation layout: a Box observation space becomes the single entry "observation";
a Dict space of Boxes keeps its keys in the space's own order (gymnasium sorts the
keys of a plain dict), and the flat vector concatenates them in that order.
`terminated` / `truncated` come straight from gymnasium (its TimeLimit wrapper included).
"""

from __future__ import annotations

import difflib
import warnings

import cv2
import gymnasium
import numpy as np
from gymnasium import spaces

from envs.core import (
    Env,
    EnvSpec,
    ObservationLayout,
    StepResult,
    UnknownEnvError,
    check_action_bounds,
    check_obs_format,
    normalized_to_physical,
)

PREFIX = "gym:"
BOX_OBSERVATION_KEY = "observation"


def _make_gymnasium_env(env_id: str, **kwargs) -> gymnasium.Env:
    gym_id = env_id.removeprefix(PREFIX)
    try:
        return gymnasium.make(gym_id, **kwargs)
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as err:
        close = difflib.get_close_matches(gym_id, list(gymnasium.registry), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise UnknownEnvError(f"Unknown environment id {env_id!r}: {err}{hint}") from None


def _make_rendering_env(env_id: str, **kwargs) -> gymnasium.Env:
    """Makes the env with render_mode="rgb_array" so render() works without a second env.

    gymnasium creates renderers lazily, so this costs nothing until the first frame.
    Envs without rgb_array support get made anyway (gymnasium's warning about it is
    muted) and render() reports that they cannot produce frames.
    """
    if "render_mode" in kwargs:
        return _make_gymnasium_env(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render_mode.*")
        try:
            return _make_gymnasium_env(env_id, render_mode="rgb_array", **kwargs)
        except TypeError:  # an env whose constructor takes no render_mode at all
            return _make_gymnasium_env(env_id, **kwargs)


def _observation_layout(space: spaces.Space) -> ObservationLayout:
    if isinstance(space, spaces.Box):
        return ObservationLayout({BOX_OBSERVATION_KEY: space.shape})
    if isinstance(space, spaces.Dict) and all(isinstance(s, spaces.Box) for s in space.spaces.values()):
        return ObservationLayout({key: s.shape for key, s in space.spaces.items()})
    raise ValueError(f"only Box or Dict-of-Box observation spaces are supported, got {space}")


def _control_period(env: gymnasium.Env, override: float | None) -> float:
    """Seconds of simulated time per env.step.

    MuJoCo and classic-control envs expose `dt`; otherwise fall back to the render rate,
    which gymnasium envs set to real time. Anything else must be given explicitly,
    because a made-up period would silently mistime a deployed controller.
    """
    if override is not None:
        return float(override)
    dt = getattr(env.unwrapped, "dt", None)
    if dt is not None:
        return float(dt)
    fps = env.metadata.get("render_fps")
    if fps:
        return 1.0 / float(fps)
    raise ValueError(
        f"cannot tell the control period of {env.spec.id if env.spec else env}; "
        "pass control_period=SECONDS to make()"
    )


class GymEnv(Env):
    """One gymnasium environment with normalized actions and float32 observations.

    Seeding: `reset(seed)` calls `env.reset(seed=seed)` and seeds the action space; the
    first `reset()` without a seed uses the construction seed. Extra kwargs go to
    `gymnasium.make` (e.g. width/height/camera_name for MuJoCo envs' rendering).
    """

    def __init__(
        self,
        env_id: str,
        *,
        seed: int | None = None,
        obs_format: str = "flat",
        control_period: float | None = None,
        **make_kwargs,
    ):
        self._obs_format = check_obs_format(obs_format)
        self._env = _make_rendering_env(env_id, **make_kwargs)

        action_space = self._env.action_space
        if not isinstance(action_space, spaces.Box):
            self._env.close()
            raise ValueError(
                f"{env_id} has a {type(action_space).__name__} action space; rlcontrol needs a "
                "continuous Box action space"
            )
        self._action_shape = action_space.shape
        self._action_dtype = action_space.dtype
        self._low, self._high = check_action_bounds(action_space.low, action_space.high)
        self._layout = _observation_layout(self._env.observation_space)
        self.spec = EnvSpec(
            env_id=env_id,
            observation=self._layout.spec(obs_format),
            action_dim=int(self._low.size),
            action_low=self._low.astype(np.float32),
            action_high=self._high.astype(np.float32),
            control_period=_control_period(self._env, control_period),
            max_episode_steps=self._env.spec.max_episode_steps if self._env.spec else None,
            action_repeat=1,
            obs_layout=self._layout.components(),
        )
        self._pending_seed = seed
        self._needs_reset = True
        self._closed = False

    @property
    def gym_env(self) -> gymnasium.Env:
        """The wrapped gymnasium env (as returned by gymnasium.make)."""
        return self._env

    def reset(self, seed: int | None = None):
        self._check_open()
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        if seed is not None:
            self._env.action_space.seed(seed)
        obs, _ = self._env.reset(seed=seed)
        self._pending_seed = None
        self._needs_reset = False
        return self._format(obs)

    def step(self, action: np.ndarray) -> StepResult:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        applied = normalized_to_physical(action, self._low, self._high)
        obs, reward, terminated, truncated, info = self._env.step(
            applied.reshape(self._action_shape).astype(self._action_dtype)
        )
        self._needs_reset = bool(terminated or truncated)
        return StepResult(
            obs=self._format(obs),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info={**info, "applied_action": applied},
        )

    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        self._check_open()
        if camera != 0:
            raise ValueError(
                "gymnasium envs fix their camera at construction; pass e.g. camera_name=... to make()"
            )
        frame = self._env.render()
        if frame is None:
            raise RuntimeError(f"{self.spec.env_id} cannot render rgb_array frames")
        frame = np.asarray(frame, dtype=np.uint8)[..., :3]
        if frame.shape[:2] != (height, width):
            # INTER_AREA averages source pixels, avoiding aliasing when shrinking.
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        return np.array(frame, dtype=np.uint8, copy=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    def _format(self, obs):
        named = obs if isinstance(obs, dict) else {BOX_OBSERVATION_KEY: obs}
        return self._layout.format(named, self._obs_format)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.env_id} has been closed")
