"""A crash-safe, append-only on-disk log of 1-step transitions (live fine-tuning on a robot).

The learner appends every transition it receives from the policy node; training reads the log
into the in-memory replay (:mod:`rlcontrol.replay.log_feed`) and keeps tailing it.

Format
------
A log is a directory of segments ``segment-000000.rlclog``, ``segment-000001.rlclog``, ... (plus a
``LOCK`` file). A segment is a header and then records, nothing else:

* header: magic ``b"RLCTLOG\\n"``, format version (u32), JSON length (u32), the JSON
  (``{"segment", "first_seq", "created_unix_s", "schema": {"fields": [{"name", "dtype", "shape"}]}}``),
  CRC-32 of everything before it (u32). All integers little-endian.
* record: payload length (u32), CRC-32 of the payload (u32), payload = sequence number (u64) and
  then every schema field's raw little-endian bytes in schema order (no pickle anywhere). The
  schema fixes the payload size, so record ``k`` of a segment starts at
  ``header_bytes + k * record_bytes`` and has sequence number ``first_seq + k``.

Fields (:meth:`TransitionSchema.for_transitions`): ``obs`` or ``obs/<part>`` (dict observations,
uint8 images included), ``action`` float32 (A,), ``reward`` float32, ``next_obs...``,
``terminated`` / ``truncated`` bool, optionally ``intervention`` bool (a safety layer replaced the
command; the sender marks the steps around it terminated/truncated), ``episode`` and ``step``
(index within the episode) int64, ``time`` float64 (seconds since the epoch). Each record is a
whole transition (obs and next_obs, 2 images per record for pixels): a lost or skipped record
never changes the meaning of its neighbours.

Observations once (``for_transitions(..., obs_once=True)``, what live fine-tuning of camera
policies writes): as the frame-pool replay stores each frame once, a record holds only the
``next_obs`` of its step; an episode (a segment of consecutive steps) starts with a ``first``
record (step -1, zero action and reward) whose next_obs is the initial observation. Readers
rebuild whole transitions (:class:`~rlcontrol.replay.log_format.ObservationJoiner`): record
(e, k) takes its obs from record (e, k - 1). Half the bytes of a camera log; the price is that a
lost or corrupt record also costs the one after it (which has no observation to start from),
never anything further.

A segment is created whole (header written to a temp file, fsynced, renamed, directory fsynced),
records are appended with one ``os.write`` each to an ``O_APPEND`` descriptor, and a segment rolls
over once the next record would take it past ``segment_bytes``; a finished segment is fsynced
(except with ``fsync="none"``) and never written again. One writer at a time (``flock`` on LOCK).

fsync policy and what can be lost
---------------------------------
A process crash (``kill -9``, OOM) loses nothing the writer acknowledged: ``append`` returns after
its ``os.write``, and the kernel keeps written pages whatever happens to the process (only the
record being written may be torn: the kernel can cut a large write short at a fatal signal).
fsync decides what survives a power loss or kernel crash:

* ``"every"``: ``append`` fsyncs before it returns (3-4 ms on the ext4 virtual disk measured:
  ~300 appends/s); nothing acknowledged is lost.
* ``"interval"`` (default): a background thread fsyncs whatever was appended, at most every
  ``fsync_interval_s`` (0.1 s), and sooner once ``fsync_records`` records wait (if set). Lost:
  the records appended after the last completed fsync, i.e. those of the last
  ``fsync_interval_s`` plus one fsync's duration. ``durable_seq`` tells which are safe. The
  appending thread never waits for an fsync: an append is one CRC-32 and one ``os.write``
  (~15 us for a 17-float state, ~35 us for a 64x64x3 image transition; benchmarks/transition_log.py).
* ``"none"``: only :meth:`TransitionLog.flush` and ``close`` fsync; the OS writes back when it likes
  (~30 s on Linux).

Recovery rules
--------------
* Torn tail: the last segment may end in a partial record (a write cut short) or in records that do
  not check (length, CRC-32 or sequence number wrong) with no valid record after them (garbage,
  or zeros after a power loss). Readers stop before them and report their size
  (``LogReader.report.torn_tail_bytes``); reopening the log for appending truncates them (logged as
  a warning) and numbering continues from the last valid record.
* Corruption in the middle (a record that does not check followed by a valid one, or by another
  segment) is an error naming the segment and byte offset (:class:`LogCorruptError`); with
  ``skip_corrupt=True`` the reader skips such records instead, counts them
  (``report.skipped_records``) and logs each. The writer refuses to append to a last segment
  corrupted in the middle.
* A schema that differs between segments, or from the one a caller expects, is a
  :class:`LogSchemaError`.
* Disk full (ENOSPC), file too large (EFBIG) or any other write error: ``append`` truncates a
  partial write back to the last record boundary and raises :class:`LogWriteError`; every earlier
  record is intact and the writer stays usable (e.g. after space is freed). A failed fsync is
  different: Linux may have dropped the unwritten pages, so the writer refuses further appends.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rlcontrol.replay.log_format import (
    SEGMENT_SUFFIX,
    LogCorruptError,
    LogRecord,
    LogSchemaError,
    LogWriteError,
    ObservationJoiner,
    RecordCodec,
    SegmentHeader,
    TransitionLogError,
    TransitionSchema,
    check_schema,
    encode_header,
    list_segments,
    read_header,
    scan_segment,
    segment_name,
    slot_offset,
    valid_after,
)
from rlcontrol.training.atomic import fsync_dir

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 2**20
FSYNC_POLICIES = ("every", "interval", "none")

__all__ = ["DEFAULT_SEGMENT_BYTES", "FSYNC_POLICIES", "LogCorruptError", "LogReader", "LogRecord", "LogSchemaError",
           "LogWriteError", "ReadReport", "TransitionLog", "TransitionLogError", "TransitionSchema", "read_log"]


# ------------------------------------------------------------------------------------ writer
def _failure(error: OSError) -> str:
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit reached"}.get(error.errno, f"write failed ({error.strerror})")


def _intact(count: int) -> str:
    return f"records up to seq {count - 1} are intact" if count else "no records were written before"


class TransitionLog:
    """The appending side: ``TransitionLog.open(directory, schema, fsync=...)``; one per directory.

    ``append(transition) -> seq``: a dict with ``obs``, ``action``, ``reward``, ``next_obs``,
    ``terminated``, ``truncated``, ``episode``, ``step`` and optionally ``time`` (default: now) and
    ``intervention`` (default False). Meant for one appending thread; close it (or use ``with``).
    """

    def __init__(self, directory: Path, schema: TransitionSchema, lock_fd: int, *, fsync: str,
                 fsync_interval_s: float, fsync_records: int | None, segment_bytes: int) -> None:
        self.directory, self.schema, self._lock_fd = directory, schema, lock_fd
        self.fsync_policy, self.fsync_interval_s, self.fsync_records = fsync, fsync_interval_s, fsync_records
        self.segment_bytes = segment_bytes
        self._codec = RecordCodec(schema)
        self._state_lock = threading.Lock()  # the fd and durable_seq, shared with the fsync thread
        self._fd = -1
        self._background_error: OSError | None = None
        self._broken = ""
        self._closed = False
        self.next_seq = self.durable_seq = 0
        self.fsync_count = 0
        self._syncer: _IntervalSyncer | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike, schema: TransitionSchema | None = None, *,
             fsync: str = "interval", fsync_interval_s: float = 0.1, fsync_records: int | None = None,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> TransitionLog:
        """Open a log for appending, creating it if needed (``schema`` may be None for an existing
        log). An existing log is first recovered: a torn tail of its last segment is truncated
        (logged) and numbering continues after the last valid record."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if not fsync_interval_s > 0 or (fsync_records is not None and int(fsync_records) < 1):
            raise ValueError("fsync_interval_s must be > 0 and fsync_records >= 1 (or None)")
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True)
            fsync_dir(directory.parent)
        lock_fd = _lock(directory)
        try:
            segments = list_segments(directory)
            if schema is None and not segments:
                raise TransitionLogError(f"replay log {directory}: no segments yet, a schema is needed to create it")
            header = read_header(segments[-1][1], segments[-1][0]) if segments else None
            if header is not None and schema is not None:
                check_schema(schema, header, "the schema given")
            log = cls(directory, schema or header.schema, lock_fd, fsync=fsync, fsync_interval_s=fsync_interval_s,
                      fsync_records=fsync_records, segment_bytes=int(segment_bytes))
        except BaseException:
            os.close(lock_fd)
            raise
        log._start(header)
        return log

    def _start(self, header: SegmentHeader | None) -> None:
        try:
            for stale in self.directory.glob(f".segment-*{SEGMENT_SUFFIX}.tmp"):
                stale.unlink()  # a segment whose creation a crash interrupted
            if header is None:
                header = self._create_segment(0, 0)
            self._recover(header)
            self._header = header
            self._fd = os.open(header.path, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(self._lock_fd)
            raise
        if self.fsync_policy == "interval":
            self._syncer = _IntervalSyncer(self, self.fsync_interval_s)

    def _recover(self, header: SegmentHeader) -> None:
        """Truncate a torn tail of the (last) segment; set next_seq after its last valid record."""
        with open(header.path, "rb+") as f:
            end = os.fstat(f.fileno()).st_size
            slot = 0
            while True:
                _, good = scan_segment(f.fileno(), header, self._codec, slot, end)
                slot += good
                if not good:
                    break
            offset = slot_offset(header, self._codec, slot)
            if offset < end:
                later = valid_after(f.fileno(), header, self._codec, slot, end)
                if later is not None:
                    raise LogCorruptError(
                        f"replay log segment {header.path}: record at byte {offset} (seq {header.first_seq + slot}) "
                        f"fails its check but seq {header.first_seq + later} after it is valid; not appending to "
                        f"a log corrupted in the middle (read it with skip_corrupt=True to salvage it)")
                logger.warning("replay log segment %s: dropped a torn tail of %d bytes at byte %d; the log "
                               "continues at seq %d", header.path, end - offset, offset, header.first_seq + slot)
                f.truncate(offset)
            os.fsync(f.fileno())  # what a crashed writer left in the page cache is durable from here
        self._segment_size = offset
        self.next_seq = self.durable_seq = header.first_seq + slot

    def _create_segment(self, index: int, first_seq: int) -> SegmentHeader:
        """Write a new segment's header atomically (temp file, fsync, rename, directory fsync)."""
        path = self.directory / segment_name(index)
        tmp = self.directory / f".{path.name}.tmp"
        if path.exists():
            raise LogCorruptError(f"replay log {self.directory}: {path.name} exists already")
        header = encode_header(self.schema, index, first_seq)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, header)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_dir(self.directory)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise LogWriteError(f"replay log: {_failure(error)} while creating segment {path} after "
                                f"{first_seq} records; {_intact(first_seq)}") from error
        return SegmentHeader(path, index, first_seq, self.schema, len(header))

    # -------------------------------------------------------------------- appending
    @property
    def segment_path(self) -> Path:
        """The segment being appended to."""
        return self._header.path

    def _check_usable(self) -> None:
        if self._closed:
            raise TransitionLogError(f"replay log {self.directory} is closed")
        if self._broken:
            raise LogWriteError(self._broken)
        if self._background_error is not None:
            error = self._background_error
            self._broken = (f"replay log: fsync of {self.segment_path} failed ({error.strerror}); records from "
                            f"seq {self.durable_seq} on may not be on disk")
            raise LogWriteError(self._broken) from error

    def append(self, transition: Mapping) -> int:
        """Write one transition; returns its sequence number. ValueError if it does not fit the
        schema, LogWriteError if the write failed (nothing partial is left; earlier records intact)."""
        self._check_usable()
        record = self._codec.encode(self.next_seq, transition)
        if self._segment_size + len(record) > self.segment_bytes and self._segment_size > self._header.data_start:
            self._roll()
        self._write_record(record)
        seq = self.next_seq
        self.next_seq += 1
        self._segment_size += len(record)
        if self.fsync_policy == "every":
            self.flush()
        elif self._syncer is not None and self.fsync_records and self.next_seq - self.durable_seq >= self.fsync_records:
            self._syncer.wake()
        return seq

    def _write_record(self, record: memoryview) -> None:
        written = 0
        try:
            written = _write_all(self._fd, record)
        except OSError as error:
            written = getattr(error, "written", 0)
            message = (f"replay log: {_failure(error)} while appending to {self.segment_path} after "
                       f"{self.next_seq} records; {_intact(self.next_seq)}")
            if written:
                try:
                    os.ftruncate(self._fd, self._segment_size)  # drop the partial record
                except OSError as truncate_error:
                    self._broken = (f"{message}, but the partial record after them could not be removed "
                                    f"({truncate_error.strerror}); reopening the log drops it")
                    raise LogWriteError(self._broken) from error
            raise LogWriteError(message) from error

    def _roll(self) -> None:
        """Finish the current segment (fsynced unless fsync='none') and continue in a new one."""
        if self.fsync_policy != "none":
            self.flush()
        header = self._create_segment(self._header.index + 1, self.next_seq)
        fd = os.open(header.path, os.O_WRONLY | os.O_APPEND)
        with self._state_lock:
            old, self._fd, self._header = self._fd, fd, header
        os.close(old)
        self._segment_size = header.data_start

    def flush(self) -> int:
        """fsync everything appended so far; returns ``durable_seq`` (records before it are durable)."""
        self._check_usable()
        target = self.next_seq
        try:
            os.fsync(self._fd)
        except OSError as error:
            self._background_error = error
            self._check_usable()
        with self._state_lock:
            self.durable_seq = max(self.durable_seq, target)
            self.fsync_count += 1
        return self.durable_seq

    def _sync_in_background(self) -> None:
        """Called by the fsync thread: fsync a duplicate of the current fd (the appender may swap it)."""
        with self._state_lock:
            if self._fd < 0 or self.next_seq <= self.durable_seq or self._background_error is not None:
                return
            target, fd = self.next_seq, os.dup(self._fd)
        try:
            os.fsync(fd)
        except OSError as error:
            self._background_error = error  # raised by the next append/flush
            return
        finally:
            os.close(fd)
        with self._state_lock:
            self.durable_seq = max(self.durable_seq, target)
            self.fsync_count += 1

    def close(self) -> None:
        """Stop the fsync thread, fsync what is left (any policy) and release the directory."""
        if self._closed:
            return
        if self._syncer is not None:
            self._syncer.stop()
        try:
            if not self._broken and self._background_error is None:
                self.flush()
        finally:
            self._closed = True
            with self._state_lock:
                fd, self._fd = self._fd, -1
            os.close(fd)
            os.close(self._lock_fd)

    def __enter__(self) -> TransitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _IntervalSyncer:
    """The fsync thread of ``fsync="interval"``: keeps fsync off the appending thread."""

    def __init__(self, log: TransitionLog, interval_s: float) -> None:
        self._log, self._interval_s = log, interval_s
        self._wake, self._stopping = threading.Event(), False
        self._thread = threading.Thread(target=self._run, name="transition-log-fsync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopping:
                return
            self._log._sync_in_background()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()


def _write_all(fd: int, data: bytes | memoryview) -> int:
    """os.write until all of ``data`` is written (a short write is retried); an OSError carries
    ``.written``, the bytes that did reach the file."""
    view, written = memoryview(data), 0
    while written < len(view):
        try:
            count = os.write(fd, view[written:])
        except OSError as error:
            error.written = written  # type: ignore[attr-defined]
            raise
        if count <= 0:
            error = OSError(errno.EIO, "os.write wrote nothing")
            error.written = written  # type: ignore[attr-defined]
            raise error
        written += count
    return written


def _lock(directory: Path) -> int:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TransitionLogError(f"replay log {directory} is already open for appending elsewhere") from None
    return fd


# ------------------------------------------------------------------------------------ reader
@dataclass
class ReadReport:
    """What a :class:`LogReader` has seen so far."""

    records: int = 0  # records returned
    next_seq: int = 0  # sequence number of the next record to read
    segments: int = 0  # segments opened
    torn_tail_bytes: int = 0  # invalid bytes at the end of the last segment, now (a torn last record)
    skipped_records: int = 0  # corrupt records skipped (skip_corrupt=True)
    skipped: list[str] = field(default_factory=list)  # where (segment: byte offset)
    unjoined: int = 0  # observations-once logs: records dropped for want of the record before them


class LogReader:
    """Reads a log in order and follows it while a writer (any process) appends.

    Iterating reads every valid record after the reader's position up to the current end of the
    log (like a file); :meth:`tail` returns the records appended since the previous call. Both stop
    before a torn tail: at rest it is a dropped record (iteration logs a warning), while a writer
    is running it may be a record being written, read by a later :meth:`tail`.
    """

    def __init__(self, directory: str | os.PathLike, schema: TransitionSchema | None = None, *,
                 skip_corrupt: bool = False) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise TransitionLogError(f"replay log {self.directory} does not exist")
        self._expected, self.skip_corrupt = schema, skip_corrupt
        self.report = ReadReport()
        self._header: SegmentHeader | None = None
        self._codec: RecordCodec | None = None
        self._file: BinaryIO | None = None  # the current segment (a file object: closed when collected)
        self._slot = 0
        self._joiner: ObservationJoiner | None = None  # observations-once logs: fills in each obs

    @property
    def _fd(self) -> int:
        return self._file.fileno()

    @property
    def schema(self) -> TransitionSchema | None:
        """The log's schema (None while the log has no segment)."""
        return self._header.schema if self._header else self._expected

    def _open(self, index: int, path: Path) -> None:
        header = read_header(path, index)
        if self._header is not None:
            check_schema(self._header.schema, header, f"that of {self._header.path.name}")
            if header.first_seq != self.report.next_seq:
                raise LogCorruptError(f"replay log segment {path}: starts at seq {header.first_seq}, "
                                      f"the previous segment ends before seq {self.report.next_seq}")
        elif self._expected is not None:
            check_schema(self._expected, header, "the schema expected")
        self.close()
        self._file = open(path, "rb", buffering=0)  # kept open while following
        self._header, self._slot = header, 0
        self._codec = self._codec or RecordCodec(header.schema)
        if self._joiner is None and header.schema.obs_once:
            self._joiner = ObservationJoiner()
        self.report.next_seq = header.first_seq
        self.report.segments += 1

    def _next_segment(self) -> tuple[int, Path] | None:
        segments = list_segments(self.directory)
        if self._header is None:
            return segments[0] if segments else None
        later = [s for s in segments if s[0] > self._header.index]
        if later and later[0][0] != self._header.index + 1:
            raise LogCorruptError(f"replay log {self.directory}: segment {self._header.index + 1} is missing")
        return later[0] if later else None

    def _read_chunk(self, max_records: int | None) -> list[LogRecord] | None:
        """Next valid records of the current segment (None: nothing more now)."""
        if self._header is None:
            first = self._next_segment()
            if first is None:
                return None
            self._open(*first)
        header, codec = self._header, self._codec
        following = self._next_segment()  # looked up first: if it exists, this segment is finished
        end = os.fstat(self._fd).st_size
        chunk, good = scan_segment(self._fd, header, codec, self._slot, end, max_records)
        if good:
            self._slot += good
            self.report.next_seq += good
            self.report.torn_tail_bytes = 0
            return codec.decode(chunk)
        offset = slot_offset(header, codec, self._slot)
        if offset >= end and following is not None:
            self._open(*following)
            return []
        if offset >= end:
            self.report.torn_tail_bytes = 0
            return None
        return self._bad_record(offset, end, following)

    def _bad_record(self, offset: int, end: int, following: tuple[int, Path] | None) -> list[LogRecord] | None:
        header, codec = self._header, self._codec
        later = valid_after(self._fd, header, codec, self._slot, end)
        if later is None and following is None:  # a torn tail: stop before it
            self.report.torn_tail_bytes = end - offset
            return None
        where = f"replay log segment {header.path}: record at byte {offset} (seq {self.report.next_seq})"
        if not self.skip_corrupt:
            follows = f"seq {header.first_seq + later} after it is valid" if later is not None else \
                f"segment {following[1].name} follows"
            raise LogCorruptError(f"{where} fails its check but {follows} (corruption in the middle; "
                                  f"LogReader(..., skip_corrupt=True) skips such records)")
        # Up to the next valid record; at the end of a finished segment, its whole records (a partial
        # one there was never acknowledged, so the next segment's numbering does not count it).
        skip = (later if later is not None else self._slot + (end - offset) // codec.size) - self._slot
        logger.warning("%s: skipped %d corrupt record(s) (%d bytes)", where, skip,
                       (later - self._slot) * codec.size if later is not None else end - offset)
        self.report.skipped_records += skip
        self.report.skipped.append(f"{header.path.name}:{offset}")
        self._slot += skip
        self.report.next_seq += skip
        if later is None:
            self._open(*following)  # a finished segment with a bad end
        return []

    def tail(self, max_records: int | None = None) -> list[LogRecord]:
        """The valid records appended since the previous call (at most ``max_records`` read). An
        observations-once log's records come back as whole transitions: its ``first`` records and
        any record whose predecessor is missing are consumed, not returned."""
        out: list[LogRecord] = []
        while max_records is None or len(out) < max_records:
            records = self._read_chunk(None if max_records is None else max_records - len(out))
            if records is None:
                break
            out += records
        self.report.records += len(out)
        return self._joined(out)

    def _joined(self, records: list[LogRecord]) -> list[LogRecord]:
        if self._joiner is None:
            return records
        joined = self._joiner.join(records)
        self.report.unjoined = self._joiner.dropped
        return joined

    def __iter__(self) -> Iterator[LogRecord]:
        while (records := self._read_chunk(None)) is not None:
            self.report.records += len(records)
            yield from self._joined(records)
        if self.report.torn_tail_bytes:
            logger.warning("replay log %s: dropped a torn last record (%d bytes after seq %d)", self._header.path,
                           self.report.torn_tail_bytes, self.report.next_seq - 1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(directory: str | os.PathLike, schema: TransitionSchema | None = None, *,
             skip_corrupt: bool = False) -> LogReader:
    """A :class:`LogReader` at the start of the log: ``for record in read_log(d)`` yields every valid
    record in order; afterwards ``.report`` says how many, and what was dropped or skipped."""
    return LogReader(directory, schema, skip_corrupt=skip_corrupt)
