"""SAC's losses as pure functions (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications": twin soft Q functions, a tanh-squashed Gaussian policy, automatic temperature).

    target    y = r + gamma * ( min_{i in M} Q_phi'_i(s', a') - alpha log pi_theta(a'|s') ),
              a' ~ pi_theta(.|s')   (the current policy; only the critics have target copies)
    critic    J_Q(phi_i) = E[ (Q_phi_i(s, a) - y)^2 ]                  for every critic i
    actor     J_pi(theta) = E_s[ alpha log pi_theta(a~|s) - Q(s, a~) ],  a~ = tanh(m + sigma * eps)
              (reparameterised; Q is the min of the critics as in the paper, or their mean: REDQ)
    alpha     J(alpha) = E[ -alpha (log pi_theta(a~|s) + H_target) ],   H_target = -dim(A) by default
              optimised through log alpha, so alpha stays positive.

M is every critic, or a random subset of them (REDQ, Chen et al. 2021); the agent draws the
subset and every Gaussian sample from its own seeded generator and passes them in, so these
functions stay pure. With n-step replay `reward` is the discounted n-step return and `discount`
gamma^m (0 after a termination); the entropy term then uses the state n steps ahead, as in
n-step soft Q-learning implementations.
"""

from __future__ import annotations

import torch
from torch import nn

from rlcontrol.agents.ensemble_targets import reduce_members


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor, actor: nn.Module,
                  target_critic: nn.Module, std_normal: torch.Tensor, alpha: torch.Tensor,
                  subset_mask: torch.Tensor | None = None) -> torch.Tensor:
    """y = r + discount * (min_{i in M} Q'_i(s', a') - alpha log pi(a'|s')). Call under no_grad.

    reward, discount (B,); next_obs (B, D); std_normal (B, A) draws the next action; alpha a
    scalar tensor; subset_mask (E,) 0 for members in M and +inf for the rest (None: all). -> (B,)
    """
    next_action, next_log_prob = actor.sample(next_obs, std_normal)
    next_q = reduce_members(target_critic(next_obs, next_action)[..., 0], "min", subset_mask)
    return reward + discount * (next_q - alpha * next_log_prob)


def actor_loss(actor: nn.Module, critic: nn.Module, obs: torch.Tensor, std_normal: torch.Tensor,
               alpha: torch.Tensor, reduce: str = "min") -> tuple[torch.Tensor, torch.Tensor]:
    """(E_s[alpha log pi(a~|s) - Q(s, a~)], log pi(a~|s) detached (B,) for the temperature loss).

    Q is `reduce` ("min", "mean" or "first") over the critic ensemble."""
    action, log_prob = actor.sample(obs, std_normal)
    member = 0 if reduce == "first" else None
    q = critic(obs, action, member=member)[..., 0]
    q = q if member is not None else reduce_members(q, reduce)
    return (alpha * log_prob - q).mean(), log_prob.detach()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """E[-alpha (log pi + H_target)], differentiated through log alpha (log_prob carries no gradient).

    Written with log alpha instead of alpha, as SAC's reference implementation and SB3 do: the
    gradient has the same sign and the step is better scaled when alpha is small."""
    return -(log_alpha * (log_prob + target_entropy)).mean()
