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

from rlcontrol.agents.ensemble_targets import reduce_members


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor,
                  target_actor: nn.Module, target_critic: nn.Module, std_normal: torch.Tensor | None = None,
                  subset_mask: torch.Tensor | None = None) -> torch.Tensor:
    """t = r + discount * Q'(s', mu'(s')).  reward, discount: (B,); next_obs (B, obs_dim) -> (B,).

    Call under torch.no_grad(): targets carry no gradient. `std_normal` is unused (DDPG's
    target has no smoothing noise); it keeps the signature TD3's. With an ensemble of critics
    Q' is the minimum over the members (over `subset_mask`'s subset: REDQ); one critic is itself.
    """
    next_action = target_actor(next_obs)
    next_q = reduce_members(target_critic(next_obs, next_action)[..., 0], "min", subset_mask)
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


def actor_loss(actor: nn.Module, critic: nn.Module, obs: torch.Tensor, reduce: str = "first") -> torch.Tensor:
    """-mean_k Q(s_k, mu(s_k)): the deterministic policy gradient, through the first critic only
    (DDPG, TD3: `reduce="first"`, which evaluates no other member) or the ensemble's min or mean."""
    if reduce == "first":
        return -critic(obs, actor(obs), member=0).mean()
    return -reduce_members(critic(obs, actor(obs))[..., 0], reduce).mean()
