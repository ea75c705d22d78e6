"""Row-packed circular storage: all fields of a transition side by side in one row per dtype.

Why packed: sampling is a random gather from a large table, so its cost is memory latency per
row fetched. With one tensor per field, a batch of 256 from a 1M buffer touches 256 x (number of
fields) scattered places; with the fields of a transition packed into one row (42 float32 =
168 bytes for 17-dim obs and 6-dim actions) it touches 256, and the gather is one ``index_select``
per dtype group instead of one per field.

Sampled fields are column views of the gathered (B, width) block: (B, *shape) tensors whose rows
are ``width`` elements apart. Matmuls, elementwise ops and ``torch.cat`` take them as they are;
call ``.contiguous()`` before ``.view`` on one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlcontrol.replay.obs_layout import ObsPart


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """Zero-copy view of a numpy value (copying only arrays torch cannot view: read-only or with
    negative strides), or the tensor itself."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):
        array = np.array(array)
    try:
        return torch.from_numpy(array)
    except TypeError as error:
        raise ValueError(f"{name}: cannot store a value of dtype {array.dtype}") from error


@dataclass(frozen=True)
class _Column:
    """Where a field lives: columns ``start:stop`` of the ``dtype`` group, reshaped to ``shape``."""

    dtype: torch.dtype
    start: int
    stop: int
    shape: tuple[int, ...]


class PackedStorage:
    """``capacity`` rows of the given fields, grouped by dtype into (capacity, width) tensors.

    ``fields``: field name -> per-row shape and dtype. Rows are addressed by index; the circular
    bookkeeping (size, write position) belongs to the buffer.
    """

    def __init__(self, capacity: int, fields: Mapping[str, ObsPart], device: torch.device) -> None:
        self._columns: dict[str, _Column] = {}
        widths: dict[torch.dtype, int] = {}
        for name, part in fields.items():
            start = widths.get(part.dtype, 0)
            stop = start + math.prod(part.shape)
            self._columns[name] = _Column(part.dtype, start, stop, part.shape)
            widths[part.dtype] = stop
        # torch.empty: rows are only read after being written, and never-written pages of a large
        # buffer are never committed to memory.
        self._groups = {
            dtype: torch.empty((capacity, width), dtype=dtype, device=device)
            for dtype, width in widths.items()
        }
        # On the CPU, single-row writes go through numpy views of the same memory: a numpy
        # assignment costs ~1 us where a torch row copy costs several (bfloat16 has no numpy twin).
        self._host_views = {
            dtype: group.numpy()
            for dtype, group in self._groups.items()
            if device.type == "cpu" and dtype != torch.bfloat16
        }

    @property
    def field_names(self) -> list[str]:
        return list(self._columns)

    def write_row(self, index: int, values: Mapping[str, np.ndarray | torch.Tensor]) -> None:
        """Write one row; ``values[name]`` has the field's shape (already validated)."""
        for name, value in values.items():
            column = self._columns[name]
            host = self._host_views.get(column.dtype)
            if host is not None:
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().numpy()
                host[index, column.start : column.stop] = np.reshape(value, -1)
            else:
                row = self._groups[column.dtype][index, column.start : column.stop]
                row.copy_(as_tensor(value, name).reshape(-1))

    def write_rows(self, start: int, values: Mapping[str, torch.Tensor]) -> None:
        """Write K consecutive rows ``start..start+K-1`` (no wraparound); ``values[name]`` is
        (K, *field shape)."""
        for name, value in values.items():
            column = self._columns[name]
            count = value.shape[0]
            target = self._groups[column.dtype][start : start + count, column.start : column.stop]
            target.copy_(value.reshape(count, column.stop - column.start))

    def gather(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``indices`` (int64 (B,), on the storage device) -> field name -> (B, *shape) views."""
        blocks = {dtype: group.index_select(0, indices) for dtype, group in self._groups.items()}
        # One torch call per field where possible (each costs a few us at this size).
        fields = {}
        for name, c in self._columns.items():
            block = blocks[c.dtype]
            if not c.shape:
                fields[name] = block.select(1, c.start)
            elif len(c.shape) == 1:
                fields[name] = block[:, c.start : c.stop]
            else:
                fields[name] = block[:, c.start : c.stop].view(indices.shape[0], *c.shape)
        return fields

    def read_field(self, name: str, count: int) -> torch.Tensor:
        """Rows ``0..count-1`` of one field as a contiguous copy, (count, *shape)."""
        c = self._columns[name]
        return self._groups[c.dtype][:count, c.start : c.stop].reshape(count, *c.shape).contiguous()
