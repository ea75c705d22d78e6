"""DDPG's losses as pure functions of (networks, batch tensors). Seed 003, "DDPG":

    target    t_k = r_k + gamma * Q_phi'(s'_k, mu_theta'(s'_k))
    critic    L(phi) = 1/K sum_k (t_k - Q_phi(s_k, a_k))^2
    actor     grad J(theta) = 1/K sum_k grad_theta mu_theta(s_k) grad_a Q_phi(s_k, a)|a=mu_theta(s_k)
              i.e. minimise -1/K sum_k Q_phi(s_k, mu_theta(s_k)).

With n-step replay the stored `reward` is the discounted n-step return and `discount`
is gamma^m (0 after a termination), so `r + discount * Q'` covers every case.
TD3 reuses `critic_loss` and `actor_loss`; only its target differs (td3/losses.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor,
                  target_actor: nn.Module, target_critic: nn.Module, std_normal: torch.Tensor | None = None) -> torch.Tensor:
    """t = r + discount * Q'(s', mu'(s')).  reward, discount: (B,); next_obs (B, obs_dim) -> (B,).

    Call under torch.no_grad(): targets carry no gradient. `std_normal` is unused (DDPG's
    target has no smoothing noise); it keeps the signature TD3's.
    """
    next_action = target_actor(next_obs)
    next_q = target_critic(next_obs, next_action)[0, :, 0]
    return reward + discount * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                huber: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over ensemble members of the (importance-weighted) mean TD loss.

    q: (E, B) predictions; target: (B,) shared by all members (TD3: both critics learn the
    same target); weights: (B,) importance weights from prioritized replay, or None.
    Returns (scalar loss, td errors (E, B) = target - q, detached).
    """
    td = target.unsqueeze(0) - q
    if huber:
        per_sample = F.huber_loss(q, target.expand_as(q), reduction="none", delta=1.0)
    else:
        per_sample = td.square()
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean(dim=1).sum(), td.detach()


def actor_loss(actor: nn.Module, critic: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """-mean_k Q_1(s_k, mu(s_k)): the deterministic policy gradient through the first critic only."""
    return -critic(obs, actor(obs), member=0).mean()
