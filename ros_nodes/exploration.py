"""Exploration noise on the policy's command, for live fine-tuning on the robot.

An off-policy learner fed only the deterministic policy's own actions sees Q(s, a) at a = mu(s)
alone, so the actor's gradient dQ/da is an extrapolation, and fine-tuning from such data
swings from version to version (docs/sim2real.md, "Live fine-tuning"). As in training (TD3's
Gaussian exploration; Learning to Drive in a Day used OU noise on the car), the policy node
adds N(0, std^2) per action, in normalized units (a fraction of each action's half range), and
clips to the action bounds; the safety layer then applies its clamp, rate limit and e-stop to
the noisy command as to any other. The robot reports the command it applied, so the learner
trains on the action actually taken. Off (std 0) unless asked for: deployment is deterministic.

Preallocated and allocation-free per tick; the generator is seeded for reproducible runs.
"""

from __future__ import annotations

import numpy as np


class ActionNoise:
    def __init__(self, low, high, std: float, seed: int = 0) -> None:
        if not (std >= 0.0 and np.isfinite(std)):
            raise ValueError(f"exploration_std must be a finite number >= 0, got {std!r}")
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.std = float(std)
        self._scale = self.std * (self.high - self.low) / 2.0
        self._rng = np.random.default_rng(seed)
        self._noise = np.zeros(self.low.shape)
        self._out = np.zeros(self.low.shape)

    @property
    def enabled(self) -> bool:
        return self.std > 0.0

    def apply(self, action: np.ndarray) -> np.ndarray:
        """action + N(0, (std * half range)^2), clipped to the bounds. Returns an internal buffer
        (overwritten by the next call); a non-finite action stays non-finite for the safety layer."""
        if not self.enabled:
            return action
        self._rng.standard_normal(out=self._noise)
        np.multiply(self._noise, self._scale, out=self._noise)
        np.add(action, self._noise, out=self._out)
        return np.clip(self._out, self.low, self.high, out=self._out)
