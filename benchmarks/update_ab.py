"""One TD3 update (2x256, batch 256, cheetah-run sizes), eager vs torch.compile, interleaved best-of-8.

    .venv/bin/python -m benchmarks.update_ab

Both agents replay the same 64 synthetic batches; the best of 8 interleaved 100-update rounds
is reported for each, which filters this machine's bursty slowdowns.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch


def main() -> None:
    from rlcontrol.agents.learner import DeterministicPolicyAgent
    from rlcontrol.config import TD3Config

    torch.set_num_threads(2)
    n = 100_000
    g = torch.Generator().manual_seed(0)
    store = {k: torch.randn(n, d, generator=g) for k, d in (("obs", 17), ("next_obs", 17), ("action", 6))}
    reward, discount = torch.randn(n, generator=g), torch.full((n,), 0.99)

    def sample():
        idx = torch.randint(0, n, (256,), generator=g)
        return SimpleNamespace(obs=store["obs"][idx], next_obs=store["next_obs"][idx], action=store["action"][idx],
                               reward=reward[idx], discount=discount[idx], weights=None, indices=idx)

    batches = [sample() for _ in range(64)]
    agents = {"eager": DeterministicPolicyAgent("td3", TD3Config(), (17,), 6),
              "compiled": DeterministicPolicyAgent("td3", TD3Config(), (17,), 6, compile=True)}
    for agent in agents.values():
        for b in batches[:4]:
            agent.update(b)
    best = dict.fromkeys(agents, float("inf"))
    for _ in range(8):
        for name, agent in agents.items():
            t = time.perf_counter()
            for i in range(100):
                agent.update(batches[i % 64])
            best[name] = min(best[name], (time.perf_counter() - t) / 100)
    for name, t in best.items():
        print(f"{name:9s} {t * 1e3:.2f} ms/update ({1 / t:.0f} updates/s)")


if __name__ == "__main__":
    main()
