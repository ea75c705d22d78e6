"""QT-Opt's losses as pure functions (Kalashnikov et al. 2018; seed 001, "QT-Opt").

Q-learning with continuous actions: there is no actor; the max over actions is found by
the cross-entropy method (rlcontrol/cem.py). With two Q estimates and lagged (Polyak-
averaged) target networks Q'_1, Q'_2, the paper's clipped double-Q target is

    a*   = argmax_a Q'_1(s', a)                    CEM on the *target* network's first estimate
    y    = r + discount * min_i Q'_i(s', a*)       both target estimates at a*, the smaller one
    L(phi) = sum_i E[ D(Q_phi_i(s, a), y) ]        D: squared error, or the log loss

The action is chosen by one estimate and valued by the minimum of both, so the
maximization bias of max_a Q (which CEM's max over noisy estimates makes worse) is not
compounded; this is QT-Opt's Eq. for V(s') with pi_bar_1 = CEM over Q_bar_1.

Loss `cross_entropy` is QT-Opt's: rewards in [0, 1] (grasp success), Q = sigmoid(logit), and
D(q, y) = -(y log q + (1 - y) log(1 - q)), whose targets must be probabilities, so y is
clipped to [0, 1]. Loss `mse` is plain fitted Q-iteration for any reward scale.

With n-step replay `reward` is the discounted n-step return and `discount` is gamma^m, 0
after a termination (the replay computes both), so `r + discount * V'` covers every case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlcontrol.cem import cem_maximize

LOSSES = ("mse", "cross_entropy")


def q_value(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """The network's raw output -> Q: identity for mse, sigmoid for cross_entropy."""
    return torch.sigmoid(logits) if loss == "cross_entropy" else logits


def cem_argmax(q_net, features: torch.Tensor, noise: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
               elites: int, init_mean: torch.Tensor, init_std: torch.Tensor, member: int = 0) -> torch.Tensor:
    """argmax_a Q_member(s, a) by CEM for B states with `features` = q_net.encode(s). -> (B, A).

    CEM maximizes the raw output; sigmoid is monotonic, so the argmax is Q's.
    """
    action, _ = cem_maximize(lambda c: q_net.score_candidates(features, c, member), noise, low, high, elites,
                             init_mean, init_std)
    return action


def critic_target(reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor, target_q, noise: torch.Tensor,
                  low: torch.Tensor, high: torch.Tensor, elites: int, init_mean: torch.Tensor, init_std: torch.Tensor,
                  loss: str) -> torch.Tensor:
    """y = r + discount * min_i Q'_i(s', a*), a* = CEM argmax_a Q'_1(s', a). -> (B,).

    reward, discount (B,); next_obs (B, D) normalized; target_q the target network; noise
    the CEM draws (I, B, N, A) or (I, N, A); low/high/elites/init_* the CEM settings.
    Call under torch.no_grad(): targets carry no gradient.
    """
    features = target_q.encode(next_obs)
    best = cem_argmax(target_q, features, noise, low, high, elites, init_mean, init_std, member=0)
    next_value = q_value(target_q.head(features, best), loss).amin(dim=0)  # (E, B) -> (B,)
    target = reward + discount * next_value
    return target.clamp(0.0, 1.0) if loss == "cross_entropy" else target


def critic_loss(logits: torch.Tensor, target: torch.Tensor, loss: str,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over the E estimates of the (importance-weighted) batch mean of D(Q_i(s, a), y).

    logits (E, B) raw outputs at the replayed (s, a); target (B,) shared by all estimates;
    weights (B,) importance weights from prioritized replay, or None.
    Returns (scalar loss, per-sample loss (B,) averaged over the estimates, TD errors (E, B)
    = y - Q_i(s, a)), the last two detached.
    """
    q = q_value(logits, loss)
    if loss == "cross_entropy":
        # binary_cross_entropy_with_logits is the numerically stable form of -(y log q + (1-y) log(1-q)).
        per_sample = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    elif loss == "mse":
        per_sample = (target.unsqueeze(0) - q).square()
    else:
        raise ValueError(f"unknown QT-Opt loss {loss!r}; valid: {', '.join(LOSSES)}")
    weighted = per_sample * weights if weights is not None else per_sample
    return weighted.mean(dim=1).sum(), per_sample.detach().mean(dim=0), (target.unsqueeze(0) - q).detach()


def priority(per_sample: torch.Tensor, td: torch.Tensor, loss: str) -> torch.Tensor:
    """New replay priorities (B,): |TD| averaged over the estimates for mse (Schaul et al.'s
    p = |delta|, as TD3 here), the per-sample log loss for cross_entropy (as D4PG's
    per-sample cross-entropy)."""
    return per_sample if loss == "cross_entropy" else td.abs().mean(dim=0)
