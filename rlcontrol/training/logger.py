"""Metrics to TensorBoard and to plain files in the run folder.

    metrics.jsonl   one JSON object per log event: {"env_steps": N, "<group>/<name>": value, ...}
    eval.csv        env_steps,mean_return,std_return,episodes  (one row per evaluation)
    tb/             TensorBoard event files (scalars + the whole config as text)

Metric names follow CleanRL's small stable set: charts/episodic_return, charts/SPS,
losses/critic_loss, losses/actor_loss, eval/mean_return.
On resume the plain files are cut back to their size at the checkpoint (sizes are
stored in it) and TensorBoard purges events after the checkpoint's step, so a resumed
run's logs read exactly like an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

EVAL_HEADER = "env_steps,mean_return,std_return,episodes\n"


class MetricsLogger:
    def __init__(self, run_dir: str | Path, resume_offsets: dict | None = None, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.eval_path = self.run_dir / "eval.csv"
        if resume_offsets is not None:
            for path in (self.jsonl_path, self.eval_path):
                size = resume_offsets.get(path.name, 0)
                if path.exists():
                    with open(path, "r+b") as f:
                        f.truncate(size)
        if not self.eval_path.exists() or self.eval_path.stat().st_size == 0:
            self.eval_path.write_text(EVAL_HEADER)
        self._jsonl = open(self.jsonl_path, "a")
        self._eval = open(self.eval_path, "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)

    def log(self, env_steps: int, metrics: dict[str, float]) -> None:
        record = {"env_steps": env_steps}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
            if self._tb is not None:
                self._tb.add_scalar(key, value, env_steps)
        self._jsonl.write(json.dumps(record) + "\n")

    def log_eval(self, env_steps: int, returns: list[float], train_seconds: float | None = None) -> None:
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
        self._eval.write(f"{env_steps},{mean:.6f},{std:.6f},{len(returns)}\n")
        extra = {} if train_seconds is None else {"eval/train_seconds": train_seconds}
        self.log(env_steps, {"eval/mean_return": mean, "eval/std_return": std} | extra)

    def log_text(self, tag: str, text: str) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text)

    def flush(self) -> dict[str, int]:
        """Flush and fsync the plain logs; return their sizes (stored in checkpoints)."""
        sizes = {}
        for f, path in ((self._jsonl, self.jsonl_path), (self._eval, self.eval_path)):
            f.flush()
            os.fsync(f.fileno())
            sizes[path.name] = path.stat().st_size
        if self._tb is not None:
            self._tb.flush()
        return sizes

    def close(self) -> None:
        self.flush()
        self._jsonl.close()
        self._eval.close()
        if self._tb is not None:
            self._tb.close()


def read_eval_csv(path: str | Path) -> list[tuple[int, float, float]]:
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 3:
            rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return rows


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
