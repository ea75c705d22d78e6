"""Backend-independent environment interface shared by training, export and deployment.

Every environment in rlcontrol, whatever simulator sits behind it, is driven through
`Env`: the agent always sends *normalized* actions in [-1, 1]^action_dim and the
environment maps them affinely onto the task's physical actuator bounds. Keeping that
mapping here (`scale_action` / `unscale_action`) lets the ONNX export and the ROS 2
nodes reproduce exactly what the simulator did.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

Observation = np.ndarray | dict[str, np.ndarray]

OBS_FORMATS = ("flat", "dict")


class UnknownEnvError(ValueError):
    """An environment id that no backend or registered task recognises.

    The message names the id, lists the valid prefixes and, where possible, suggests
    the nearest valid id. Re-exported as `envs.registry.UnknownEnvError`.
    """


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one observation array (no batch dimension)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        # Normalise so that specs compare equal however they were written
        # (list vs tuple shape, "float32" vs np.float32 dtype).
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


@dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment as the agent sees it (after all wrappers).

    `observation` is an `ArraySpec` for obs_format="flat" and an ordered
    dict of `ArraySpec` for obs_format="dict" (and always for pixel observations).
    `action_low`/`action_high` are the *physical* bounds, float32 of shape (action_dim,);
    the agent itself always acts in [-1, 1]^action_dim.
    """

    env_id: str
    observation: ArraySpec | dict[str, ArraySpec]
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    control_period: float  # seconds of simulated time per agent step, action repeat included
    max_episode_steps: int | None  # agent steps until time-limit truncation; None if unbounded
    action_repeat: int
    # Actuator names in action order (deploy nodes match commands to joints by name);
    # "action_0", "action_1", ... when the simulator names none.
    action_names: tuple[str, ...] = ()
    # Named parts of the flat observation vector in concatenation order, as (name, shape):
    # what an exported policy declares so a robot can assemble the vector from its sensors.
    obs_layout: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        # Read-only float32 copies: a caller editing spec.action_low must not be able to
        # change what other holders of this spec (exporters, deploy nodes) see.
        for name in ("action_low", "action_high"):
            bound = np.array(getattr(self, name), dtype=np.float32, copy=True).reshape(-1)
            if bound.shape != (self.action_dim,):
                raise ValueError(f"{name} must have shape ({self.action_dim},), got {bound.shape}")
            bound.setflags(write=False)
            object.__setattr__(self, name, bound)
        names = tuple(str(n) for n in self.action_names) or tuple(f"action_{i}" for i in range(self.action_dim))
        if len(names) != self.action_dim:
            raise ValueError(f"action_names has {len(names)} entries for {self.action_dim} actions")
        object.__setattr__(self, "action_names", names)
        object.__setattr__(self, "obs_layout",
                           tuple((str(k), tuple(int(d) for d in shape)) for k, shape in self.obs_layout))

    # The generated __eq__/__hash__ would compare/hash ndarrays, which raise; compare
    # bounds by value and hash only the scalar fields instead.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnvSpec):
            return NotImplemented
        return all(
            np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs
            for mine, theirs in zip(_field_values(self), _field_values(other), strict=True)
        )

    def __hash__(self) -> int:
        return hash(
            (self.env_id, self.action_dim, self.control_period, self.max_episode_steps, self.action_repeat)
        )


def _field_values(spec: EnvSpec) -> list[Any]:
    return [getattr(spec, f.name) for f in fields(spec)]


@dataclass
class StepResult:
    """Outcome of one agent step.

    `reward` is summed over the repeated sub-steps. `terminated` marks a true end of
    the MDP (do not bootstrap); `truncated` marks a time limit (bootstrap through it).
    """

    obs: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict = field(default_factory=dict)


class Env(abc.ABC):
    """An episodic continuous-control task with normalized actions.

    Contract shared by every implementation:
      * `reset(seed)` reseeds all task randomness; `seed=None` continues the current
        RNG stream (the first reset after construction uses the construction seed).
      * `step(action)` takes an action in [-1, 1]^action_dim; out-of-range entries are
        clipped, non-finite entries or a wrong size raise `ValueError`.
      * `step` before the first `reset`, or after an episode ended, raises RuntimeError
        (no silent auto-reset: a trainer must see where episodes begin).
      * Returned observations are fresh float32 arrays (uint8 for pixels) that never
        alias internal buffers, so callers may keep or mutate them.
      * `StepResult.info["applied_action"]` is the physical action (shape (action_dim,))
        the simulator received, so logs and sim-to-real checks see real units.
    """

    spec: EnvSpec

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> Observation:
        """Starts a new episode and returns its first observation."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Advances one agent step with a normalized action of shape (action_dim,)."""

    @abc.abstractmethod
    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        """Returns an RGB image, uint8 of shape (height, width, 3)."""

    def close(self) -> None:  # noqa: B027 - optional hook: envs without resources need not override
        """Releases simulator and rendering resources; the env is unusable afterwards."""

    @property
    def unwrapped(self) -> Env:
        """The innermost environment (the simulator backend), for inspection in tests."""
        return self

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- actions


def scale_action(a_norm: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps a normalized action in [-1, 1] affinely onto [low, high].

    Written as a linear interpolation `low * (1 - t) + high * t` with t = (a + 1) / 2
    so that -1 and +1 land *exactly* on `low` and `high` (the form `low + t * (high - low)`
    can miss `high` by one ulp). No clipping happens here.
    """
    a_norm = np.asarray(a_norm)
    t = (a_norm + 1.0) * 0.5
    return np.asarray(low) * (1.0 - t) + np.asarray(high) * t


def unscale_action(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Inverse of `scale_action`: maps a physical action in [low, high] onto [-1, 1]."""
    low = np.asarray(low)
    high = np.asarray(high)
    return 2.0 * (np.asarray(a) - low) / (high - low) - 1.0


def check_action_bounds(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates physical bounds and returns them as flat float64 arrays.

    Raises ValueError for infinite or inverted bounds, which an affine map can't use.
    """
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if low.shape != high.shape:
        raise ValueError(f"action bounds differ in shape: {low.shape} vs {high.shape}")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            f"action bounds must be finite to map normalized actions onto them; got low={low}, high={high}"
        )
    if np.any(high < low):
        raise ValueError(f"action bounds are inverted: low={low}, high={high}")
    return low, high


def normalized_to_physical(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Validates, clips and scales one normalized agent action.

    Args:
      action: array-like with low.size elements (any shape that flattens to that).
      low, high: physical bounds, shape (action_dim,).
    Returns:
      float64 physical action of shape (action_dim,), inside [low, high].
    Raises:
      ValueError: wrong number of elements or any NaN/inf entry. Non-finite actions are
        rejected rather than clipped because they almost always signal a diverged policy.
    """
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != low.shape:
        raise ValueError(f"expected an action with {low.size} elements, got shape {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action contains non-finite values: {action}")
    return scale_action(np.clip(action, -1.0, 1.0), low, high)


# ---------------------------------------------------------------------- observations


def check_obs_format(obs_format: str) -> str:
    if obs_format not in OBS_FORMATS:
        raise ValueError(f"obs_format must be one of {OBS_FORMATS}, got {obs_format!r}")
    return obs_format


class ObservationLayout:
    """Turns a simulator's named observation arrays into the agent-facing format.

    Built from an ordered mapping name -> native shape. The order given here is the
    documented order of the flat vector: entries are flattened (scalars become
    length-1) and concatenated in that order. Every returned array is a new float32
    array, never a view of simulator memory.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        if not shapes:
            raise ValueError("an observation needs at least one entry")
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(int(d) for d in s) for k, s in shapes.items()}
        self.flat_size = int(sum(int(np.prod(s)) for s in self.shapes.values()))

    def spec(self, obs_format: str) -> ArraySpec | dict[str, ArraySpec]:
        f32 = np.dtype(np.float32)
        if check_obs_format(obs_format) == "flat":
            return ArraySpec((self.flat_size,), f32)
        return {name: ArraySpec(shape, f32) for name, shape in self.shapes.items()}

    def components(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(name, shape) of each entry, in flat-vector order (EnvSpec.obs_layout)."""
        return tuple(self.shapes.items())

    def format(self, named: Mapping[str, Any], obs_format: str) -> Observation:
        if obs_format == "flat":
            # np.concatenate always allocates, so the result never aliases `named`.
            parts = [np.asarray(named[name], dtype=np.float32).reshape(-1) for name in self.shapes]
            return np.concatenate(parts)
        return {
            name: np.array(named[name], dtype=np.float32, copy=True).reshape(shape)
            for name, shape in self.shapes.items()
        }
