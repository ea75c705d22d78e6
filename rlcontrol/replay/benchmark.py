"""Time the replay hot paths: ``python -m rlcontrol.replay.benchmark [--capacity N] [--batch B]``.

Fills a buffer of flat float32 observations, then reports the median microseconds per call of
``sample(B)`` (and, for prioritized replay, ``update_priorities``) and of a single ``add``.
``--pixels`` instead compares the plain and the frame-pool buffer on {"pixels": uint8 (3, 64, 64),
"state": float32 (obs_dim,)} episodes (default capacity 100k: the plain one takes 2.5 GB there).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from rlcontrol.replay.buffer import ReplayBuffer
from rlcontrol.replay.frame_pool import FrameReplayBuffer
from rlcontrol.replay.prioritized import PrioritizedReplayBuffer


def _microseconds_per_call(function: Callable[[], object], calls: int, repeats: int = 5) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def _fill(buffer: ReplayBuffer, obs_dim: int, action_dim: int, rng: np.random.Generator) -> None:
    chunk = min(buffer.capacity, 100_000)
    while len(buffer) < buffer.capacity:
        count = min(chunk, buffer.capacity - len(buffer))
        buffer.add_batch(
            {
                "obs": rng.standard_normal((count, obs_dim), dtype=np.float32),
                "action": rng.uniform(-1, 1, (count, action_dim)).astype(np.float32),
                "reward": rng.standard_normal(count, dtype=np.float32),
                "discount": np.full(count, 0.99, np.float32),
                "next_obs": rng.standard_normal((count, obs_dim), dtype=np.float32),
            }
        )


def measure(buffer: ReplayBuffer, batch_size: int, single: dict, calls: int) -> dict[str, float]:
    """Median microseconds per call of the hot paths of a filled ``buffer``."""
    timings = {}
    if isinstance(buffer, PrioritizedReplayBuffer):
        # Realistic spread of priorities rather than all items at the initial max.
        buffer.update_priorities(
            np.arange(len(buffer)), np.random.default_rng(1).exponential(size=len(buffer))
        )
        batch = buffer.sample(batch_size)
        td_abs = torch.rand(batch_size)
        timings["update_priorities"] = _microseconds_per_call(
            lambda: buffer.update_priorities(batch.indices, td_abs), calls
        )
    timings["sample"] = _microseconds_per_call(lambda: buffer.sample(batch_size), calls)
    timings["add"] = _microseconds_per_call(lambda: buffer.add(single), calls)
    return timings


PIXEL_SHAPE = (3, 64, 64)


def _pixel_episode(length: int, start: int, obs_dim: int, action_dim: int, rng: np.random.Generator) -> dict:
    """``length`` consecutive transitions as one ``add_batch`` dict: distinct frames (a random image
    stamped with its global index ``start + t``), ``obs`` of step t+1 = ``next_obs`` of step t."""
    frames = np.repeat(rng.integers(0, 256, (1, *PIXEL_SHAPE), dtype=np.uint8), length + 1, axis=0)
    frames[:, 0, 0, :8] = np.arange(start, start + length + 1, dtype="<u8")[:, None].view(np.uint8)
    state = rng.standard_normal((length + 1, obs_dim), dtype=np.float32)
    return {
        "obs": {"pixels": frames[:-1], "state": state[:-1]},
        "action": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
        "reward": rng.standard_normal(length, dtype=np.float32),
        "discount": np.full(length, 0.99, np.float32),
        "next_obs": {"pixels": frames[1:], "state": state[1:]},
    }


def _pixel_case(buffer: ReplayBuffer, batch_size: int, obs_dim: int, action_dim: int, calls: int) -> str:
    rng = np.random.default_rng(0)
    for start in range(0, buffer.capacity, 1000):  # fill with 1000-step episodes
        count = min(1000, buffer.capacity - start)
        buffer.add_batch(_pixel_episode(count, buffer.capacity + start, obs_dim, action_dim, rng))
    episode = _pixel_episode(calls + 1, 0, obs_dim, action_dim, rng)
    stream = iter([{key: ({k: v[t] for k, v in value.items()} if isinstance(value, dict) else value[t])
                    for key, value in episode.items()} for t in range(calls + 1)])
    add_us = _microseconds_per_call(lambda: buffer.add(next(stream)), calls // 6)
    sample_us = _microseconds_per_call(lambda: buffer.sample(batch_size), calls)
    per = (buffer.bytes_per_transition() if isinstance(buffer, FrameReplayBuffer)
           else 2 * np.prod(PIXEL_SHAPE) + 4 * (2 * obs_dim + action_dim + 2))
    return (f"add {1e6 / add_us:,.0f} transitions/s, sample {batch_size * 1e6 / sample_us:,.0f} "
            f"transitions/s ({sample_us:.0f} us per batch), {per:,.0f} bytes per transition")


def pixel_benchmark(capacity: int, batch_size: int, obs_dim: int, action_dim: int, calls: int) -> None:
    """Add and sample throughput (transitions/s) of the plain vs the frame-pool buffer on pixels."""
    spec = {"pixels": SimpleNamespace(shape=PIXEL_SHAPE, dtype=np.uint8), "state": (obs_dim,)}
    print(f"pixels {PIXEL_SHAPE} uint8 + state {obs_dim}, capacity {capacity}, batch {batch_size}")
    for cls in (ReplayBuffer, FrameReplayBuffer):
        buffer = cls(capacity, spec, action_dim, seed=0)
        print(f"{cls.__name__:>24}: " + _pixel_case(buffer, batch_size, obs_dim, action_dim, calls))
        del buffer  # (free it before the next one is filled)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=None, help="default 1M, or 100k with --pixels")
    parser.add_argument("--pixels", action="store_true", help="plain vs frame-pool buffer on 64x64x3 images")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.pixels:
        pixel_benchmark(args.capacity or 100_000, args.batch, args.obs_dim, args.action_dim, args.calls)
        return
    args.capacity = args.capacity or 1_000_000
    rng = np.random.default_rng(0)
    single = {
        "obs": rng.standard_normal(args.obs_dim),
        "action": rng.standard_normal(args.action_dim),
        "reward": 1.0,
        "discount": 0.99,
        "next_obs": rng.standard_normal(args.obs_dim),
    }
    print(f"capacity {args.capacity}, obs {args.obs_dim}, action {args.action_dim}, batch {args.batch}")
    for cls in (ReplayBuffer, PrioritizedReplayBuffer):
        buffer = cls(args.capacity, (args.obs_dim,), args.action_dim, seed=0)
        _fill(buffer, args.obs_dim, args.action_dim, rng)
        timings = measure(buffer, args.batch, single, args.calls)
        print(f"{cls.__name__:>24}: " + ", ".join(f"{name} {us:.1f} us" for name, us in timings.items()))


if __name__ == "__main__":
    main()
