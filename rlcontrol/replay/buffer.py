"""Uniform experience replay: preallocated circular torch storage of n-step transitions.

Transitions arrive already n-step aggregated (see :mod:`rlcontrol.replay.nstep`), so a sampled
batch gives the learner its target directly: ``reward + discount * Q'(next_obs, .)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlcontrol.replay.obs_layout import Observation, ObsLayout, ObsPart
from rlcontrol.replay.packed_storage import PackedStorage, as_tensor
from rlcontrol.replay.safetensors_io import atomic_save, read_checked

TRANSITION_KEYS = frozenset({"obs", "action", "reward", "discount", "next_obs"})
FORMAT_VERSION = 1
RNG_STATE_KEY = "rng_state"
_SCALAR_FIELDS = ("reward", "discount")


@dataclass(frozen=True, slots=True)
class Batch:
    """A sampled minibatch. B = batch size, A = action_dim; every tensor is on the buffer's device.

    obs:      (B, *obs_shape) tensor, or dict part name -> (B, *part_shape). Parts stored as uint8
              (pixels) come back as uint8; everything else in the buffer's ``obs_dtype``.
    action:   (B, A) float32.
    reward:   (B,) float32, the n-step return ``sum_{k<m} gamma^k r_{t+k}``.
    discount: (B,) float32, ``gamma^m``, or 0 where the window ended at a termination.
    next_obs: like ``obs``: the observation ``m`` steps after ``obs``.
    weights:  (B,) float32 importance-sampling weights (all ones for uniform sampling).
    indices:  (B,) int64 storage indices of the sampled transitions (for ``update_priorities``).

    The obs/action/reward/discount/next_obs tensors are views into one gathered block per dtype
    (see :mod:`rlcontrol.replay.packed_storage`), so they may be non-contiguous: fine for matmuls,
    elementwise ops and ``torch.cat``; call ``.contiguous()`` before ``.view()``.
    """

    obs: Observation
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: Observation
    weights: torch.Tensor
    indices: torch.Tensor


class ReplayBuffer:
    """Preallocated circular storage of n-step transitions as torch tensors (CPU by default).

    Args:
        capacity: maximum number of transitions; when full, the oldest is overwritten.
        obs_spec: shape tuple for a flat observation, an object with ``.shape``/``.dtype`` (such as
            ``envs.core.ArraySpec``), or a dict of either for named observation parts. uint8 parts
            are stored as uint8; all others as ``obs_dtype``.
        action_dim: A, the action size; actions are stored as float32 (A,).
        device: where storage lives and batches are returned.
        seed: seeds the buffer's own ``torch.Generator`` (CPU), so sampling is reproducible and
            independent of the global RNG.
        obs_dtype: storage dtype of non-uint8 observation parts.

    A transition is a dict with keys ``obs``, ``action`` (A,), ``reward`` (scalar),
    ``discount`` (scalar), ``next_obs`` (numpy arrays or tensors; dict observations as dicts).
    """

    def __init__(
        self,
        capacity: int,
        obs_spec: Any,
        action_dim: int,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if int(action_dim) < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self._capacity = int(capacity)
        self._action_dim = int(action_dim)
        self._layout = ObsLayout.from_spec(obs_spec, obs_dtype)
        self._device = torch.device(device)
        self._seed = int(seed)
        # Indices are always drawn on the CPU so a seed gives the same batches on every device.
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self._seed)
        self._fields = self._field_specs()
        self._storage = PackedStorage(self._capacity, self._fields, self._device)
        self._size = 0
        self._pos = 0

    def _field_specs(self) -> dict[str, ObsPart]:
        """Storage field name -> per-transition (shape, dtype)."""
        return {
            **self._layout.fields("obs"),
            "action": ObsPart((self._action_dim,), torch.float32),
            "reward": ObsPart((), torch.float32),
            "discount": ObsPart((), torch.float32),
            **self._layout.fields("next_obs"),
        }

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def size(self) -> int:
        """Number of stored transitions (<= capacity)."""
        return self._size

    @property
    def pos(self) -> int:
        """Storage index the next transition is written to."""
        return self._pos

    @property
    def action_dim(self) -> int:
        return self._action_dim

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def obs_layout(self) -> ObsLayout:
        return self._layout

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self._size}, capacity={self._capacity}, "
            f"obs={self._layout.spec()}, action_dim={self._action_dim}, device={self._device})"
        )

    # ------------------------------------------------------------------ writing
    def _field_values(self, transition: Mapping) -> dict[str, Any]:
        """Transition dict -> ``{storage field: value}``; checks the keys and observation parts."""
        if not isinstance(transition, Mapping):
            raise ValueError(f"a transition must be a dict with keys {sorted(TRANSITION_KEYS)}")
        if transition.keys() != TRANSITION_KEYS:
            missing = sorted(TRANSITION_KEYS - transition.keys())
            unexpected = sorted(transition.keys() - TRANSITION_KEYS)
            raise ValueError(f"transition keys: missing {missing}, unexpected {unexpected}")
        return {
            **self._layout.split("obs", transition["obs"]),
            "action": transition["action"],
            "reward": transition["reward"],
            "discount": transition["discount"],
            **self._layout.split("next_obs", transition["next_obs"]),
        }

    def _check_value(self, name: str, shape: tuple[int, ...], is_uint8: bool, lead: tuple[int, ...]) -> None:
        """Raise ValueError unless a value of ``shape`` fits field ``name`` (with leading dims ``lead``)."""
        part = self._fields[name]
        expected = lead + part.shape
        scalar_alias = not lead and name in _SCALAR_FIELDS and shape == (1,)  # accept (1,) for a scalar
        if shape != expected and not scalar_alias:
            raise ValueError(f"{name}: expected shape {expected}, got {shape}")
        # Casting floats to uint8 would silently turn normalised pixels in [0, 1] into zeros.
        if part.dtype == torch.uint8 and not is_uint8:
            raise ValueError(f"{name}: stored as uint8, got non-uint8 values")

    def _to_field_tensors(self, transitions: Mapping, count: int) -> dict[str, torch.Tensor]:
        """Validate a batch of ``count`` transitions -> ``{field: (count, *field shape) tensor}``
        (not yet cast to the storage dtype)."""
        tensors = {}
        for name, value in self._field_values(transitions).items():
            tensor = as_tensor(value, name)
            self._check_value(name, tuple(tensor.shape), tensor.dtype == torch.uint8, (count,))
            tensors[name] = tensor
        return tensors

    def _advance(self, count: int) -> None:
        self._pos = (self._pos + count) % self._capacity
        self._size = min(self._size + count, self._capacity)

    def _on_write(self, indices: np.ndarray) -> None:
        """Hook called after ``indices`` (int64, (K,)) were (over)written; used by prioritized replay."""

    def add(self, transition: Mapping) -> int:
        """Store one transition (see the class docstring); returns its storage index."""
        values = self._field_values(transition)
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                value = values[name] = np.asarray(value)
            self._check_value(name, tuple(value.shape), value.dtype in (np.uint8, torch.uint8), ())
        index = self._pos
        self._storage.write_row(index, values)
        self._advance(1)
        self._on_write(np.array([index], dtype=np.int64))
        return index

    def add_batch(self, transitions: Mapping) -> np.ndarray:
        """Store K transitions given as one dict whose values have a leading dim K (reward and
        discount (K,), action (K, A), ...); returns their storage indices, int64 (K,)."""
        if not isinstance(transitions, Mapping) or "reward" not in transitions:
            raise ValueError(f"add_batch needs a dict with keys {sorted(TRANSITION_KEYS)}")
        reward_shape = tuple(np.shape(transitions["reward"]))
        if len(reward_shape) != 1:
            raise ValueError(f"reward: expected shape (K,) for a batch, got {reward_shape}")
        count = reward_shape[0]
        if count > self._capacity:
            raise ValueError(
                f"cannot add {count} transitions at once to a buffer of capacity {self._capacity}"
            )
        tensors = self._to_field_tensors(transitions, count)
        indices = (self._pos + np.arange(count, dtype=np.int64)) % self._capacity
        if count == 0:
            return indices
        # Two slice copies (before and after the wrap) instead of a scatter.
        first = min(count, self._capacity - self._pos)
        self._storage.write_rows(self._pos, {name: t[:first] for name, t in tensors.items()})
        if first < count:
            self._storage.write_rows(0, {name: t[first:] for name, t in tensors.items()})
        self._advance(count)
        self._on_write(indices)
        return indices

    # ------------------------------------------------------------------ sampling
    def _check_can_sample(self, batch_size: int) -> None:
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def _gather(self, indices: torch.Tensor, weights: torch.Tensor) -> Batch:
        """Rows ``indices`` (int64 (B,), CPU) of every field as a :class:`Batch`; weights (B,)."""
        if self._device.type != "cpu":
            indices = indices.to(self._device, non_blocking=True)
            weights = weights.to(self._device, non_blocking=True)
        rows = self._storage.gather(indices)
        return Batch(
            obs=self._layout.join("obs", rows),
            action=rows["action"],
            reward=rows["reward"],
            discount=rows["discount"],
            next_obs=self._layout.join("next_obs", rows),
            weights=weights,
            indices=indices,
        )

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement from the filled part."""
        self._check_can_sample(batch_size)
        indices = torch.randint(self._size, (int(batch_size),), generator=self._generator)
        return self._gather(indices, torch.ones(int(batch_size)))

    # ------------------------------------------------------------------ state
    def _config_meta(self) -> dict:
        """What a saved state must agree on to be loaded into this buffer."""
        return {
            "class": type(self).__name__,
            "capacity": self._capacity,
            "action_dim": self._action_dim,
            "obs_layout": self._layout.to_json(),
        }

    def _expected_tensors(self, size: int) -> dict[str, ObsPart]:
        """Tensor name -> (full shape, dtype) that a state of ``size`` transitions must hold."""
        return {name: ObsPart((size, *part.shape), part.dtype) for name, part in self._fields.items()}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, meta)``: a copy of the filled rows of every field (``obs`` or ``obs/<part>``,
        ``action``, ``reward``, ``discount``, ``next_obs...``; (size, *shape) each, in storage order),
        ``rng_state`` (uint8 (S,)) and JSON-able configuration and progress (size, pos, ...)."""
        tensors = {name: self._storage.read_field(name, self._size) for name in self._fields}
        tensors[RNG_STATE_KEY] = self._generator.get_state()
        meta = {
            "format_version": FORMAT_VERSION,
            **self._config_meta(),
            "seed": self._seed,
            "size": self._size,
            "pos": self._pos,
        }
        return tensors, meta

    def _validate_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        """Raise ValueError unless (tensors, meta) is a state of a buffer configured like this one."""
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported replay format_version {meta.get('format_version')!r}")
        for key, mine in self._config_meta().items():
            if meta.get(key) != mine:
                raise ValueError(
                    f"replay state does not match this buffer: {key} is {meta.get(key)!r} in the state, {mine!r} here"
                )
        size, pos = meta.get("size"), meta.get("pos")
        if not isinstance(size, int) or not isinstance(pos, int) or not 0 <= size <= self._capacity:
            raise ValueError(f"bad size/pos in replay state: size={size!r}, pos={pos!r}")
        # Rows 0..size-1 are filled; until the buffer is full the write position is right after them.
        if (size < self._capacity and pos != size) or not 0 <= pos < self._capacity:
            raise ValueError(f"inconsistent replay state: size={size}, pos={pos}, capacity={self._capacity}")
        expected = self._expected_tensors(size)
        names = set(tensors) - {RNG_STATE_KEY}
        if names != expected.keys() or RNG_STATE_KEY not in tensors:
            raise ValueError(
                f"replay state tensors {sorted(tensors)} do not match the expected "
                f"{sorted([*expected, RNG_STATE_KEY])}"
            )
        for name, spec in expected.items():
            tensor = tensors[name]
            if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
                raise ValueError(
                    f"replay state tensor {name!r}: expected {spec.shape} {spec.dtype}, "
                    f"got {tuple(tensor.shape)} {tensor.dtype}"
                )
        rng_state = tensors[RNG_STATE_KEY]
        if rng_state.dtype != torch.uint8 or rng_state.dim() != 1:
            raise ValueError("replay state tensor 'rng_state' must be a 1-D uint8 tensor")

    def _restore_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        try:
            self._generator.set_state(tensors[RNG_STATE_KEY].cpu())
        except RuntimeError as error:
            raise ValueError(f"replay state has an invalid rng_state: {error}") from error
        size = meta["size"]
        self._storage.write_rows(0, {name: tensors[name].to(self._device) for name in self._fields})
        self._size, self._pos = size, meta["pos"]

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        """Restore a :meth:`state_dict`; validates everything before changing anything."""
        self._validate_state(tensors, meta)
        self._restore_state(tensors, meta)

    def save(self, path: str | os.PathLike) -> None:
        """Write the buffer to a safetensors file atomically (old file intact if this fails)."""
        tensors, meta = self.state_dict()
        atomic_save(tensors, meta, path)

    @classmethod
    def _init_kwargs_from_meta(cls, meta: Mapping) -> dict:
        layout = ObsLayout.from_json(meta["obs_layout"])
        return {
            "capacity": meta["capacity"],
            "obs_spec": layout.spec(),
            "action_dim": meta["action_dim"],
            "seed": meta["seed"],
            "obs_dtype": layout.obs_dtype,
        }

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> ReplayBuffer:
        """Rebuild a buffer saved with :meth:`save`. Raises ValueError for a file that is corrupted,
        truncated, of another buffer class, or inconsistent; FileNotFoundError if it is missing."""
        tensors, meta = read_checked(path)
        if meta.get("class") != cls.__name__:
            raise ValueError(f"{path}: holds a {meta.get('class')!r}, cannot load it as a {cls.__name__}")
        try:
            buffer = cls(**cls._init_kwargs_from_meta(meta), device=device)
            buffer.load_state_dict(tensors, meta)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: invalid replay state: {error}") from error
        return buffer
