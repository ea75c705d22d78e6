"""Append and read rates of the on-disk transition log (rlcontrol.replay.transition_log).

    .venv/bin/python -m benchmarks.transition_log [--seconds 2] [--dir DIR] [--policies interval,every,none]

Two transitions: a 64x64x3 uint8 camera image (obs and next_obs: 24,600 bytes a record, 2 actions)
and a 17-float state (207 bytes, 6 actions), as the policy node would send them. For each fsync
policy, appends for --seconds into a fresh log in --dir (default: a temp folder; fsync costs depend
on its filesystem, reported), then reads the log back and loads it into a replay buffer
(n-step 3). Prints one JSON object per row, then all rows as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from rlcontrol.replay import TransitionLog, TransitionSchema, load_replay, read_log, replay_for_log

KINDS = {
    "image_64x64x3": ({"camera": np.zeros((3, 64, 64), np.uint8)}, 2),
    "state_17": ((17,), 6),
}


def _transitions(schema: TransitionSchema, count: int, rng: np.random.Generator) -> list[dict]:
    """Distinct inputs, made before timing (the sender's arrays, not the log's work)."""
    def obs():
        return {name: rng.integers(0, 256, f.shape, dtype=np.uint8) if f.dtype == "uint8"
                else rng.standard_normal(f.shape).astype(np.float32) for name, f in schema.obs_parts.items()}

    out = []
    for i in range(count):
        o, n = obs(), obs()
        out.append({"obs": o.get(None, o), "next_obs": n.get(None, n),
                    "action": rng.uniform(-1, 1, schema.action_dim).astype(np.float32), "reward": 0.1,
                    "terminated": False, "truncated": i % 200 == 199, "episode": i // 200, "step": i % 200})
    return out


def _filesystem(path: Path) -> str:
    best = ("?", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
            best = (fstype, mount)
    return best[0]


def measure(kind: str, policy: str, seconds: float, root: Path) -> dict:
    obs_spec, action_dim = KINDS[kind]
    schema = TransitionSchema.for_transitions(obs_spec, action_dim)
    inputs = _transitions(schema, 256, np.random.default_rng(0))
    directory = root / f"{kind}-{policy}"
    latencies = []
    with TransitionLog.open(directory, schema, fsync=policy) as log:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            log.append(inputs[log.next_seq % len(inputs)])
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        appended, fsyncs = log.next_seq, log.fsync_count
    t = time.perf_counter()
    with read_log(directory) as reader:
        read = sum(1 for _ in reader)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    replay = replay_for_log(schema, appended + 1)
    load_replay(directory, replay, n_step=3, gamma=0.99)
    load_s = time.perf_counter() - t
    shutil.rmtree(directory)
    lat = np.array(latencies) * 1e6
    return {"transition": kind, "fsync": policy, "record_bytes": schema.record_bytes, "appends": appended,
            "appends_per_s": round(appended / elapsed), "append_us_p50": round(float(np.median(lat)), 1),
            "append_us_p99": round(float(np.percentile(lat, 99)), 1), "fsyncs": fsyncs,
            "read_records_per_s": round(read / read_s), "load_replay_records_per_s": round(read / load_s),
            "replay": type(replay).__name__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--policies", default="interval,every,none")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="transition-log-bench-", dir=args.dir))
    try:
        rows = []
        for kind in KINDS:
            for policy in args.policies.split(","):
                row = measure(kind, policy, args.seconds, root) | {"filesystem": _filesystem(root),
                                                                  "cpus": os.cpu_count()}
                print(json.dumps(row), flush=True)
                rows.append(row)
        print(json.dumps(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
