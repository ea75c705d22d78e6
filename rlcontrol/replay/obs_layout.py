"""How observations are laid out in replay storage: one flat part, or several named parts.

Everything that touches observation structure (spec parsing, turning an observation into storage
fields and back, the JSON form saved with a buffer) lives here, so the buffer itself only deals with
a flat ``field name -> tensor`` mapping.

Field names: a flat observation is stored in the fields ``"obs"`` and ``"next_obs"``; a dict
observation with parts ``{"joints": ..., "camera": ...}`` in ``"obs/joints"``, ``"obs/camera"``,
``"next_obs/joints"``, ``"next_obs/camera"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Observation = torch.Tensor | dict[str, torch.Tensor]

FIELD_SEPARATOR = "/"

# dtype names as written to JSON metadata; anything else is refused on load.
_DTYPES_BY_NAME = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "uint8": torch.uint8,
}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32 -> "float32"`` (the name used in saved metadata)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    if name not in _DTYPES_BY_NAME:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {sorted(_DTYPES_BY_NAME)}")
    return _DTYPES_BY_NAME[name]


@dataclass(frozen=True)
class ObsPart:
    """One stored observation part: per-transition ``shape`` and the storage ``dtype``."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def _is_uint8(dtype: Any) -> bool:
    if dtype is None:
        return False
    if isinstance(dtype, torch.dtype):
        return dtype == torch.uint8
    try:
        return np.dtype(dtype) == np.uint8
    except TypeError:
        return False


def _parse_shape(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        parsed = tuple(int(d) for d in shape)
    except TypeError as error:
        raise ValueError(f"{what}: expected a shape tuple, got {shape!r}") from error
    if any(d < 0 for d in parsed):
        raise ValueError(f"{what}: negative dimension in shape {parsed}")
    return parsed


def _parse_part(spec: Any, obs_dtype: torch.dtype, what: str) -> ObsPart:
    """A part is a shape tuple (stored as ``obs_dtype``) or an object with ``.shape``/``.dtype``
    (an ``envs.core.ArraySpec``, a numpy array...). uint8 parts stay uint8 (pixels: 4x smaller
    than float32); every other dtype is stored as ``obs_dtype`` (float64 sim readings as float32)."""
    if hasattr(spec, "shape"):
        shape = _parse_shape(spec.shape, what)
        dtype = torch.uint8 if _is_uint8(getattr(spec, "dtype", None)) else obs_dtype
        return ObsPart(shape, dtype)
    return ObsPart(_parse_shape(spec, what), obs_dtype)


@dataclass(frozen=True)
class ObsLayout:
    """The stored observation structure.

    ``parts`` maps part name to :class:`ObsPart`; a flat (non-dict) observation is the single
    part named ``None``.
    """

    parts: dict[str | None, ObsPart]
    obs_dtype: torch.dtype

    @classmethod
    def from_spec(cls, obs_spec: Any, obs_dtype: torch.dtype = torch.float32) -> ObsLayout:
        """``obs_spec``: a shape tuple, an object with ``.shape``/``.dtype``, or a dict of either."""
        if not obs_dtype.is_floating_point:
            raise ValueError(f"obs_dtype must be a floating dtype, got {obs_dtype}")
        if isinstance(obs_spec, Mapping):
            if not obs_spec:
                raise ValueError("obs_spec dict is empty")
            parts: dict[str | None, ObsPart] = {}
            for name, part_spec in obs_spec.items():
                if not isinstance(name, str) or not name or FIELD_SEPARATOR in name:
                    raise ValueError(
                        f"observation part names must be non-empty strings without "
                        f"{FIELD_SEPARATOR!r}, got {name!r}"
                    )
                parts[name] = _parse_part(part_spec, obs_dtype, f"obs_spec[{name!r}]")
            return cls(parts, obs_dtype)
        return cls({None: _parse_part(obs_spec, obs_dtype, "obs_spec")}, obs_dtype)

    @property
    def is_dict(self) -> bool:
        return None not in self.parts

    def field_name(self, prefix: str, part_name: str | None) -> str:
        return prefix if part_name is None else f"{prefix}{FIELD_SEPARATOR}{part_name}"

    def fields(self, prefix: str) -> dict[str, ObsPart]:
        """Storage fields for ``prefix`` ("obs" or "next_obs"): field name -> part."""
        return {self.field_name(prefix, name): part for name, part in self.parts.items()}

    def split(self, prefix: str, obs: Any) -> dict[str, Any]:
        """Observation (array or dict of arrays) -> ``{field name: array}``; checks the part names."""
        if not self.is_dict:
            if isinstance(obs, Mapping):
                raise ValueError(f"{prefix}: expected an array observation, got a dict")
            return {prefix: obs}
        if not isinstance(obs, Mapping):
            raise ValueError(f"{prefix}: expected a dict observation with parts {sorted(self.parts)}")
        if obs.keys() != self.parts.keys():
            raise ValueError(
                f"{prefix}: observation parts {sorted(obs)} do not match the spec {sorted(self.parts)}"
            )
        return {self.field_name(prefix, name): obs[name] for name in self.parts}

    def join(self, prefix: str, fields: Mapping[str, torch.Tensor]) -> Observation:
        """Inverse of :meth:`split` on storage rows: ``{field: (B, *shape)}`` -> obs (B, ...)."""
        if not self.is_dict:
            return fields[prefix]
        return {name: fields[self.field_name(prefix, name)] for name in self.parts}

    def spec(self) -> ObsPart | dict[str, ObsPart]:
        """An ``obs_spec`` that :meth:`from_spec` turns back into this layout."""
        return self.parts[None] if not self.is_dict else dict(self.parts)  # type: ignore[arg-type]

    def to_json(self) -> dict:
        parts = {
            ("" if name is None else name): {"shape": list(part.shape), "dtype": dtype_name(part.dtype)}
            for name, part in self.parts.items()
        }
        return {"is_dict": self.is_dict, "obs_dtype": dtype_name(self.obs_dtype), "parts": parts}

    @classmethod
    def from_json(cls, data: Mapping) -> ObsLayout:
        """Rebuild from :meth:`to_json`; raises ValueError (KeyError/TypeError wrapped) if malformed."""
        try:
            obs_dtype = dtype_from_name(data["obs_dtype"])
            parts: dict[str | None, ObsPart] = {}
            for name, part in data["parts"].items():
                key = name if data["is_dict"] else None
                parts[key] = ObsPart(_parse_shape(part["shape"], name), dtype_from_name(part["dtype"]))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed observation layout in metadata: {data!r}") from error
        if not parts or (not data["is_dict"] and len(parts) != 1):
            raise ValueError(f"malformed observation layout in metadata: {data!r}")
        return cls(parts, obs_dtype)
