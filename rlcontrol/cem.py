"""The cross-entropy method (CEM) as a batched maximizer of a score over a box of actions.

QT-Opt (Kalashnikov et al. 2018; seed 001 "Q-learning applied to robotics") has no actor: its
policy is pi(s) = argmax_a Q(s, a), found by CEM, a derivative-free optimizer:

    1. start from a Gaussian N(mu, sigma^2) over actions (mu at the centre of the box,
       sigma = half the range: the box is covered);
    2. draw N samples, clip them to the box, score them, keep the M best (the elites);
    3. refit mu, sigma to the elites and go to 2, for I iterations in all.

The answer is the best sample scored in any iteration, with its score. QT-Opt used 2
iterations of 64 samples with 6 elites (the follow-up Q2-Opt also 2 x 64).

Everything is vectorized over a batch of B states: the score function is called once per
iteration with all B x N candidate actions, shape (B, N, A) -> scores (B, N).

Randomness is injected, never drawn inside: the caller passes the standard-normal draws
`noise`, either (I, N, A), shared by every state of the batch, or (I, B, N, A). `CEM` keeps a
fixed (I, N, A) draw as a buffer, which makes its `forward` a deterministic function: the
ONNX export traces it into a graph without random ops that matches PyTorch exactly. Fresh
draws per call (for Bellman targets, say) come from `CEM.sample_noise` with a seeded
torch.Generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def cem_maximize(score_fn: ScoreFn, noise: torch.Tensor, low: torch.Tensor, high: torch.Tensor, num_elites: int,
                 init_mean: torch.Tensor, init_std: torch.Tensor, return_margin: bool = False):
    """Maximize `score_fn` over the box [low, high]^A for a batch of B problems.

    score_fn:  candidate actions (B, N, A) -> scores (B, N); called once per iteration.
    noise:     standard-normal draws (I, N, A) (shared by the batch) or (I, B, N, A); I is
               the number of iterations and N the samples per iteration.
    low, high: (A,) bounds; every candidate is clipped into them.
    num_elites: M <= N, the best samples each refit uses.
    init_mean, init_std: (B, A) the first Gaussian (B gives the batch size).

    Returns (best action (B, A), its score (B,)): the highest-scoring candidate of all
    iterations (a sample, so it lies in the box and its score was computed, not guessed).

    With `return_margin`, also the tie margin (B,): the smallest score gap at any decision
    CEM took (best vs. runner-up in each iteration, the elite cut M vs. M+1 before each
    refit, each iteration's best vs. the best so far) between candidates that are different
    actions. A decision with a gap at float rounding level can go either way in another
    floating-point implementation of the same scores (ONNX Runtime vs. PyTorch, CPU vs. GPU),
    and the answer then moves; `tie_margin` says when that is the reason (export parity).
    """
    iterations, samples, action_dim = noise.shape[0], noise.shape[-2], noise.shape[-1]
    if not 1 <= num_elites <= samples:
        raise ValueError(f"CEM needs 1 <= elites <= samples, got {num_elites} elites of {samples} samples")
    mean, std = init_mean, init_std
    best_action = best_score = None
    gaps: list[torch.Tensor] = []
    ranked = min(num_elites + 1, samples) if return_margin else num_elites  # one more for the elite cut
    for i in range(iterations):
        # (B, 1, A) + (B, 1, A) * (N, A) or (B, N, A) -> (B, N, A)
        candidates = mean.unsqueeze(1) + std.unsqueeze(1) * noise[i]
        candidates = torch.minimum(torch.maximum(candidates, low), high)
        scores = score_fn(candidates)  # (B, N)
        top_scores, top_index = scores.topk(ranked, dim=1)  # sorted, best first
        top = candidates.gather(1, top_index.unsqueeze(-1).expand(-1, -1, action_dim))  # (B, ranked, A)
        elites = top[:, :num_elites]  # (B, M, A)
        if return_margin:
            if ranked > 1:
                gaps.append(_gap(top_scores[:, 0], top_scores[:, 1], top[:, 0], top[:, 1]))
            if ranked > num_elites and i + 1 < iterations:
                m = num_elites
                gaps.append(_gap(top_scores[:, m - 1], top_scores[:, m], top[:, m - 1], top[:, m]))
            if best_action is not None:
                gaps.append(_gap(top_scores[:, 0], best_score, elites[:, 0], best_action))
        if best_action is None:
            best_action, best_score = elites[:, 0], top_scores[:, 0]
        else:
            better = top_scores[:, 0] > best_score
            best_action = torch.where(better.unsqueeze(-1), elites[:, 0], best_action)
            best_score = torch.where(better, top_scores[:, 0], best_score)
        if i + 1 < iterations:
            mean = elites.mean(dim=1)
            # Population std of the elites (written out: a plain reduction in the ONNX graph).
            std = (elites - mean.unsqueeze(1)).square().mean(dim=1).sqrt()
    if not return_margin:
        return best_action, best_score
    margin = torch.stack(gaps).amin(dim=0) if gaps else torch.full_like(best_score, float("inf"))
    return best_action, best_score, margin


def _gap(score_a: torch.Tensor, score_b: torch.Tensor, action_a: torch.Tensor, action_b: torch.Tensor) -> torch.Tensor:
    """|score_a - score_b| (B,), or inf where the two candidates are the same action (samples
    clipped onto the same bound): choosing either of two identical actions changes nothing."""
    same = (action_a == action_b).all(dim=-1)
    return torch.where(same, torch.full_like(score_a, float("inf")), (score_a - score_b).abs())


class CEM(nn.Module):
    """A CEM maximizer over [low, high]^A with its settings and a fixed noise draw.

    Args:
        low, high: the action box, (A,) each (QT-Opt's agent uses [-1, 1]^A).
        samples (N), elites (M), iterations (I): as in `cem_maximize`.
        init_std: the first Gaussian's std as a fraction of the half range (1: sigma = half range).
        seed: seeds the fixed (I, N, A) standard-normal buffer `noise` that `forward` uses.

    forward(score_fn, batch_size) -> (best action (B, A), score (B,)) with the fixed noise:
    deterministic, and what an exported policy computes (return_margin: see cem_maximize). `maximize(score_fn, batch_size,
    generator)` draws fresh (I, B, N, A) noise from `generator` instead.
    """

    def __init__(self, low, high, samples: int = 64, elites: int = 6, iterations: int = 2, init_std: float = 1.0,
                 seed: int = 0):
        super().__init__()
        low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
        if low.shape != high.shape or not bool((high > low).all()):
            raise ValueError(f"CEM needs low < high elementwise, got low={low.tolist()}, high={high.tolist()}")
        if samples < 1 or iterations < 1 or not 1 <= elites <= samples:
            raise ValueError(f"CEM needs samples >= 1, iterations >= 1 and 1 <= elites <= samples; "
                             f"got samples={samples}, elites={elites}, iterations={iterations}")
        if not init_std > 0:
            raise ValueError(f"CEM init_std must be > 0, got {init_std}")
        self.samples, self.elites, self.iterations = int(samples), int(elites), int(iterations)
        self.action_dim = low.numel()
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("center", (low + high) / 2)
        self.register_buffer("init_std", (high - low) / 2 * float(init_std))
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("noise", torch.randn(self.iterations, self.samples, self.action_dim, generator=generator))

    def initial(self, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
        """The first Gaussian's (mean, std), (B, A) each.
        expand, not repeat: a view, and `batch_size` may be a traced size in an ONNX export."""
        return self.center.expand(batch_size, -1), self.init_std.expand(batch_size, -1)

    def forward(self, score_fn: ScoreFn, batch_size, return_margin: bool = False):
        mean, std = self.initial(batch_size)
        return cem_maximize(score_fn, self.noise, self.low, self.high, self.elites, mean, std, return_margin)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh standard-normal draws (I, B, N, A), independent for every problem of the batch."""
        return torch.randn(self.iterations, batch_size, self.samples, self.action_dim, generator=generator,
                           device=self.noise.device)

    def maximize(self, score_fn: ScoreFn, batch_size: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As `forward`, with fresh noise from `generator` (or the global RNG)."""
        mean, std = self.initial(batch_size)
        return cem_maximize(score_fn, self.sample_noise(batch_size, generator), self.low, self.high, self.elites,
                            mean, std)

    def extra_repr(self) -> str:
        return f"action_dim={self.action_dim}, samples={self.samples}, elites={self.elites}, iterations={self.iterations}"
