"""Proportional prioritized experience replay (Schaul et al., 2016, "Prioritized Experience Replay").

Each transition ``i`` has priority ``p_i = |delta_i| + eps`` and is sampled with probability
``P(i) = p_i^alpha / sum_k p_k^alpha``. The sum tree stores ``p_i^alpha`` directly, so a search for a
uniform value in ``[0, total)`` returns item ``i`` with exactly that probability. The resulting bias
is corrected by importance weights ``w_i = (N * P(i))^(-beta)``, with ``beta`` annealed to 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rlcontrol.replay.buffer import Batch, ReplayBuffer
from rlcontrol.replay.obs_layout import ObsPart
from rlcontrol.replay.sum_tree import SumTree

PRIORITIES_KEY = "priorities"


class PrioritizedReplayBuffer(ReplayBuffer):
    """:class:`ReplayBuffer` with proportional prioritized sampling.

    Args (besides those of :class:`ReplayBuffer`):
        alpha: how strongly priorities shape sampling (0 = uniform, 1 = fully proportional).
        beta0: importance-sampling exponent at the first :meth:`sample` call.
        beta_steps: ``beta`` rises linearly from ``beta0`` to 1 over this many :meth:`sample` calls
            (0 = 1 from the start), unless fixed with :meth:`set_beta`.
        eps: added to ``|delta|`` so that no transition becomes impossible to sample.

    New transitions get the largest priority recorded so far (at least ``1``, as in Schaul et al.),
    so each is likely to be replayed at least once before its TD error is known.
    """

    def __init__(
        self,
        capacity: int,
        obs_spec: Any,
        action_dim: int,
        *,
        alpha: float = 0.6,
        beta0: float = 0.4,
        beta_steps: int = 100_000,
        eps: float = 1e-6,
        device: str | torch.device = "cpu",
        seed: int = 0,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0 <= beta0 <= 1:
            raise ValueError(f"beta0 must be in [0, 1], got {beta0}")
        if int(beta_steps) < 0:
            raise ValueError(f"beta_steps must be >= 0, got {beta_steps}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        super().__init__(capacity, obs_spec, action_dim, device=device, seed=seed, obs_dtype=obs_dtype)
        self._alpha = float(alpha)
        self._beta0 = float(beta0)
        self._beta_steps = int(beta_steps)
        self._eps = float(eps)
        self._tree = SumTree(self._capacity)
        self._sample_calls = 0
        self._beta_override: float | None = None

    # ------------------------------------------------------------------ properties
    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def sum_tree(self) -> SumTree:
        """The tree of ``p^alpha`` values (read it, don't write it)."""
        return self._tree

    @property
    def sample_calls(self) -> int:
        """Number of :meth:`sample` calls so far (drives the beta schedule)."""
        return self._sample_calls

    @property
    def beta(self) -> float:
        """The beta the next :meth:`sample` uses: ``beta0 + (1 - beta0) * min(1, calls / beta_steps)``,
        or the value fixed by :meth:`set_beta`."""
        if self._beta_override is not None:
            return self._beta_override
        if self._beta_steps == 0:
            return 1.0
        progress = min(1.0, self._sample_calls / self._beta_steps)
        return self._beta0 + (1.0 - self._beta0) * progress

    def set_beta(self, beta: float | None) -> None:
        """Fix beta (for a schedule driven from outside, e.g. by env steps); ``None`` returns to
        the built-in schedule."""
        if beta is not None and not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self._beta_override = None if beta is None else float(beta)

    # ------------------------------------------------------------------ priorities
    def _new_item_priority(self) -> float:
        """Tree value (``p^alpha``) for new items: the largest ever recorded, at least ``1^alpha``."""
        return max(1.0, self._tree.max_recorded)

    def _on_write(self, indices: np.ndarray) -> None:
        self._tree.update(indices, self._new_item_priority())

    def update_priorities(
        self, indices: np.ndarray | torch.Tensor, td_abs: np.ndarray | torch.Tensor
    ) -> None:
        """Set ``p_i = |td_i| + eps`` for the sampled ``indices`` (int (B,), e.g. ``batch.indices``)
        from the learner's TD errors ``td_abs`` (float (B,); the sign is ignored). A repeated index
        keeps its last value. Indices overwritten since they were sampled simply get the new
        transition a TD-based priority early (harmless, and what other implementations do)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        if isinstance(td_abs, torch.Tensor):
            td_abs = td_abs.detach().float().cpu().numpy()
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        td_abs = np.asarray(td_abs, dtype=np.float64).reshape(-1)
        if indices.shape != td_abs.shape:
            raise ValueError(f"{indices.size} indices but {td_abs.size} TD errors")
        if indices.size and (indices.min() < 0 or indices.max() >= self._size):
            raise IndexError(f"priority indices must be in [0, {self._size}) (the filled part)")
        if not np.all(np.isfinite(td_abs)):
            # A NaN would make the tree total NaN and break all future sampling.
            raise ValueError("update_priorities got non-finite TD errors")
        self._tree.update(indices, (np.abs(td_abs) + self._eps) ** self._alpha)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn with probability ``P(i)``, stratified as in Schaul et al.:
        ``[0, total)`` is split into ``batch_size`` equal segments with one uniform draw in each.

        ``weights`` are ``(N * P(i))^(-beta) / max_j (N * P(j))^(-beta)`` with N = ``len(self)`` and
        the max taken over *this batch* (so the largest weight in a batch is exactly 1)."""
        self._check_can_sample(batch_size)
        batch_size = int(batch_size)
        total = self._tree.total
        if total <= 0:
            raise ValueError("all priorities are 0 (eps=0 and zero TD errors): nothing can be sampled")
        beta = self.beta
        # float64 draws from the buffer's own generator, so one RNG state covers both samplers.
        uniform = torch.rand(batch_size, generator=self._generator, dtype=torch.float64).numpy()
        values = (np.arange(batch_size) + uniform) * (total / batch_size)
        indices = self._tree.find_prefix_sum(values)
        probabilities = self._tree.get(indices) / total
        weights = (self._size * probabilities) ** (-beta)
        weights /= weights.max()
        self._sample_calls += 1
        return self._gather(torch.from_numpy(indices), torch.from_numpy(weights.astype(np.float32)))

    # ------------------------------------------------------------------ state
    def _config_meta(self) -> dict:
        return {
            **super()._config_meta(),
            "alpha": self._alpha,
            "beta0": self._beta0,
            "beta_steps": self._beta_steps,
            "eps": self._eps,
        }

    def _expected_tensors(self, size: int) -> dict[str, ObsPart]:
        return {**super()._expected_tensors(size), PRIORITIES_KEY: ObsPart((size,), torch.float64)}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """As :meth:`ReplayBuffer.state_dict`, plus the filled leaves ``priorities`` (float64 (size,),
        the tree's ``p^alpha``) and the beta schedule's progress."""
        tensors, meta = super().state_dict()
        tensors[PRIORITIES_KEY] = torch.from_numpy(self._tree.priorities[: self._size].copy())
        meta.update(
            sample_calls=self._sample_calls,
            beta_override=self._beta_override,
            max_recorded=self._tree.max_recorded,
        )
        return tensors, meta

    def _validate_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        super()._validate_state(tensors, meta)
        calls, override, max_recorded = (
            meta.get("sample_calls"),
            meta.get("beta_override"),
            meta.get("max_recorded"),
        )
        if not isinstance(calls, int) or calls < 0:
            raise ValueError(f"bad sample_calls in replay state: {calls!r}")
        if override is not None and not (isinstance(override, (int, float)) and 0 <= override <= 1):
            raise ValueError(f"bad beta_override in replay state: {override!r}")
        if not isinstance(max_recorded, (int, float)) or not np.isfinite(max_recorded) or max_recorded < 0:
            raise ValueError(f"bad max_recorded in replay state: {max_recorded!r}")
        priorities = tensors[PRIORITIES_KEY]
        if not bool(torch.isfinite(priorities).all()) or (priorities.numel() and float(priorities.min()) < 0):
            raise ValueError("replay state priorities must be finite and >= 0")

    def _restore_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        super()._restore_state(tensors, meta)
        self._tree.assign(tensors[PRIORITIES_KEY].cpu().numpy(), max_recorded=float(meta["max_recorded"]))
        self._sample_calls = meta["sample_calls"]
        self._beta_override = None if meta["beta_override"] is None else float(meta["beta_override"])

    @classmethod
    def _init_kwargs_from_meta(cls, meta: Mapping) -> dict:
        return {
            **super()._init_kwargs_from_meta(meta),
            "alpha": meta["alpha"],
            "beta0": meta["beta0"],
            "beta_steps": meta["beta_steps"],
            "eps": meta["eps"],
        }
