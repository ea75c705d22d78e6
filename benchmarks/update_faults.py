"""Page faults and mean time per TD3 update, with and without rlcontrol's malloc tuning.

    .venv/bin/python -m benchmarks.update_faults [--pairs 3] [--updates 600]

Each measurement is a fresh process (malloc settings are per process): 2x256 networks,
batch 256, 2 threads, 50 warm-up updates, then the mean over --updates updates and the
minor page faults per update (getrusage). Pairs alternate default / tuned.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from types import SimpleNamespace


def measure(tuned: bool, updates: int) -> dict:
    import torch

    from rlcontrol.agents.learner import DeterministicPolicyAgent
    from rlcontrol.config import TD3Config
    from rlcontrol.training.malloc import keep_freed_memory

    if tuned:
        keep_freed_memory()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    batches = [SimpleNamespace(obs=torch.randn(256, 17, generator=g), next_obs=torch.randn(256, 17, generator=g),
                               action=torch.rand(256, 6, generator=g) * 2 - 1, reward=torch.randn(256, generator=g),
                               discount=torch.full((256,), 0.99), weights=None, indices=torch.arange(256))
               for _ in range(16)]
    agent = DeterministicPolicyAgent("td3", TD3Config(), (17,), 6)
    for i in range(50):
        agent.update(batches[i % 16])
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for i in range(updates):
        agent.update(batches[i % 16])
    elapsed = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"tuned": tuned, "mean_update_ms": 1e3 * elapsed / updates, "minor_faults_per_update": faults / updates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--one", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one == "tuned", args.updates)))
        return
    for _ in range(args.pairs):
        for which in ("default", "tuned"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.update_faults", "--one", which, "--updates",
                                  str(args.updates)], capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{which:>7}: {r['mean_update_ms']:.2f} ms per update, "
                  f"{r['minor_faults_per_update']:.0f} minor page faults per update", flush=True)


if __name__ == "__main__":
    main()
