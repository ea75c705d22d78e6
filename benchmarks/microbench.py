"""Micro-measurements behind docs/benchmarks.md's analysis of the TD3 update.

    .venv/bin/python -m benchmarks.microbench

1. float32 matmul rate at the update's shapes (256x256x256, and the batched pair of critics);
2. framework overhead: one TD3 update with 8-unit hidden layers (no real matrix work) vs 2x256;
3. torch.optim.Adam(fused=True).step() vs the direct fused-kernel call of rlcontrol.optim.FusedAdam,
   for the twin critic's parameters.
Each is the best of several repeats, 2 torch threads.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch


def best_us(fn, n: int = 300, repeats: int = 5) -> float:
    for _ in range(30):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def matmul_rates() -> None:
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    t = best_us(lambda: a @ b)
    print(f"mm 256x256x256: {t:.0f} us = {2 * 256**3 / t / 1e3:.0f} GFLOP/s")
    a2, b2 = torch.randn(2, 256, 256), torch.randn(2, 256, 256)
    t = best_us(lambda: torch.bmm(a2, b2))
    print(f"bmm 2x256x256x256: {t:.0f} us = {2 * 2 * 256**3 / t / 1e3:.0f} GFLOP/s")


def update_overhead() -> None:
    from rlcontrol.agents.learner import DeterministicPolicyAgent
    from rlcontrol.config import TD3Config

    g = torch.Generator().manual_seed(0)
    batches = [SimpleNamespace(obs=torch.randn(256, 17, generator=g), next_obs=torch.randn(256, 17, generator=g),
                               action=torch.rand(256, 6, generator=g) * 2 - 1, reward=torch.randn(256, generator=g),
                               discount=torch.full((256,), 0.99), weights=None, indices=torch.arange(256))
               for _ in range(16)]
    for hidden in ([8, 8], [256, 256]):
        agent = DeterministicPolicyAgent("td3", TD3Config(actor_hidden=hidden, critic_hidden=hidden), (17,), 6)
        it = iter(range(10**9))
        t = best_us(lambda agent=agent, it=it: agent.update(batches[next(it) % 16]), n=100)
        print(f"TD3 update, hidden {hidden}: {t / 1e3:.2f} ms")


def adam_step() -> None:
    from rlcontrol.optim import FusedAdam

    shapes = [(2, 23, 256), (2, 1, 256), (2, 256, 256), (2, 1, 256), (2, 256, 1), (2, 1, 1)]
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    grads = [torch.randn(s) for s in shapes]
    for p, gr in zip(params, grads):
        p.grad = gr
    torch_adam = torch.optim.Adam(params, lr=3e-4, fused=True)
    print(f"torch.optim.Adam(fused=True).step(): {best_us(torch_adam.step):.0f} us")
    ours = FusedAdam(params, lr=3e-4)
    print(f"FusedAdam.step(grads):               {best_us(lambda: ours.step(grads)):.0f} us")


def main() -> None:
    torch.set_num_threads(2)
    matmul_rates()
    update_overhead()
    adam_step()


if __name__ == "__main__":
    main()
