"""A stack of E independent linear layers evaluated as one batched matmul.

TD3's twin critics (and any larger critic ensemble) are E networks with identical
shapes. Evaluating them with one `baddbmm` per layer instead of E separate `addmm`
calls halves the number of kernel launches and autograd nodes, which on a 2-core CPU
is most of the cost of an update at batch 256 (see ../shared/NOTES.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """E parallel affine maps.

    weight: (E, in_features, out_features); bias: (E, 1, out_features).
    forward: x (E, B, in_features) or (B, in_features) shared by all members -> (E, B, out_features).
    Each member is initialised exactly like `nn.Linear` (Kaiming-uniform weights,
    uniform(-1/sqrt(in), 1/sqrt(in)) bias), so E=1 is a drop-in for nn.Linear.
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        for member in range(self.ensemble_size):
            # Same distribution as nn.Linear: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)).
            nn.init.uniform_(self.weight.data[member], -bound, bound)
            nn.init.uniform_(self.bias.data[member], -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            # One input shared by all members: (B, in) @ (E, in, out) broadcasts to (E, B, out).
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a separate affine (gain, bias) for each of E members.

    x (E, B, W) -> (E, B, W). With E=1 it computes exactly `nn.LayerNorm(W)` (same eps, same
    initialisation: gain 1, bias 0). Normalising is shared work (one `layer_norm` call); only the
    affine differs per member, so the twin or REDQ critics stay independent networks.
    """

    def __init__(self, ensemble_size: int, width: int, eps: float = 1e-5):
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, width))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, torch.nn.functional.layer_norm(x, (self.width,), eps=self.eps), self.weight)
