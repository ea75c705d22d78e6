"""Reducing a critic ensemble's estimates to one, shared by the DDPG family and SAC.

REDQ (Chen et al. 2021) keeps N critics and takes each target's minimum over a random subset
of M of them (a fresh subset every update); M = N is TD3's and SAC's clipped double Q. The
subset arrives as a mask tensor (0 for chosen members, +inf for the rest) drawn by the agent
from its own generator: a tensor, not a Python list, so the update stays a pure function of
tensors (and a CUDA graph can replay it with a new subset).
"""

from __future__ import annotations

import torch

REDUCTIONS = ("min", "mean", "first")


def reduce_members(q: torch.Tensor, how: str, subset_mask: torch.Tensor | None = None) -> torch.Tensor:
    """q (E, B) -> (B,): the minimum over the members in the subset, the mean over all, or member 0."""
    if how == "min":
        if subset_mask is not None:
            q = q + subset_mask.unsqueeze(-1)
        return q.amin(dim=0)
    if how == "mean":
        return q.mean(dim=0)
    if how == "first":
        return q[0]
    raise ValueError(f"unknown ensemble reduction {how!r}; valid: {', '.join(REDUCTIONS)}")


def subset_mask(ensemble_size: int, subset: int, generator: torch.Generator, device) -> torch.Tensor | None:
    """A random subset of `subset` members as an additive mask (E,), or None when it is all of them."""
    if subset >= ensemble_size:
        return None
    chosen = torch.randperm(ensemble_size, generator=generator, device=device)[:subset]
    mask = torch.full((ensemble_size,), float("inf"), device=device)
    return mask.index_fill_(0, chosen, 0.0)
