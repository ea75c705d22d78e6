"""Policy networks: the deterministic mu_theta(s) of the DDPG family and SAC's tanh-Gaussian."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU,
        layer_norm: bool = False) -> nn.Sequential:
    """[Linear -> (LayerNorm) -> activation] x len(hidden) -> Linear."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers.append(nn.Linear(prev, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(activation())
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)), so actions are normalized to [-1, 1]^A.

    The environment maps [-1, 1] to the task's physical bounds (envs.core.scale_action);
    the export issue bakes that mapping into the ONNX graph.
    obs: (B, obs_dim) float32 (already normalized) -> (B, action_dim).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256), layer_norm: bool = False):
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.net = mlp(obs_dim, hidden, action_dim, layer_norm=layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


LOG_2 = math.log(2.0)


class GaussianActor(nn.Module):
    """SAC's policy (Haarnoja et al. 2018): a = tanh(u), u ~ N(m_theta(s), diag(sigma_theta(s)^2)).

    `body` maps the (normalized) observation to 2A numbers: the mean m and an unbounded log-std
    that is squashed smoothly into [log_std_min, log_std_max] (as in SAC's reference code bases,
    so the std can neither collapse to 0 nor explode). Calling the module gives the
    deterministic action tanh(m): what evaluation, `policy()` and the ONNX export use, so the
    exported graph is the same shape as a DDPG/TD3 policy's.
    """

    def __init__(self, body: nn.Module, action_dim: int, log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.body, self.action_dim = body, action_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-tanh Gaussian, each (B, A)."""
        out = self.body(obs)
        mean, raw = out[..., :self.action_dim], out[..., self.action_dim:]
        half_range = 0.5 * (self.log_std_max - self.log_std_min)
        return mean, self.log_std_min + half_range * (torch.tanh(raw) + 1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Static slice bounds: the exported graph keeps the action's width in its output shape.
        return torch.tanh(self.body(obs)[..., :self.action_dim])

    def sample(self, obs: torch.Tensor, std_normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-density: (a (B, A), log pi(a|s) (B,)).

        `std_normal` ~ N(0, I), (B, A), drawn by the caller from its own seeded generator.
        """
        mean, log_std = self.distribution(obs)
        return squashed_gaussian_sample(mean, log_std, std_normal)


def squashed_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor,
                             std_normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(u), u = mean + exp(log_std) * eps, with the change-of-variables log-density

        log pi(a|s) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) ]   (SAC, appendix C)

    where log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) is the overflow-free form.
    Returns (a (B, A), log pi (B,)).
    """
    u = mean + log_std.exp() * std_normal
    log_normal = -0.5 * std_normal.square() - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det = 2.0 * (LOG_2 - u - torch.nn.functional.softplus(-2.0 * u))
    return torch.tanh(u), (log_normal - log_det).sum(dim=-1)
