"""DeepMind Control Suite tasks behind the `Env` interface (ids "dmc:DOMAIN-TASK").

Observations keep the task's own entry order (`task.get_observation` returns an
OrderedDict); the flat vector concatenates the entries in that same order. In "dict"
format each entry keeps its native shape, e.g. walker's "height" stays 0-d.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
from dm_control import suite

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

PREFIX = "dmc:"


def suite_task_names() -> list[str]:
    """All suite tasks as "domain-task" strings, e.g. "ball_in_cup-catch"."""
    return [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]


def parse_dmc_id(env_id: str) -> tuple[str, str]:
    """Splits "dmc:DOMAIN-TASK" into (domain, task), validating against the suite.

    Domain and task names use underscores, never hyphens, so the first hyphen separates
    them unambiguously. Raises `UnknownEnvError` with the nearest valid name otherwise.
    """
    name = env_id.removeprefix(PREFIX)
    domain, _, task = name.partition("-")
    if (domain, task) not in suite.ALL_TASKS:
        known = suite_task_names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise UnknownEnvError(
            f"Unknown environment id {env_id!r}: dm_control suite ids look like "
            f"'dmc:DOMAIN-TASK' (e.g. 'dmc:cheetah-run').{hint}"
        )
    return domain, task


class DMCEnv(Env):
    """One dm_control suite task with normalized actions and gymnasium-style endings.

    Endings: dm_control signals a time limit with discount 1.0 on the last step and a
    task failure/success with discount 0.0; those map to truncated / terminated.
    Seeding: all task randomness (initial state, targets) flows from `task._random`,
    which `reset(seed)` replaces with a fresh `RandomState(seed)`.
    """

    def __init__(self, env_id: str, *, seed: int | None = None, obs_format: str = "flat", **task_kwargs):
        self._obs_format = check_obs_format(obs_format)
        domain, task = parse_dmc_id(env_id)
        self._env = suite.load(domain, task, task_kwargs={"random": seed, **task_kwargs})

        bounds = self._env.action_spec()
        self._low, self._high = check_action_bounds(bounds.minimum, bounds.maximum)
        self._layout = ObservationLayout({k: v.shape for k, v in self._env.observation_spec().items()})
        step_limit = self._env._step_limit  # float; inf when the task has no time limit
        self.spec = EnvSpec(
            env_id=env_id,
            observation=self._layout.spec(obs_format),
            action_dim=int(self._low.size),
            action_low=self._low.astype(np.float32),
            action_high=self._high.astype(np.float32),
            control_period=float(self._env.control_timestep()),
            # dm_control ends the episode at the first step count >= step_limit.
            max_episode_steps=None if math.isinf(step_limit) else math.ceil(step_limit),
            action_repeat=1,
            action_names=_actuator_names(self._env.physics, int(self._low.size)),
            obs_layout=self._layout.components(),
        )
        self._needs_reset = True
        self._closed = False

    @property
    def dm_env(self):
        """The wrapped `dm_control.rl.control.Environment` (physics at `.physics`)."""
        return self._env

    def reset(self, seed: int | None = None):
        self._check_open()
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        time_step = self._env.reset()
        self._needs_reset = False
        return self._layout.format(time_step.observation, self._obs_format)

    def step(self, action: np.ndarray) -> StepResult:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        applied = normalized_to_physical(action, self._low, self._high)
        time_step = self._env.step(applied)

        at_time_limit = time_step.last() and self._env._step_count >= self._env._step_limit
        if at_time_limit:
            # dm_control reports discount 1.0 at the time limit even when the task also
            # terminated on that very step; ask the task so a real ending isn't hidden.
            terminated = self._env.task.get_termination(self._env.physics) == 0.0
        else:
            terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        self._needs_reset = time_step.last()
        return StepResult(
            obs=self._layout.format(time_step.observation, self._obs_format),
            reward=float(time_step.reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info={"applied_action": applied, "discount": float(time_step.discount)},
        )

    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        self._check_open()
        frame = self._env.physics.render(height=height, width=width, camera_id=camera)
        # physics.render flips rows and may return a view; hand out an owned array.
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()
            self._env.physics.free()  # releases the (EGL/OSMesa) rendering context now

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.env_id} has been closed")


def _actuator_names(physics, action_dim: int) -> tuple[str, ...]:
    """MuJoCo actuator names in action order; unnamed actuators become action_<i>."""
    model = physics.model
    if model.nu != action_dim:
        return ()
    return tuple(model.id2name(i, "actuator") or f"action_{i}" for i in range(action_dim))
