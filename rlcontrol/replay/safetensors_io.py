"""Crash-safe safetensors files with JSON metadata (no pickle anywhere).

File format: a plain safetensors file whose string metadata holds two JSON documents:

* ``"rlcontrol.replay"``: the caller's metadata dict (buffer configuration and progress);
* ``"rlcontrol.replay.crc32"``: ``{tensor name: CRC-32 of its raw bytes}``. safetensors itself
  checks the header and the file length; the checksums also catch flipped or zeroed data bytes
  (a disk or copy error), which would otherwise load silently as wrong transitions.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from collections.abc import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

METADATA_KEY = "rlcontrol.replay"
CHECKSUM_KEY = "rlcontrol.replay.crc32"


def _crc32(tensor: torch.Tensor) -> int:
    """CRC-32 of the tensor's raw bytes (viewed as uint8, so any dtype, bfloat16 included)."""
    if tensor.numel() == 0:
        return zlib.crc32(b"")  # (an empty tensor may have stride 0, which the byte view refuses)
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return zlib.crc32(raw)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data file itself is synced
    finally:
        os.close(fd)


def atomic_save(tensors: Mapping[str, torch.Tensor], meta: Mapping, path: str | os.PathLike) -> None:
    """Write ``tensors`` + JSON ``meta`` to ``path`` so that ``path`` is either the old file or the
    complete new one, never a partial write (temp file in the same directory, fsync, ``os.replace``,
    fsync of the directory). The temp file is removed if anything fails."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    cpu_tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    metadata = {
        METADATA_KEY: json.dumps(meta),
        CHECKSUM_KEY: json.dumps({name: _crc32(t) for name, t in cpu_tensors.items()}),
    }
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu_tensors, temp_path, metadata=metadata)
        # save_file has closed its handle; reopen to flush the data to disk before the rename.
        with open(temp_path, "rb+") as file:
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def read_checked(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`atomic_save` into CPU tensors and its metadata dict.

    Raises FileNotFoundError if ``path`` does not exist and ValueError for anything that is not a
    complete, uncorrupted file of this format (truncated, garbage, foreign safetensors file, bad
    checksum)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"replay file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ValueError(
            f"{path}: not a readable safetensors file (truncated or corrupted?): {error}"
        ) from error
    if METADATA_KEY not in header or CHECKSUM_KEY not in header:
        raise ValueError(f"{path}: safetensors file has no rlcontrol replay metadata")
    try:
        meta = json.loads(header[METADATA_KEY])
        checksums = json.loads(header[CHECKSUM_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: replay metadata is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or not isinstance(checksums, dict):
        raise ValueError(f"{path}: replay metadata is not a JSON object")
    if set(checksums) != set(tensors):
        raise ValueError(
            f"{path}: tensors {sorted(tensors)} do not match the checksummed names {sorted(checksums)}"
        )
    corrupted = sorted(name for name, tensor in tensors.items() if _crc32(tensor) != checksums[name])
    if corrupted:
        raise ValueError(f"{path}: checksum mismatch (corrupted data) in tensors {corrupted}")
    return tensors, meta
