"""Backend-independent wrappers that `envs.make` stacks on top of a simulator backend.

Stacking order used by `make` (innermost first):
  backend -> ActionRepeat -> TimeLimit -> PixelObservation
so the time limit counts agent steps (after action repeat) and pixels are rendered
once per agent step rather than once per physics sub-step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from envs.core import ArraySpec, Env, EnvSpec, StepResult


class Wrapper(Env):
    """Delegates everything to `inner`; subclasses override what they change."""

    def __init__(self, inner: Env):
        self.inner = inner
        self.spec: EnvSpec = inner.spec

    def reset(self, seed: int | None = None):
        return self.inner.reset(seed)

    def step(self, action: np.ndarray) -> StepResult:
        return self.inner.step(action)

    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        return self.inner.render(height, width, camera)

    def close(self) -> None:
        self.inner.close()

    @property
    def unwrapped(self) -> Env:
        return self.inner.unwrapped


class ActionRepeat(Wrapper):
    """Applies each agent action for `repeat` consecutive sub-steps.

    Rewards are summed; the loop stops early when the episode ends so no sub-step
    runs past a termination or time limit. `info` is the last sub-step's, plus
    "sub_steps" (how many ran). Spec: control_period x repeat, time limit
    ceil(limit / repeat) agent steps.
    """

    def __init__(self, inner: Env, repeat: int):
        if int(repeat) != repeat or repeat < 1:
            raise ValueError(f"action_repeat must be a positive integer, got {repeat!r}")
        super().__init__(inner)
        self.repeat = int(repeat)
        limit = inner.spec.max_episode_steps
        self.spec = dataclasses.replace(
            inner.spec,
            control_period=inner.spec.control_period * self.repeat,
            max_episode_steps=None if limit is None else math.ceil(limit / self.repeat),
            action_repeat=inner.spec.action_repeat * self.repeat,
        )

    def step(self, action: np.ndarray) -> StepResult:
        total_reward = 0.0
        sub_steps = 0
        while sub_steps < self.repeat:
            result = self.inner.step(action)
            sub_steps += 1
            total_reward += result.reward
            if result.terminated or result.truncated:
                break
        result.reward = total_reward
        result.info["sub_steps"] = sub_steps
        return result


class TimeLimit(Wrapper):
    """Truncates episodes after `max_episode_steps` agent steps.

    Only ever shortens episodes: the task's own limit (already in inner.spec) still
    applies, and the spec reports whichever comes first. A termination on the last
    step stays a termination (terminated wins; truncated is then False).
    """

    def __init__(self, inner: Env, max_episode_steps: int):
        if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        super().__init__(inner)
        own_limit = inner.spec.max_episode_steps
        self.max_episode_steps = int(max_episode_steps)
        if own_limit is not None:
            self.max_episode_steps = min(self.max_episode_steps, own_limit)
        self.spec = dataclasses.replace(inner.spec, max_episode_steps=self.max_episode_steps)
        self._elapsed_steps: int | None = None  # None until the first reset

    def reset(self, seed: int | None = None):
        obs = self.inner.reset(seed)
        self._elapsed_steps = 0
        return obs

    def step(self, action: np.ndarray) -> StepResult:
        if self._elapsed_steps is None or self._elapsed_steps >= self.max_episode_steps:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        result = self.inner.step(action)
        self._elapsed_steps += 1
        if self._elapsed_steps >= self.max_episode_steps and not result.terminated:
            result.truncated = True
        if result.terminated or result.truncated:
            self._elapsed_steps = self.max_episode_steps  # block stepping until reset
        return result


class PixelObservation(Wrapper):
    """Replaces observations with rendered frames.

    Observation: {"pixels": uint8 (3, size, size), channel-first as conv nets expect}
    plus, if `include_state`, {"state": float32 (n,)} - the inner env's flat
    observation, so the inner env must use obs_format="flat".
    """

    def __init__(self, inner: Env, size: int = 84, camera: int | str = 0, include_state: bool = False):
        if size < 1:
            raise ValueError(f"pixel_size must be positive, got {size}")
        if include_state and not isinstance(inner.spec.observation, ArraySpec):
            raise ValueError("include_state needs an inner env with obs_format='flat'")
        super().__init__(inner)
        self.size = int(size)
        self.camera = camera
        self.include_state = include_state
        observation = {"pixels": ArraySpec((3, self.size, self.size), np.dtype(np.uint8))}
        if include_state:
            observation["state"] = inner.spec.observation
        self.spec = dataclasses.replace(inner.spec, observation=observation, obs_layout=())

    def reset(self, seed: int | None = None):
        return self._observe(self.inner.reset(seed))

    def step(self, action: np.ndarray) -> StepResult:
        result = self.inner.step(action)
        result.obs = self._observe(result.obs)
        return result

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        frame = self.inner.render(self.size, self.size, self.camera)  # (H, W, 3)
        obs = {"pixels": np.ascontiguousarray(frame.transpose(2, 0, 1))}
        if self.include_state:
            obs["state"] = state
        return obs
