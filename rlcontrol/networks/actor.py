"""Deterministic policy network mu_theta(s) for the DDPG family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear-activation stack with a linear output layer."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), activation()]
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)), so actions are normalized to [-1, 1]^A.

    The environment maps [-1, 1] to the task's physical bounds (envs.core.scale_action);
    the export issue bakes that mapping into the ONNX graph.
    obs: (B, obs_dim) float32 (already normalized) -> (B, action_dim).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.net = mlp(obs_dim, hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))
