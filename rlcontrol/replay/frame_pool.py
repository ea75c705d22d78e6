"""Pixel replay that stores every uint8 camera frame once.

A plain :class:`ReplayBuffer` stores ``obs`` and ``next_obs`` images as two full copies per row
(2 x 12,288 bytes at 64x64x3: 24.6 GB for 1M transitions; k times more with k-frame stacks). Here
each image part has a :class:`FramePool` of single frames with global, increasing int64 ids (frame
``i`` in slot ``i % pool_capacity``), and a row stores 2k ids (k for ``obs``, k for ``next_obs``).

Dedup on add: a frame is looked up (CRC-32, confirmed by exact comparison) among the frames of the
last ``recent_frames`` ids. An n-step ``obs`` was written shortly before as an earlier row's
``next_obs`` and overlapping stacks share k-1 frames, so a T-step episode writes T+1 frames.

No dangling references: reused ids are at most ``recent_frames`` older than the row's *birth* (its
pool's ``next_id`` when written), so a row has all its frames while ``birth >= next_id -
pool_capacity + recent_frames``. Births grow in write order: the valid rows are always the newest
``len(self)`` of the ring, and older ones leave sampling as the pool overwrites their frames. The
default pool (``capacity * 17/16`` + a little) fits ~1 frame per row plus one per episode of >= 16
steps; rows sharing no frames (random obs/next_obs pairs) need 2 and keep ~half of ``capacity``.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from rlcontrol.replay.buffer import Batch, ReplayBuffer
from rlcontrol.replay.obs_layout import FIELD_SEPARATOR, ObsLayout, ObsPart
from rlcontrol.replay.packed_storage import PackedStorage
from rlcontrol.replay.prioritized import PrioritizedReplayBuffer

RECENT_FRAMES = 64
FRAMES_KEY, BIRTH_KEY, IDS_KEY = "frames", "frame_birth", "frame_ids"


@dataclass(frozen=True)
class ImagePart:
    """An observation part kept in a frame pool: ``frames`` (k) frames of ``frame_shape`` (C, H, W)
    stacked along dim 0, i.e. the part is (k*C, H, W)."""

    name: str | None  # layout part name (None for a flat image observation)
    frames: int
    frame_shape: tuple[int, ...]
    pool_capacity: int
    obs_field: str  # the storage field names of the images (see ObsLayout.field_name)
    next_field: str

    key: str  # the part's name in saved tensor names and metadata ("obs" for a flat image)
    ids_field: str  # the storage field of its 2k frame ids
    frame_bytes: int


def _is_image(part: ObsPart) -> bool:
    return part.dtype == torch.uint8 and len(part.shape) >= 2


def has_image_parts(obs_spec: Any, obs_dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``obs_spec`` has uint8 parts of >= 2 dims (camera images), which a frame pool stores."""
    return any(_is_image(p) for p in ObsLayout.from_spec(obs_spec, obs_dtype).parts.values())


def _per_part(value: Any, name: str | None, default: Any) -> Any:
    """``value`` as given for every part, or looked up by part name (``""`` = flat) in a mapping."""
    if isinstance(value, Mapping):
        return value.get("" if name is None else name, default)
    return default if value is None else value


def image_parts(
    obs_spec: Any, layout: ObsLayout, capacity: int, frames_per_obs: Any, pool_capacity: Any, recent: int
) -> dict[str | None, ImagePart]:
    """The image parts of ``layout``. ``frames_per_obs`` (int, or part name -> int; default the
    spec's ``history`` attribute, else 1) splits a (k*C, H, W) stack into k frames of C channels.
    ``pool_capacity`` (int or mapping) defaults to ``capacity * 17/16 + 2 * (k + recent)``."""
    parts = {}
    for name, part in layout.parts.items():
        if not _is_image(part):
            continue
        raw = obs_spec[name] if isinstance(obs_spec, Mapping) else obs_spec
        k = int(_per_part(frames_per_obs, name, getattr(raw, "history", 1)))
        if k < 1 or part.shape[0] % k:
            raise ValueError(f"{name or 'obs'}: cannot split {part.shape} into {k} frames along dim 0")
        pool = int(_per_part(pool_capacity, name, capacity + capacity // 16 + 2 * (k + recent)))
        if pool < recent + 2 * k:  # one row's 2k fresh frames plus the reuse window must fit
            raise ValueError(f"pool_capacity {pool} < recent_frames + 2 * frames_per_obs = {recent + 2 * k}")
        frame_shape, key = (part.shape[0] // k, *part.shape[1:]), "obs" if name is None else name
        parts[name] = ImagePart(name, k, frame_shape, pool, layout.field_name("obs", name),
                                layout.field_name("next_obs", name), key, f"{IDS_KEY}{FIELD_SEPARATOR}{key}",
                                math.prod(frame_shape))
    return parts


class FramePool:
    """Circular uint8 storage of single frames, (pool_capacity, *frame_shape) on ``device``.

    Ids in ``[oldest_id, next_id)`` are present. ``torch.empty``: pages never written are never
    resident, so an oversized pool costs address space, not memory, until it wraps."""

    def __init__(self, frame_shape: tuple[int, ...], capacity: int, recent: int, device: torch.device) -> None:
        self.frame_shape, self.capacity, self.recent = tuple(frame_shape), int(capacity), int(recent)
        self.frames = torch.empty((self.capacity, *self.frame_shape), dtype=torch.uint8, device=device)
        self._host = self.frames.numpy() if device.type == "cpu" else None
        # Off the CPU, dedup compares against a host copy of the reuse window, not the device.
        self._mirror = None if self._host is not None else np.empty((self.recent, *self.frame_shape), np.uint8)
        self.next_id = 0
        self._recent_ids: OrderedDict[int, int] = OrderedDict()  # CRC-32 -> newest id, in id order

    @property
    def oldest_id(self) -> int:
        return max(0, self.next_id - self.capacity)

    @property
    def used(self) -> int:  # slots written so far (resident frames)
        return min(self.next_id, self.capacity)

    def _recent_frame(self, frame_id: int) -> np.ndarray:
        return self._host[frame_id % self.capacity] if self._host is not None else self._mirror[frame_id % self.recent]

    def intern(self, frame: np.ndarray) -> int:
        """Id of ``frame`` (C-contiguous uint8 ``frame_shape``): a recent identical frame's id, or a
        newly written one."""
        key = zlib.crc32(frame)
        found = self._recent_ids.get(key)
        if found is not None and found >= self.next_id - self.recent:
            if np.array_equal(self._recent_frame(found), frame):  # rule out a CRC collision
                return found
        frame_id = self.next_id
        if self._host is not None:
            self._host[frame_id % self.capacity] = frame
        else:
            self.frames[frame_id % self.capacity].copy_(torch.from_numpy(frame))
            self._mirror[frame_id % self.recent] = frame
        self.next_id += 1
        self._remember(key, frame_id)
        return frame_id

    def _remember(self, key: int, frame_id: int) -> None:
        self._recent_ids.pop(key, None)  # re-insert at the end: the dict stays in id order
        self._recent_ids[key] = frame_id
        while next(iter(self._recent_ids.values())) < self.next_id - self.recent:
            self._recent_ids.popitem(last=False)

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        """Frames ``ids`` (int64 (N,), on the pool's device) -> uint8 (N, *frame_shape)."""
        if ids.device.type == "cpu" and ids.numel() and int(ids.min()) < self.oldest_id:
            # Sampling only draws valid rows; this guards private-API readers of arbitrary rows.
            raise RuntimeError(f"frame {int(ids.min())} was overwritten (oldest kept: {self.oldest_id})")
        return self.frames.index_select(0, ids % self.capacity)

    def restore(self, frames: torch.Tensor, next_id: int) -> None:
        """Load ``frames`` (the first ``used`` slots, in slot order, CPU) saved at ``next_id``."""
        # A copy, not an adoption: tensors read from a file are private read-mostly mmaps (their
        # pages are reclaimable page cache), so the copy does not double resident memory.
        self.frames[: frames.shape[0]].copy_(frames.to(self.frames.device))
        self.next_id = int(next_id)
        self._recent_ids.clear()
        host = frames.numpy()
        for frame_id in range(max(self.oldest_id, self.next_id - self.recent), self.next_id):
            frame = host[frame_id % self.capacity]
            if self._mirror is not None:
                self._mirror[frame_id % self.recent] = frame
            self._remember(zlib.crc32(np.ascontiguousarray(frame)), frame_id)


def _host_array(value: Any) -> np.ndarray:
    return np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)


class FrameStorage:
    """A :class:`PackedStorage` look-alike: rows hold frame ids, and ``write_row``/``write_rows``
    take images (interned into the pools) while ``gather`` returns them. ``births[part]`` (int64
    (capacity,)) is each row's pool ``next_id`` before its frames were interned."""

    def __init__(self, rows: PackedStorage, parts: dict[str | None, ImagePart],
                 pools: dict[str | None, FramePool], capacity: int) -> None:
        self.rows, self.parts, self.pools = rows, parts, pools
        self.births = {name: np.zeros(capacity, np.int64) for name in parts}

    def _intern(self, name: str | None, obs: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """One row's two (k*C, H, W) stacks -> int64 (2k,) ids."""
        part, pool = self.parts[name], self.pools[name]
        stacks = (obs.reshape(part.frames, *part.frame_shape), next_obs.reshape(part.frames, *part.frame_shape))
        return np.array([pool.intern(frame) for stack in stacks for frame in stack], dtype=np.int64)

    def write_row(self, index: int, values: Mapping[str, Any]) -> None:
        """As :meth:`PackedStorage.write_row`, with images in the image fields."""
        values = dict(values)
        for name, part in self.parts.items():
            self.births[name][index] = self.pools[name].next_id
            obs, next_obs = _host_array(values.pop(part.obs_field)), _host_array(values.pop(part.next_field))
            values[part.ids_field] = self._intern(name, obs, next_obs)
        self.rows.write_row(index, values)

    def write_rows(self, start: int, values: Mapping[str, torch.Tensor]) -> None:
        """As :meth:`PackedStorage.write_rows`; restoring a state passes id fields through as they are."""
        values = dict(values)
        for name, part in self.parts.items():
            if part.obs_field not in values:
                continue
            obs, next_obs = _host_array(values.pop(part.obs_field)), _host_array(values.pop(part.next_field))
            ids = np.empty((len(obs), 2 * part.frames), np.int64)
            for row in range(len(obs)):  # in order: a later row may reuse an earlier row's frames
                self.births[name][start + row] = self.pools[name].next_id
                ids[row] = self._intern(name, obs[row], next_obs[row])
            values[part.ids_field] = torch.from_numpy(ids)
        self.rows.write_rows(start, values)

    def gather(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``indices`` (int64 (B,)) -> field -> (B, *shape); images are (B, k*C, H, W) uint8
        views of one ``index_select`` of 2k frames per row and part."""
        fields = self.rows.gather(indices)
        for name, part in self.parts.items():
            frames = self.pools[name].gather(fields.pop(part.ids_field).reshape(-1))  # obs ids, next_obs ids
            stacks = frames.view(indices.shape[0], 2, part.frames * part.frame_shape[0], *part.frame_shape[1:])
            fields[part.obs_field], fields[part.next_field] = stacks[:, 0], stacks[:, 1]
        return fields

    def read_field(self, name: str, count: int) -> torch.Tensor:
        return self.rows.read_field(name, count)


def _row_bytes(fields: Mapping[str, ObsPart], parts: Mapping) -> int:
    """Bytes of one transition row: packed fields plus one int64 birth per image part."""
    return sum(math.prod(p.shape) * p.dtype.itemsize for p in fields.values()) + 8 * len(parts)


def _tree_bytes(capacity: int) -> int:
    return 16 * (1 << (capacity - 1).bit_length())  # the sum tree's float64 heap: 2 x leaves


def _report(frames: int, rows: int, index: int, transitions: int) -> dict[str, float]:
    total = frames + rows + index
    return {"frames": frames, "rows": rows, "index": index, "total": total, "transitions": transitions,
            "bytes_per_transition": total / max(1, transitions)}


def _stored_fields(fields: dict[str, ObsPart], parts: Mapping[Any, ImagePart]) -> dict[str, ObsPart]:
    """Replace the image fields of ``fields`` by one int64 (2k,) id field per image part."""
    for part in parts.values():
        del fields[part.obs_field], fields[part.next_field]
        fields[part.ids_field] = ObsPart((2 * part.frames,), torch.int64)
    return fields


class FrameReplayBuffer(ReplayBuffer):
    """:class:`ReplayBuffer` whose uint8 image parts are stored once per frame in :class:`FramePool` s.

    Args (besides those of :class:`ReplayBuffer` / :class:`PrioritizedReplayBuffer`):
        frames_per_obs: k, frames stacked along dim 0 of an image part (int, or part name -> int;
            default the spec's ``history`` attribute, else 1).
        pool_capacity: frames per pool (int or part name -> int); default ``capacity * 17/16 +
            2 * (k + recent_frames)``.
        recent_frames: dedup window in frame ids (covers n-step lag and stack overlap).

    ``size``/``len()`` count valid transitions (the newest rows whose frames are all in the
    pools); the inherited ``_size`` counts written rows, as in :class:`ReplayBuffer`.
    """

    def __init__(self, capacity: int, obs_spec: Any, action_dim: int, *, frames_per_obs: Any = None,
                 pool_capacity: Any = None, recent_frames: int = RECENT_FRAMES, **kwargs: Any) -> None:
        if int(recent_frames) < 1:
            raise ValueError(f"recent_frames must be >= 1, got {recent_frames}")
        layout = ObsLayout.from_spec(obs_spec, kwargs.get("obs_dtype", torch.float32))
        # Set before ReplayBuffer.__init__, which calls _field_specs.
        self._recent_frames = int(recent_frames)
        self._image_parts = image_parts(obs_spec, layout, int(capacity), frames_per_obs, pool_capacity,
                                        self._recent_frames)
        if not self._image_parts:
            raise ValueError("FrameReplayBuffer needs an observation with uint8 image parts (C, H, W)")
        self._valid = 0
        super().__init__(capacity, obs_spec, action_dim, **kwargs)
        self._image_inputs = {field: layout.parts[p.name] for p in self._image_parts.values()
                              for field in (p.obs_field, p.next_field)}
        pools = {name: FramePool(p.frame_shape, p.pool_capacity, self._recent_frames, self._device)
                 for name, p in self._image_parts.items()}
        self._storage = FrameStorage(self._storage, self._image_parts, pools, self._capacity)

    def _field_specs(self) -> dict[str, ObsPart]:
        return _stored_fields(super()._field_specs(), self._image_parts)

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Number of valid (sampleable) transitions."""
        return self._valid

    def __len__(self) -> int:
        return self._valid

    @property
    def frame_pools(self) -> dict[str | None, FramePool]:
        """Part name -> its pool (read it, don't write it); ``next_id`` counts frames written."""
        return dict(self._storage.pools)

    def __repr__(self) -> str:
        frames = {p.key: self._storage.pools[name].next_id for name, p in self._image_parts.items()}
        return f"{super().__repr__()[:-1]}, valid={self._valid}, frames_written={frames})"

    # ------------------------------------------------------------------ validity
    def _check_value(self, name: str, shape: tuple[int, ...], is_uint8: bool, lead: tuple[int, ...]) -> None:
        part = self._image_inputs.get(name)
        if part is None:
            return super()._check_value(name, shape, is_uint8, lead)
        # Incoming pixels are checked against the image spec (storage holds their ids instead).
        if shape != lead + part.shape:
            raise ValueError(f"{name}: expected shape {lead + part.shape}, got {shape}")
        if not is_uint8:
            raise ValueError(f"{name}: stored as uint8, got non-uint8 values")

    def _oldest_valid(self, pos: int, valid: int) -> int:
        """Slot of the oldest valid row (rows are in write order from there on)."""
        return (pos - valid) % self._capacity

    def _is_valid(self, indices: np.ndarray) -> np.ndarray:
        """bool (B,): slot ``indices`` (int64 (B,)) holds a valid row."""
        offset = (indices - self._oldest_valid(self._pos, self._valid)) % self._capacity
        return (indices >= 0) & (indices < self._capacity) & (offset < self._valid)

    def _expired_prefix(self, births: np.ndarray, start: int, count: int, threshold: int) -> int:
        """How many of the ``count`` rows from slot ``start`` on (ring order, non-decreasing
        ``births``) have ``birth < threshold``: two binary searches, no copy."""
        if count == 0 or births[start] >= threshold:
            return 0  # the common case: nothing expired
        first = births[start : min(start + count, self._capacity)]
        expired = int(np.searchsorted(first, threshold, side="left"))
        if expired < len(first) or len(first) == count:
            return expired
        return expired + int(np.searchsorted(births[: count - len(first)], threshold, side="left"))

    def _on_write(self, indices: np.ndarray) -> None:
        super()._on_write(indices)
        self._valid = min(self._valid + len(indices), self._size)
        start = self._oldest_valid(self._pos, self._valid)
        expired = max(
            self._expired_prefix(self._storage.births[name], start, self._valid,
                                 pool.next_id - pool.capacity + self._recent_frames)
            for name, pool in self._storage.pools.items()
        )
        if expired:
            self._valid -= expired
            self._on_invalidate((start + np.arange(expired, dtype=np.int64)) % self._capacity)

    def _on_invalidate(self, slots: np.ndarray) -> None:
        """Hook: rows ``slots`` (int64 (K,)) lost a frame and left the valid suffix."""

    # ------------------------------------------------------------------ sampling
    # (The newest row is always valid, as pool_capacity >= recent_frames + 2k: len(self) > 0 once
    # anything was written, so ReplayBuffer._check_can_sample's test of the written rows suffices.)
    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` valid transitions drawn uniformly with replacement."""
        self._check_can_sample(batch_size)
        offsets = torch.randint(self._valid, (int(batch_size),), generator=self._generator)
        # With every row valid, draw slots directly: the indices ReplayBuffer would draw.
        start = 0 if self._valid == self._capacity else self._oldest_valid(self._pos, self._valid)
        indices = offsets if start == 0 else (offsets + start) % self._capacity
        return self._gather(indices, torch.ones(int(batch_size)))

    # ------------------------------------------------------------------ memory
    def memory_report(self) -> dict[str, float]:
        """Bytes actually written: ``frames`` (pool slots used), ``rows`` (id/field rows and
        births of written rows), ``index`` (sum tree), ``total``; ``transitions`` (valid) and
        ``bytes_per_transition`` = total / transitions."""
        frames = sum(self._storage.pools[name].used * p.frame_bytes for name, p in self._image_parts.items())
        index = _tree_bytes(self._capacity) if isinstance(self, PrioritizedReplayBuffer) else 0
        return _report(frames, self._size * _row_bytes(self._fields, self._image_parts), index, self._valid)

    def bytes_per_transition(self) -> float:
        """Resident bytes per valid transition (see :meth:`memory_report`)."""
        return self.memory_report()["bytes_per_transition"]

    @staticmethod
    def estimate(capacity: int, obs_spec: Any, action_dim: int, *, frames_per_obs: Any = None,
                 pool_capacity: Any = None, recent_frames: int = RECENT_FRAMES, prioritized: bool = False,
                 obs_dtype: torch.dtype = torch.float32) -> dict[str, float]:
        """Bytes a full buffer of ``capacity`` allocates (keys as :meth:`memory_report`)."""
        layout = ObsLayout.from_spec(obs_spec, obs_dtype)
        parts = image_parts(obs_spec, layout, capacity, frames_per_obs, pool_capacity, recent_frames)
        # ReplayBuffer._field_specs reads only these two attributes: reuse it rather than copy it.
        fields = ReplayBuffer._field_specs(SimpleNamespace(_layout=layout, _action_dim=int(action_dim)))
        frames = sum(p.pool_capacity * p.frame_bytes for p in parts.values())
        rows = capacity * _row_bytes(_stored_fields(fields, parts), parts)
        return _report(frames, rows, _tree_bytes(capacity) if prioritized else 0, capacity)

    # ------------------------------------------------------------------ state
    def _config_meta(self) -> dict:
        pools = {p.key: {"frames_per_obs": p.frames, "pool_capacity": p.pool_capacity}
                 for p in self._image_parts.values()}
        return {**super()._config_meta(), "frame_pools": pools, "recent_frames": self._recent_frames}

    def _expected_tensors(self, size: int) -> dict[str, ObsPart]:
        births = {f"{BIRTH_KEY}/{p.key}": ObsPart((size,), torch.int64) for p in self._image_parts.values()}
        return {**super()._expected_tensors(size), **births}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """As :meth:`ReplayBuffer.state_dict` (``size`` counts written rows), plus per image part
        ``frames/<part>`` (the pool's used slots in slot order: a view, no copy; includes frames
        only invalid rows reference), ``frame_birth/<part>`` (int64 (size,)), and in ``meta``
        ``valid`` (sampleable rows) and ``frame_next_ids``."""
        tensors, meta = super().state_dict()
        next_ids = {}
        for name, part in self._image_parts.items():
            pool = self._storage.pools[name]
            tensors[f"{FRAMES_KEY}/{part.key}"] = pool.frames[: pool.used]
            tensors[f"{BIRTH_KEY}/{part.key}"] = torch.from_numpy(self._storage.births[name][: self._size].copy())
            next_ids[part.key] = pool.next_id
        meta.update(valid=self._valid, frame_next_ids=next_ids)
        return tensors, meta

    def _validate_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        frame_keys = {f"{FRAMES_KEY}/{p.key}" for p in self._image_parts.values()}
        super()._validate_state({k: v for k, v in tensors.items() if k not in frame_keys}, meta)
        size, valid, next_ids = meta["size"], meta.get("valid"), meta.get("frame_next_ids")
        if not isinstance(valid, int) or not min(1, size) <= valid <= size:
            raise ValueError(f"bad valid count in replay state: {valid!r} (size {size})")
        if not isinstance(next_ids, dict) or next_ids.keys() != {p.key for p in self._image_parts.values()}:
            raise ValueError(f"bad frame_next_ids in replay state: {next_ids!r}")
        slots = (self._oldest_valid(meta["pos"], valid) + torch.arange(valid)) % self._capacity
        for part in self._image_parts.values():  # the saved pool fits and holds every valid row's frames
            next_id, frames = next_ids[part.key], tensors.get(f"{FRAMES_KEY}/{part.key}")
            if not isinstance(next_id, int) or next_id < 0:
                raise ValueError(f"bad frame next_id for {part.key!r} in replay state: {next_id!r}")
            shape = (min(next_id, part.pool_capacity), *part.frame_shape)
            if frames is None or tuple(frames.shape) != shape or frames.dtype != torch.uint8:
                raise ValueError(f"replay state tensor '{FRAMES_KEY}/{part.key}': expected {shape} uint8")
            births, ids = tensors[f"{BIRTH_KEY}/{part.key}"][slots], tensors[part.ids_field][slots]
            if valid and not (
                bool((births[1:] >= births[:-1]).all()) and int(births[-1]) <= next_id
                and int(births[0]) >= next_id - part.pool_capacity + self._recent_frames
                and int(ids.min()) >= max(0, next_id - part.pool_capacity) and int(ids.max()) < next_id
            ):
                raise ValueError(f"replay state rows reference frames of {part.key!r} outside the saved pool")

    def _restore_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        super()._restore_state(tensors, meta)
        for name, part in self._image_parts.items():
            self._storage.births[name][: meta["size"]] = tensors[f"{BIRTH_KEY}/{part.key}"].numpy()
            self._storage.pools[name].restore(tensors[f"{FRAMES_KEY}/{part.key}"], meta["frame_next_ids"][part.key])
        self._valid = meta["valid"]
        written = np.arange(meta["size"], dtype=np.int64)
        self._on_invalidate(written[~self._is_valid(written)])  # (a prioritized state has them at 0 already)

    @classmethod
    def _init_kwargs_from_meta(cls, meta: Mapping) -> dict:
        # Saved under ImagePart.key ("obs" for a flat image); the constructor wants "" for that.
        pools = {(k if meta["obs_layout"]["is_dict"] else ""): v for k, v in meta["frame_pools"].items()}
        return {
            **super()._init_kwargs_from_meta(meta),
            "frames_per_obs": {k: v["frames_per_obs"] for k, v in pools.items()},
            "pool_capacity": {k: v["pool_capacity"] for k, v in pools.items()},
            "recent_frames": meta["recent_frames"],
        }


class PrioritizedFrameReplayBuffer(FrameReplayBuffer, PrioritizedReplayBuffer):
    """:class:`PrioritizedReplayBuffer` with frame pools. Rows that leave the valid suffix get
    priority 0, so the sum tree can never return them."""

    # The tree already excludes invalid rows; FrameReplayBuffer.sample is the uniform one.
    sample = PrioritizedReplayBuffer.sample

    def _on_invalidate(self, slots: np.ndarray) -> None:
        if slots.size:
            self._tree.update(slots, 0.0)

    def update_priorities(self, indices: np.ndarray | torch.Tensor, td_abs: np.ndarray | torch.Tensor) -> None:
        """As :meth:`PrioritizedReplayBuffer.update_priorities`, but rows invalidated since they
        were sampled are skipped: a priority would make them sampleable again."""
        indices = torch.as_tensor(indices).detach().cpu().numpy().astype(np.int64).reshape(-1)
        td_abs = td_abs.reshape(-1) if isinstance(td_abs, torch.Tensor) else np.asarray(td_abs).reshape(-1)
        if indices.shape == td_abs.shape:  # (else the base class raises)
            # Indices outside the written rows stay in, so that the base class raises IndexError.
            keep = self._is_valid(indices) | (indices < 0) | (indices >= self._size)
            indices, td_abs = indices[keep], td_abs[keep]  # (numpy bool masks index tensors too)
        super().update_priorities(indices, td_abs)
