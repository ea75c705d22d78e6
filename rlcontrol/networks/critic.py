"""Q_phi(s, a) as an ensemble of E identical MLPs evaluated together.

DDPG uses E=1, TD3 and SAC E=2 (clipped double Q), REDQ E=10 (Chen et al. 2021). Outputs
(E, B, out_dim); out_dim is 1 for scalar critics and the number of atoms for D4PG's categorical
critic.

The modern critic options, each off by default (agent.critic_layer_norm, critic_dropout,
critic_residual_blocks):

    plain / LayerNorm / DroQ    [Linear -> Dropout -> LayerNorm -> ReLU] x L -> Linear
                                (Hiraoka et al. 2022's order; each part only when enabled)
    SimBa (residual blocks)     Linear(W) -> [x + Linear(W)(ReLU(Linear(4W)(LayerNorm(x))))] x K
                                -> LayerNorm -> Linear          (Lee et al. 2024, pre-LN blocks)

Dropout masks come from a torch.Generator the agent hands over (`dropout_generator`), not from
torch's global RNG, so a checkpoint that stores the agent's generator resumes bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcontrol.networks.ensemble_linear import EnsembleLayerNorm, EnsembleLinear


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout with masks drawn from `generator` (x * Bernoulli(1-p) / (1-p))."""
    if p <= 0.0:
        return x
    mask = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * mask.div_(1.0 - p)


def _affine(layer: EnsembleLinear, x: torch.Tensor, member: int | None) -> torch.Tensor:
    if member is None:
        return layer(x)
    return torch.addmm(layer.bias[member], x, layer.weight[member])


def _norm(norm: EnsembleLayerNorm, x: torch.Tensor, member: int | None) -> torch.Tensor:
    if member is None:
        return norm(x)
    return torch.addcmul(norm.bias[member], torch.nn.functional.layer_norm(x, (norm.width,), eps=norm.eps),
                         norm.weight[member])


def hidden_step(x: torch.Tensor, norm: EnsembleLayerNorm | None, dropout_p: float,
                generator: torch.Generator | None, training: bool, member: int | None = None) -> torch.Tensor:
    """What follows each hidden affine layer of a critic (flat or split): dropout (DroQ, training
    only), then LayerNorm when on, then ReLU."""
    if training and dropout_p > 0.0:
        x = dropout(x, dropout_p, generator)
    if norm is not None:
        x = _norm(norm, x, member)
    return torch.relu(x)


class EnsembleCritic(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        ensemble_size: int = 2,
        out_dim: int = 1,
        *,
        layer_norm: bool = False,
        dropout: float = 0.0,
        residual_blocks: int = 0,
    ):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.out_dim = out_dim
        self.dropout_p = float(dropout)
        self.residual_blocks = residual_blocks
        self.dropout_generator: torch.Generator | None = None  # set by the agent (its checkpointed generator)
        in_dim = obs_dim + action_dim
        if residual_blocks:
            width = hidden[0]
            self.input = EnsembleLinear(ensemble_size, in_dim, width)
            self.block_norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, width) for _ in range(residual_blocks))
            self.block_up = nn.ModuleList(EnsembleLinear(ensemble_size, width, 4 * width) for _ in range(residual_blocks))
            self.block_down = nn.ModuleList(EnsembleLinear(ensemble_size, 4 * width, width)
                                            for _ in range(residual_blocks))
            self.final_norm = EnsembleLayerNorm(ensemble_size, width)
            self.output = EnsembleLinear(ensemble_size, width, out_dim)
            return
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, w) for w in hidden) if layer_norm else None

    def forward(self, obs: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """obs (B, obs_dim), action (B, action_dim) -> (E, B, out_dim).

        With `member=i`, only critic i is evaluated -> (B, out_dim). The actor loss uses
        this: TD3's actor follows Q_1 alone, and evaluating the twin would waste a third
        of the actor update.
        """
        x = torch.cat([obs, action], dim=-1)
        if self.residual_blocks:
            return self._residual(x, member)
        *hidden, last = self.layers
        for j, layer in enumerate(hidden):
            norm = self.norms[j] if self.norms is not None else None
            x = hidden_step(_affine(layer, x, member), norm, self.dropout_p, self.dropout_generator, self.training,
                            member)
        return _affine(last, x, member)

    def _residual(self, x: torch.Tensor, member: int | None) -> torch.Tensor:
        x = _affine(self.input, x, member)
        for norm, up, down in zip(self.block_norms, self.block_up, self.block_down):
            h = torch.relu(_affine(up, _norm(norm, x, member), member))
            if self.training and self.dropout_p > 0.0:
                h = dropout(h, self.dropout_p, self.dropout_generator)
            x = x + _affine(down, h, member)
        return _affine(self.output, _norm(self.final_norm, x, member), member)
