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


class PartialNormalizer(RunningNormalizer):
    """A RunningNormalizer for some column ranges of a wider vector; the other columns pass through.

    For observations that mix images and state (QT-Opt's pixel Q network): per-pixel running
    statistics would be thousands of buffers that say little, so image columns go through
    raw (the network scales them) and only the state columns are standardized.
    `segments` lists (start, stop, normalize) ranges that cover 0..width in order; the
    statistics (mean, var: one entry per normalized column) are what the plain normalizer
    would hold for those columns. update() and forward() take the full (..., width) vector.
    """

    def __init__(self, segments: list[tuple[int, int, bool]], clip: float = 10.0, eps: float = 1e-8,
                 enabled: bool = True):
        starts = [a for a, _, _ in segments]
        stops = [b for _, b, _ in segments]
        if not segments or starts[0] != 0 or starts[1:] != stops[:-1]:
            raise ValueError(f"segments must cover 0..width contiguously, got {segments}")
        super().__init__(sum(b - a for a, b, keep in segments if keep), clip=clip, eps=eps, enabled=enabled)
        self.width = stops[-1]
        self.segments = [(a, b, bool(keep)) for a, b, keep in segments]

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., a:b] for a, b, keep in self.segments if keep], dim=-1)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """x: (width,) or (B, width)."""
        if self.enabled:
            super().update(self._columns(x.reshape(-1, self.width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        parts, offset = [], 0
        for a, b, keep in self.segments:
            part = x[..., a:b]
            if keep:
                n = b - a
                part = ((part - self._mean32[offset:offset + n]) * self._inv_std32[offset:offset + n]).clamp(
                    -self.clip, self.clip)
                offset += n
            parts.append(part)
        return torch.cat(parts, dim=-1)
