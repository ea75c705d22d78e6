"""Q_phi(s, a) as an ensemble of E identical MLPs evaluated together.

DDPG uses E=1, TD3 E=2 (clipped double Q). Outputs (E, B, out_dim); out_dim is 1 for
scalar critics and the number of atoms for D4PG's categorical critic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcontrol.networks.ensemble_linear import EnsembleLinear


class EnsembleCritic(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        ensemble_size: int = 2,
        out_dim: int = 1,
    ):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.out_dim = out_dim
        dims = [obs_dim + action_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """obs (B, obs_dim), action (B, action_dim) -> (E, B, out_dim).

        With `member=i`, only critic i is evaluated -> (B, out_dim). The actor loss uses
        this: TD3's actor follows Q_1 alone, and evaluating the twin would waste a third
        of the actor update.
        """
        x = torch.cat([obs, action], dim=-1)
        *hidden, last = self.layers
        if member is not None:
            for layer in hidden:
                x = torch.relu(torch.addmm(layer.bias[member], x, layer.weight[member]))
            return torch.addmm(last.bias[member], x, last.weight[member])
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x)
