"""D4PG's losses as pure functions (seed 003, "D4PG"; Barth-Maron et al. 2018).

The critic predicts a categorical distribution Z_phi(s, a) over a fixed support of N atoms
z_1 < ... < z_N (v_min to v_max, spacing dz), as in Categorical DQN (Bellemare et al. 2017):

    target    (T Z)(s_t, a_t) = sum_{k<n} gamma^k r_{t+k+1} + gamma^n Z_phi'(s_{t+n}, mu_theta'(s_{t+n}))
              i.e. atom z_j of the target network's distribution moves to r + discount * z_j with
              its probability p_j, and is projected back onto the support (`categorical_projection`);
    critic    L(phi) = E[ KL(Phi T Z || Z_phi(s, a)) ] = E[ -sum_i m_i log p_phi,i(s, a) ] + const
              (cross-entropy against the projected target m, which carries no gradient);
    actor     grad J(theta) = E[ grad_theta mu_theta(s) grad_a E[Z_phi(s, a)]|_{a=mu_theta(s)} ]
              i.e. minimise -E[ sum_i z_i p_phi,i(s, mu_theta(s)) ].

With n-step replay `reward` is already the discounted n-step return and `discount` is gamma^m
(0 after a termination), exactly as for DDPG and TD3.
"""

from __future__ import annotations

import torch
from torch import nn

from rlcontrol.agents.ensemble_targets import reduce_members


def support(num_atoms: int, v_min: float, v_max: float, device=None) -> torch.Tensor:
    """The fixed atoms z_1..z_N, evenly spaced from v_min to v_max (float32, (N,))."""
    if not v_max > v_min:
        raise ValueError(f"v_max ({v_max}) must be greater than v_min ({v_min})")
    return torch.linspace(v_min, v_max, num_atoms, device=device)


def categorical_projection(reward: torch.Tensor, discount: torch.Tensor, probs: torch.Tensor,
                           atoms: torch.Tensor) -> torch.Tensor:
    """Project the shifted distribution r + discount * Z onto the support `atoms`.

    reward, discount (B,); probs (B, N), the target network's probabilities on `atoms`;
    atoms (N,). Returns m (B, N): each shifted atom Tz_j = clip(r + discount z_j, v_min, v_max)
    splits its mass p_j between its two neighbouring atoms in proportion to closeness,

        m_i = sum_j p_j * max(0, 1 - |Tz_j - z_i| / dz),

    (the hat-function form of Bellemare et al.'s l/u index update; identical results, no
    special case when Tz_j lands exactly on an atom). Mass is conserved; a terminal transition
    (discount 0) puts all mass on the atoms around r.
    """
    v_min, v_max = atoms[0], atoms[-1]
    dz = (v_max - v_min) / (atoms.numel() - 1)
    shifted = (reward.unsqueeze(-1) + discount.unsqueeze(-1) * atoms).clamp(v_min, v_max)  # (B, N_j)
    # weight[b, j, i] = how much of atom j's mass lands on atom i
    weight = (1.0 - (shifted.unsqueeze(-1) - atoms).abs() / dz).clamp(min=0.0)  # (B, N_j, N_i)
    return torch.bmm(probs.unsqueeze(1), weight).squeeze(1)


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor, target_actor: nn.Module,
                  target_critic: nn.Module, atoms: torch.Tensor,
                  subset_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected target distribution Phi T Z (B, N). Call under torch.no_grad().

    With an ensemble of distributional critics, each sample's target is the distribution of the
    member with the lowest mean E[Z] (among `subset_mask`'s subset): clipped double Q carried
    over to distributions by choosing whole distributions, so the target stays a distribution."""
    next_action = target_actor(next_obs)
    next_probs = torch.softmax(target_critic(next_obs, next_action), dim=-1)  # (E, B, N)
    if next_probs.shape[0] == 1:
        chosen = next_probs[0]
    else:
        means = (next_probs * atoms).sum(dim=-1)  # (E, B)
        if subset_mask is not None:
            means = means + subset_mask.unsqueeze(-1)
        lowest = means.argmin(dim=0)  # (B,)
        chosen = next_probs.gather(0, lowest.view(1, -1, 1).expand(1, -1, next_probs.shape[-1]))[0]
    return categorical_projection(reward, discount, chosen, atoms)


def critic_loss(logits: torch.Tensor, target_probs: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the predicted distribution against the projected target.

    logits (B, N), or (E, B, N) for an ensemble (each member's mean loss, summed); target_probs
    (B, N); weights (B,) importance weights or None. Returns (scalar loss, per-sample cross-entropy
    (B,) or (E, B), detached): the per-sample loss is what prioritized replay uses as the new
    priority (Barth-Maron et al., Sec. 3; an ensemble's is averaged over members by the agent).
    """
    per_sample = -(target_probs * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    weighted = per_sample * weights if weights is not None else per_sample
    return weighted.mean(dim=-1).sum(), per_sample.detach()


def expected_value(logits: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """E[Z] = sum_i z_i softmax(logits)_i, over the last dimension."""
    return (torch.softmax(logits, dim=-1) * atoms).sum(dim=-1)


def actor_loss(actor: nn.Module, critic: nn.Module, obs: torch.Tensor, atoms: torch.Tensor,
               reduce: str = "first") -> torch.Tensor:
    """-mean_k E[Z_phi(s_k, mu_theta(s_k))]: the policy gradient through the distribution's mean
    (of the first critic, or the ensemble's min or mean of the members' means)."""
    if reduce == "first":
        return -expected_value(critic(obs, actor(obs), member=0), atoms).mean()
    return -reduce_members(expected_value(critic(obs, actor(obs)), atoms), reduce).mean()
