"""Time the replay hot paths: ``python -m rlcontrol.replay.benchmark [--capacity N] [--batch B]``.

Fills a buffer of flat float32 observations, then reports the median microseconds per call of
``sample(B)`` (and, for prioritized replay, ``update_priorities``) and of a single ``add``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from rlcontrol.replay.buffer import ReplayBuffer
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
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
