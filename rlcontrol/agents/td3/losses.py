"""TD3's target (seed 003, "TD3"); the critic and actor losses are DDPG's.

    a~' = clip(mu_theta'(s') + clip(xi, -c, c), -1, 1),  xi ~ N(0, sigma^2)   (target policy smoothing)
    t   = r + gamma * min_i Q_phi_i'(s', a~')                                   (clipped double Q)

Both critics regress onto the same t; the actor follows Q_phi_1 and is updated every d
critic updates together with the targets (the schedule lives in agents/learner.py).
"""

from __future__ import annotations

import torch
from torch import nn

from rlcontrol.agents.ensemble_targets import reduce_members


def smoothed_target_action(target_actor: nn.Module, next_obs: torch.Tensor, std_normal: torch.Tensor,
                           noise_std: float, noise_clip: float) -> torch.Tensor:
    """clip(mu'(s') + clip(std * eps, -c, c), -1, 1), eps = `std_normal` ~ N(0, I) of shape (B, action_dim).

    The caller draws eps (from its own seeded generator), which keeps this function pure and
    compilable. next_obs (B, obs_dim) -> (B, action_dim).
    """
    action = target_actor(next_obs)
    noise = (std_normal * noise_std).clamp(-noise_clip, noise_clip)
    return (action + noise).clamp(-1.0, 1.0)


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor,
                  target_actor: nn.Module, target_critic: nn.Module, std_normal: torch.Tensor,
                  subset_mask: torch.Tensor | None = None, *, noise_std: float, noise_clip: float) -> torch.Tensor:
    """t = r + discount * min_i Q_i'(s', a~'). reward, discount (B,), next_obs (B, obs_dim),
    std_normal (B, action_dim) -> (B,). With `subset_mask` the min runs over REDQ's random subset."""
    next_action = smoothed_target_action(target_actor, next_obs, std_normal, noise_std, noise_clip)
    next_q = reduce_members(target_critic(next_obs, next_action)[..., 0], "min", subset_mask)
    return reward + discount * next_q
