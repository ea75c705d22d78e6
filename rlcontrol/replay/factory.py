"""One constructor for the training loop: uniform or prioritized replay from config values."""

from __future__ import annotations

from typing import Any

import torch

from rlcontrol.replay.buffer import ReplayBuffer
from rlcontrol.replay.frame_pool import FrameReplayBuffer, PrioritizedFrameReplayBuffer, has_image_parts
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
    frame_pool: bool | None = None,
) -> ReplayBuffer:
    """A :class:`PrioritizedReplayBuffer` if ``prioritized`` else a uniform :class:`ReplayBuffer`
    (which ignores ``alpha``, ``beta0``, ``beta_steps`` and ``eps``). Both sample the same
    :class:`Batch`; uniform batches have ``weights`` all ones, so one loss handles both.

    ``frame_pool``: store uint8 image parts once per frame (:mod:`rlcontrol.replay.frame_pool`);
    ``None`` = whenever the observation has uint8 image parts."""
    if frame_pool is None:
        frame_pool = has_image_parts(obs_spec, obs_dtype)
    common = {"seed": seed, "device": device, "obs_dtype": obs_dtype}
    if prioritized:
        cls = PrioritizedFrameReplayBuffer if frame_pool else PrioritizedReplayBuffer
        return cls(capacity, obs_spec, action_dim, alpha=alpha, beta0=beta0, beta_steps=beta_steps, eps=eps, **common)
    return (FrameReplayBuffer if frame_pool else ReplayBuffer)(capacity, obs_spec, action_dim, **common)
