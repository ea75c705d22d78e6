"""The on-disk format of a transition log: record schema, record codec, segment headers, scanning.

See :mod:`rlcontrol.replay.transition_log` for the format description, the fsync policy and the
recovery rules; this module holds the pieces the writer and the reader share.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rlcontrol.errors import UserError

MAGIC = b"RLCTLOG\n"
FORMAT_VERSION = 1
SEGMENT_SUFFIX = ".rlclog"

_HEADER_PREFIX = struct.Struct("<8sII")  # magic, version, JSON length
_U32 = struct.Struct("<I")
_FRAMING_BYTES = 8  # length + CRC-32, before the payload
_SEGMENT_NAME = re.compile(r"segment-(\d{6,})\.rlclog")
_READ_CHUNK_BYTES = 8 * 2**20
_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
           "float16", "float32", "float64")


class TransitionLogError(UserError):
    """A transition log that cannot be opened, read or appended to."""


class LogCorruptError(TransitionLogError):
    """Records or a header that do not check, anywhere but a torn tail."""


class LogSchemaError(TransitionLogError):
    """Segments (or a segment and the caller) disagree on the record schema."""


class LogWriteError(TransitionLogError):
    """An append that failed (disk full, file too large, I/O error); earlier records are intact."""


# ---------------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class LogField:
    """One field of a record: numpy dtype name (stored little-endian) and per-record shape."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in _DTYPES:
            raise ValueError(f"field {self.name!r}: dtype {self.dtype!r} not one of {_DTYPES}")
        if any(d < 0 for d in self.shape):
            raise ValueError(f"field {self.name!r}: negative dimension in {self.shape}")

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")


_FLAGS = ("terminated", "truncated")
_FIXED = {"action": "float32", "reward": "float32", "terminated": "bool", "truncated": "bool",
          "intervention": "bool", "first": "bool", "undo": "bool", "episode": "int64", "step": "int64",
          "time": "float64"}
_OPTIONAL = ("intervention", "first", "undo")
_DEFAULTS = {"intervention": False, "first": False, "undo": False}  # (and "time": now)


def _obs_field(name: str, spec: Any) -> LogField:
    """A shape (float32) or an object with ``.shape`` and ``.dtype`` (numpy or torch dtype)."""
    shape = getattr(spec, "shape", spec)
    dtype = getattr(spec, "dtype", np.float32)
    dtype = str(dtype).removeprefix("torch.") if str(dtype).startswith("torch.") else np.dtype(dtype).name
    return LogField(name, dtype, (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape))


def _obs_fields(prefix: str, obs_spec: Any) -> list[LogField]:
    if isinstance(obs_spec, Mapping):
        if not obs_spec:
            raise ValueError("obs_spec dict is empty")
        return [_obs_field(f"{prefix}/{name}", spec) for name, spec in obs_spec.items()]
    return [_obs_field(prefix, obs_spec)]


@dataclass(frozen=True)
class TransitionSchema:
    """The ordered fields of every record of a log (see the module docstring)."""

    fields: tuple[LogField, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in {names}")
        by_name = {f.name: f for f in self.fields}
        for name, dtype in _FIXED.items():
            if name in _OPTIONAL and name not in by_name:
                continue
            if name not in by_name or by_name[name].dtype != dtype:
                raise ValueError(f"a transition schema needs a {dtype} field {name!r}")
            if name != "action" and by_name[name].shape != ():
                raise ValueError(f"field {name!r} must be a scalar")
        if len(by_name["action"].shape) != 1:
            raise ValueError("field 'action' must have shape (A,)")
        obs = {n[3:]: by_name[n] for n in names if n == "obs" or n.startswith("obs/")}
        nxt = {n[8:]: by_name[n] for n in names if n == "next_obs" or n.startswith("next_obs/")}
        if "first" in by_name:  # observations once: next_obs only (module docstring of transition_log)
            if obs or not nxt or ("" in nxt and len(nxt) > 1):
                raise ValueError("an observations-once schema has next_obs fields ('next_obs' or 'next_obs/<part>') "
                                 "and no obs fields")
        elif not obs or ("" in obs and len(obs) > 1) or obs.keys() != nxt.keys() or any(
                (obs[k].dtype, obs[k].shape) != (nxt[k].dtype, nxt[k].shape) for k in obs):
            raise ValueError("obs and next_obs fields must be 'obs' or 'obs/<part>', the same in both")
        unknown = set(names) - set(_FIXED) - {f.name for f in (*obs.values(), *nxt.values())}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")

    @classmethod
    def for_transitions(cls, obs_spec: Any, action_dim: int, *, intervention: bool = True,
                        obs_once: bool = False, undo: bool = False) -> TransitionSchema:
        """``obs_spec``: a shape (float32), an object with ``.shape``/``.dtype`` (``envs.core.ArraySpec``,
        an array; the dtype is kept: uint8 camera images stay uint8), or a dict part name -> either.
        ``obs_once``: each observation (camera frames included) is stored once, as the next_obs of the
        record that led to it; a ``first`` record holds an episode's initial observation. ``undo``:
        an ``undo`` field, whose records withdraw an earlier episode (:func:`undo_record`)."""
        fields = [*(() if obs_once else _obs_fields("obs", obs_spec)), LogField("action", "float32", (int(action_dim),)),
                  LogField("reward", "float32"), *_obs_fields("next_obs", obs_spec),
                  LogField("terminated", "bool"), LogField("truncated", "bool")]
        if intervention:
            fields.append(LogField("intervention", "bool"))
        if obs_once:
            fields.append(LogField("first", "bool"))
        if undo:
            fields.append(LogField("undo", "bool"))
        fields += [LogField("episode", "int64"), LogField("step", "int64"), LogField("time", "float64")]
        return cls(tuple(fields))

    # -------------------------------------------------------------------- derived
    @cached_property
    def by_name(self) -> dict[str, LogField]:
        return {f.name: f for f in self.fields}

    @property
    def action_dim(self) -> int:
        return self.by_name["action"].shape[0]

    @property
    def has_intervention(self) -> bool:
        return "intervention" in self.by_name

    @property
    def has_undo(self) -> bool:
        return "undo" in self.by_name

    @property
    def obs_once(self) -> bool:
        """Whether each observation is stored once (next_obs only; ``first`` records start episodes)."""
        return "first" in self.by_name

    @cached_property
    def obs_parts(self) -> dict[str | None, LogField]:
        """Observation part name (None for a flat observation) -> its ``next_obs`` field (the same
        shape and dtype as the ``obs`` field, where there is one)."""
        if "next_obs" in self.by_name:
            return {None: self.by_name["next_obs"]}
        return {f.name[9:]: f for f in self.fields if f.name.startswith("next_obs/")}

    def obs_spec(self) -> Any:
        """An ``obs_spec`` for :func:`rlcontrol.replay.make_replay` (objects with shape and dtype)."""
        specs = {name: np.empty(f.shape, f.numpy_dtype) for name, f in self.obs_parts.items()}
        return specs[None] if None in specs else specs

    @cached_property
    def record_dtype(self) -> np.dtype:
        """A whole record (framing included) as a packed numpy structured dtype."""
        return np.dtype([("length", "<u4"), ("crc", "<u4"), ("seq", "<u8"),
                         *((f.name, f.numpy_dtype, f.shape) for f in self.fields)])

    @property
    def record_bytes(self) -> int:
        return self.record_dtype.itemsize

    def to_json(self) -> dict:
        return {"fields": [{"name": f.name, "dtype": f.dtype, "shape": list(f.shape)} for f in self.fields]}

    @classmethod
    def from_json(cls, data: Mapping) -> TransitionSchema:
        try:
            return cls(tuple(LogField(f["name"], f["dtype"], tuple(f["shape"])) for f in data["fields"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed schema {data!r}: {error}") from error

    def difference(self, other: TransitionSchema) -> str:
        """How ``other`` differs from this schema, in words ('' if it does not)."""
        for mine, theirs in zip(self.fields, other.fields):
            if mine != theirs:
                return f"field {mine.name} {mine.dtype}{list(mine.shape)} vs {theirs.name} {theirs.dtype}{list(theirs.shape)}"
        if len(self.fields) != len(other.fields):
            return f"{len(self.fields)} fields vs {len(other.fields)}"
        return ""


# ----------------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class LogRecord:
    """One transition read back from a log; the arrays are private copies."""

    seq: int
    obs: np.ndarray | dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    next_obs: np.ndarray | dict[str, np.ndarray]
    terminated: bool
    truncated: bool
    intervention: bool
    episode: int
    step: int
    time: float
    first: bool = False  # an observations-once log's episode start: next_obs is the initial observation
    undo: bool = False  # not a transition: episode ``episode`` is withdrawn (undo_record)


class RecordCodec:
    """Encodes transitions into one reused record buffer and decodes chunks of records."""

    def __init__(self, schema: TransitionSchema) -> None:
        self.schema = schema
        self.size = schema.record_bytes
        self.payload_bytes = self.size - _FRAMING_BYTES
        self._buffer = bytearray(self.size)
        row = np.frombuffer(self._buffer, schema.record_dtype)
        row["length"] = self.payload_bytes
        self._seq = row["seq"].reshape(())
        self._views = [(f, row[f.name].reshape(f.shape)) for f in schema.fields]

    def _values(self, transition: Mapping) -> dict[str, Any]:
        if not isinstance(transition, Mapping):
            raise ValueError("a transition must be a dict")
        values = {key: value for key, value in transition.items() if key not in ("obs", "next_obs")}
        if self.schema.obs_once and "obs" in transition:
            raise ValueError("an observations-once log stores next_obs only: a transition must not carry 'obs'")
        for prefix in ("next_obs",) if self.schema.obs_once else ("obs", "next_obs"):
            if prefix not in transition:
                raise ValueError(f"transition lacks {prefix!r}")
            obs = transition[prefix]
            if None in self.schema.obs_parts:
                values[prefix] = obs
            elif not isinstance(obs, Mapping) or obs.keys() != self.schema.obs_parts.keys():
                raise ValueError(f"{prefix}: expected a dict with parts {sorted(self.schema.obs_parts)}")
            else:
                values.update({f"{prefix}/{name}": part for name, part in obs.items()})
        values.setdefault("time", time.time())
        for name, default in _DEFAULTS.items():
            if name in self.schema.by_name:
                values.setdefault(name, default)
        if values.keys() != self.schema.by_name.keys():
            raise ValueError(f"transition fields: missing {sorted(self.schema.by_name.keys() - values.keys())}, "
                             f"unexpected {sorted(values.keys() - self.schema.by_name.keys())}")
        return values

    def encode(self, seq: int, transition: Mapping) -> memoryview:
        """The framed record (a view of the reused buffer: write it before the next encode).
        ValueError for a transition that does not fit the schema, before anything is changed."""
        values = self._values(transition)
        arrays = []
        for f, view in self._views:
            array = np.asarray(values[f.name])
            if array.shape != f.shape:
                raise ValueError(f"{f.name}: expected shape {f.shape}, got {array.shape}")
            kind = array.dtype.kind
            # No silent casts that change meaning: floats into uint8 pixels, 0.5 into an int64 step.
            if f.dtype == "bool" and not (kind == "b" or (kind in "iu" and np.isin(array, (0, 1)).all())):
                raise ValueError(f"{f.name}: expected a bool, got {array.dtype} {array!r}")
            if f.numpy_dtype.kind in "iu" and f.dtype != array.dtype.name and (
                    kind not in "iu" or f.dtype == "uint8"):
                raise ValueError(f"{f.name}: stored as {f.dtype}, got {array.dtype}")
            arrays.append((view, array))
        for view, array in arrays:
            view[...] = array
        self._seq[...] = seq
        _U32.pack_into(self._buffer, 4, zlib.crc32(memoryview(self._buffer)[_FRAMING_BYTES:]))
        return memoryview(self._buffer)

    def valid_prefix(self, chunk: bytes | memoryview, first_seq: int) -> int:
        """How many whole records at the start of ``chunk`` check (length, CRC-32, sequence number)."""
        rows = np.frombuffer(chunk, self.schema.record_dtype, count=len(chunk) // self.size)
        good = (rows["length"] == self.payload_bytes) & (rows["seq"] == first_seq + np.arange(len(rows)))
        view = memoryview(chunk)
        for i, row_ok in enumerate(good):
            start = i * self.size
            if not row_ok or zlib.crc32(view[start + _FRAMING_BYTES:start + self.size]) != rows["crc"][i]:
                return i
        return len(rows)

    def decode(self, chunk: bytes | memoryview) -> list[LogRecord]:
        """Records of a chunk that :meth:`valid_prefix` accepted whole."""
        rows = np.frombuffer(chunk, self.schema.record_dtype, count=len(chunk) // self.size)
        columns = {f.name: rows[f.name] for f in self.schema.fields}
        parts = self.schema.obs_parts
        intervention = columns.get("intervention", np.zeros(len(rows), bool))
        first = columns.get("first", np.zeros(len(rows), bool))
        undo = columns.get("undo", np.zeros(len(rows), bool))

        def obs(prefix: str, i: int) -> Any:
            if prefix == "obs" and self.schema.obs_once:
                return None  # ObservationJoiner fills it in from the record before
            if None in parts:
                return np.array(columns[prefix][i])
            return {name: np.array(columns[f"{prefix}/{name}"][i]) for name in parts}

        return [LogRecord(seq=int(rows["seq"][i]), obs=obs("obs", i), action=np.array(columns["action"][i]),
                          reward=float(columns["reward"][i]), next_obs=obs("next_obs", i),
                          terminated=bool(columns["terminated"][i]), truncated=bool(columns["truncated"][i]),
                          intervention=bool(intervention[i]), episode=int(columns["episode"][i]),
                          step=int(columns["step"][i]), time=float(columns["time"][i]), first=bool(first[i]),
                          undo=bool(undo[i]))
                for i in range(len(rows))]


def undo_record(schema: TransitionSchema, episode: int) -> dict[str, Any]:
    """The record that withdraws ``episode`` (an operator's "undo last episode"): ``undo`` set, the
    episode's id, every other field zero. Readers pass it on; the replay feeder drops the episode."""
    if not schema.has_undo:
        raise ValueError("this log has no undo field (it was created before undo records existed)")
    values: dict[str, Any] = {}
    for f in schema.fields:
        values[f.name] = np.zeros(f.shape, f.numpy_dtype)
    values.update(undo=True, episode=episode, step=-2, time=time.time())
    record: dict[str, Any] = {}
    for prefix in ("obs", "next_obs"):
        if None in schema.obs_parts:
            if prefix in values:
                record[prefix] = values.pop(prefix)
        elif any(name.startswith(prefix + "/") for name in values):
            record[prefix] = {name.split("/", 1)[1]: values.pop(name) for name in list(values)
                              if name.startswith(prefix + "/")}
    return record | values


class ObservationJoiner:
    """Transitions of an observations-once log: record (episode e, step k) takes its ``obs`` from
    the ``next_obs`` of record (e, k - 1), or of the ``first`` record (e, -1) for k = 0. A record
    whose predecessor is missing (lost in a crash, skipped as corrupt) has no observation to start
    from and is dropped (``dropped``); the records after it chain on from its next_obs."""

    def __init__(self) -> None:
        self._last: tuple[int, int, Any] | None = None  # (episode, step, next_obs) of the last record
        self.dropped = 0

    def join(self, records: list[LogRecord]) -> list[LogRecord]:
        out = []
        for record in records:
            if record.undo:  # not a step: passed on, the chain of observations goes around it
                out.append(record)
                continue
            last = self._last
            if not record.first:
                if last is not None and last[0] == record.episode and last[1] == record.step - 1:
                    out.append(dataclasses.replace(record, obs=last[2]))
                else:
                    self.dropped += 1
            self._last = (record.episode, record.step, record.next_obs)
        return out


# ---------------------------------------------------------------------------------- segments
def segment_name(index: int) -> str:
    return f"segment-{index:06d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(index, path) of the directory's segments, by index."""
    found = [(int(m.group(1)), directory / name) for name in os.listdir(directory)
             if (m := _SEGMENT_NAME.fullmatch(name))]
    return sorted(found)


def encode_header(schema: TransitionSchema, index: int, first_seq: int) -> bytes:
    text = json.dumps({"segment": index, "first_seq": first_seq, "created_unix_s": time.time(),
                       "schema": schema.to_json()}, sort_keys=True).encode()
    head = _HEADER_PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text
    return head + _U32.pack(zlib.crc32(head))


@dataclass(frozen=True)
class SegmentHeader:
    path: Path
    index: int
    first_seq: int
    schema: TransitionSchema
    data_start: int  # byte offset of the first record


def read_header(path: Path, index: int) -> SegmentHeader:
    """Parse and check a segment's header; LogCorruptError naming the segment if it does not check."""
    with open(path, "rb") as f:
        prefix = f.read(_HEADER_PREFIX.size)
        if len(prefix) < _HEADER_PREFIX.size or prefix[:8] != MAGIC:
            raise LogCorruptError(f"replay log segment {path}: not a transition log segment (bad magic)")
        _, version, length = _HEADER_PREFIX.unpack(prefix)
        if version != FORMAT_VERSION:
            raise LogCorruptError(f"replay log segment {path}: format version {version}, this reader reads "
                                  f"{FORMAT_VERSION}")
        rest = f.read(length + _U32.size)
    if len(rest) < length + _U32.size or _U32.unpack(rest[length:])[0] != zlib.crc32(prefix + rest[:length]):
        raise LogCorruptError(f"replay log segment {path}: header fails its CRC-32 check")
    try:
        meta = json.loads(rest[:length])
        schema = TransitionSchema.from_json(meta["schema"])
        first_seq = int(meta["first_seq"])
        if meta["segment"] != index:
            raise ValueError(f"header says segment {meta['segment']}")
    except (ValueError, KeyError, TypeError) as error:
        raise LogCorruptError(f"replay log segment {path}: bad header ({error})") from error
    return SegmentHeader(path, index, first_seq, schema, _HEADER_PREFIX.size + length + _U32.size)


def check_schema(expected: TransitionSchema, header: SegmentHeader, what: str) -> None:
    difference = header.schema.difference(expected)  # (the segment's first)
    if difference:
        raise LogSchemaError(f"replay log segment {header.path}: its schema differs from {what} ({difference})")


def scan_segment(fd: int, header: SegmentHeader, codec: RecordCodec, slot: int, end: int,
                 max_records: int | None = None) -> tuple[bytes, int]:
    """Read the whole records from ``slot`` that check, up to byte ``end`` (at most ``max_records``
    and one read chunk): ``(their bytes, how many)``; stops before the first that does not."""
    start = header.data_start + slot * codec.size
    count = max(0, end - start) // codec.size
    count = min(count, max(1, _READ_CHUNK_BYTES // codec.size), max_records if max_records is not None else count)
    chunk = os.pread(fd, count * codec.size, start)
    good = codec.valid_prefix(chunk, header.first_seq + slot)
    return chunk[:good * codec.size], good


def valid_after(fd: int, header: SegmentHeader, codec: RecordCodec, slot: int, end: int) -> int | None:
    """The first slot after ``slot`` whose record checks, or None: tells corruption in the middle
    (a valid record follows) from a torn tail (nothing valid follows)."""
    for later in range(slot + 1, (end - header.data_start) // codec.size):
        offset = header.data_start + later * codec.size
        if codec.valid_prefix(os.pread(fd, codec.size, offset), header.first_seq + later):
            return later
    return None


def slot_offset(header: SegmentHeader, codec: RecordCodec, slot: int) -> int:
    return header.data_start + slot * codec.size
