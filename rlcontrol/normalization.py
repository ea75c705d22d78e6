"""Running observation statistics, stored with the agent so exports can bake them in."""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """(x - mean) / sqrt(var + eps), clipped to +-clip, with statistics from every observation seen.

    Statistics are float64 buffers (part of the agent's state_dict); updates use the
    parallel-variance formula of Chan et al., so one observation or a batch both work.
    When disabled it is the identity and costs nothing in the update.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        # float32 copies used on the hot path; refreshed after each update.
        self.register_buffer("_mean32", torch.zeros(dim), persistent=False)
        self.register_buffer("_inv_std32", torch.ones(dim), persistent=False)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """x: (dim,) or (B, dim)."""
        if not self.enabled:
            return
        x = x.reshape(-1, self.mean.numel()).to(torch.float64)
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self._refresh()

    def _refresh(self) -> None:
        self._mean32.copy_(self.mean)
        self._inv_std32.copy_(torch.rsqrt(self.var + self.eps))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self._mean32) * self._inv_std32).clamp(-self.clip, self.clip)
