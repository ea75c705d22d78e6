"""Crash-safe checkpoints of a whole training run.

Layout under RUN_DIR/checkpoints/:
    ckpt-0000020000/agent.pt          networks, optimizers, normalizer, update counter, RNGs
    ckpt-0000020000/replay.safetensors the replay buffer (tensors + JSON metadata)
    ckpt-0000020000/state.json        loop counters, episode history, NumPy RNG state, log offsets
    latest                            name of the newest complete checkpoint

A checkpoint is written into a hidden temp folder, every file fsynced, and the folder
renamed into place; only then is `latest` replaced (atomically). A `kill -9` at any
moment leaves the previous checkpoint intact, and a torn temp folder is ignored and
removed. Nothing here unpickles: agent.pt is read with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rlcontrol.errors import UserError
from rlcontrol.training.atomic import atomic_write_text, fsync_dir

AGENT_FILE = "agent.pt"
REPLAY_FILE = "replay.safetensors"
STATE_FILE = "state.json"


def save_torch(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def load_torch(path: Path) -> Any:
    """torch.load without pickle execution; a damaged file becomes a UserError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"missing file: {path}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


class CheckpointManager:
    def __init__(self, root: str | Path, keep: int = 2):
        self.root = Path(root)
        self.keep = keep

    def save(self, step: int, agent_state: dict, replay, state: dict) -> Path:
        """Write one checkpoint atomically and prune old ones. Returns its folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{step:010d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_torch(agent_state, tmp / AGENT_FILE)
        replay.save(tmp / REPLAY_FILE)
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():  # same step written twice (e.g. a resumed run's final save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.root)
        atomic_write_text(self.root / "latest", name + "\n")
        self._prune()
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("ckpt-*") if p.is_dir() and (p / STATE_FILE).is_file())

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if candidate.is_dir() and (candidate / STATE_FILE).is_file():
                return candidate
        done = self.complete()
        return done[-1] if done else None

    def load(self, folder: Path) -> tuple[dict, Path, dict]:
        """(agent_state, replay_path, loop_state) of one checkpoint folder."""
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"damaged checkpoint {folder}: {exc}") from None
        return load_torch(folder / AGENT_FILE), folder / REPLAY_FILE, state

    def _prune(self) -> None:
        for stale in self.root.glob(".ckpt-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        done = self.complete()
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)
