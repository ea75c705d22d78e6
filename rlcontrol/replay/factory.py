"""One constructor for the training loop: uniform or prioritized replay from config values."""

from __future__ import annotations

from typing import Any

import torch

from rlcontrol.replay.buffer import ReplayBuffer
from rlcontrol.replay.prioritized import PrioritizedReplayBuffer


def make_replay(
    capacity: int,
    obs_spec: Any,
    action_dim: int,
    *,
    prioritized: bool,
    alpha: float = 0.6,
    beta0: float = 0.4,
    beta_steps: int = 100_000,
    eps: float = 1e-6,
    seed: int = 0,
    device: str | torch.device = "cpu",
    obs_dtype: torch.dtype = torch.float32,
) -> ReplayBuffer:
    """A :class:`PrioritizedReplayBuffer` if ``prioritized`` else a uniform :class:`ReplayBuffer`
    (which ignores ``alpha``, ``beta0``, ``beta_steps`` and ``eps``). Both sample the same
    :class:`Batch`; uniform batches have ``weights`` all ones, so one loss handles both."""
    if prioritized:
        return PrioritizedReplayBuffer(
            capacity,
            obs_spec,
            action_dim,
            alpha=alpha,
            beta0=beta0,
            beta_steps=beta_steps,
            eps=eps,
            seed=seed,
            device=device,
            obs_dtype=obs_dtype,
        )
    return ReplayBuffer(capacity, obs_spec, action_dim, seed=seed, device=device, obs_dtype=obs_dtype)
