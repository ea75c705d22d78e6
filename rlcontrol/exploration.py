"""Behaviour noise for deterministic policies (seed 002/003): a_t = mu(s_t) + xi_t."""

from __future__ import annotations

import numpy as np


class GaussianNoise:
    """xi_t ~ N(0, sigma^2 I), independent across steps (TD3's choice)."""

    def __init__(self, action_dim: int, sigma: float, rng: np.random.Generator):
        self.action_dim, self.sigma, self.rng = action_dim, sigma, rng

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        return (self.sigma * self.rng.standard_normal(self.action_dim)).astype(np.float32)


class OrnsteinUhlenbeckNoise:
    """Temporally correlated noise, DDPG's original choice (Lillicrap et al. 2016).

    Euler-Maruyama discretisation of dx = theta (mu - x) dt + sigma dW, dW ~ N(0, dt):
        x_{t+1} = x_t + theta (mu - x_t) dt + sigma sqrt(dt) eps_t.
    Its stationary std is sigma / sqrt(2 theta) for small dt (tested). State resets to mu at
    each episode start.
    """

    def __init__(self, action_dim: int, sigma: float, rng: np.random.Generator,
                 theta: float = 0.15, dt: float = 1e-2, mu: float = 0.0):
        self.action_dim, self.sigma, self.theta, self.dt, self.mu, self.rng = action_dim, sigma, theta, dt, mu, rng
        self.x = np.full(action_dim, mu, dtype=np.float64)

    def reset(self) -> None:
        self.x[:] = self.mu

    def __call__(self) -> np.ndarray:
        eps = self.rng.standard_normal(self.action_dim)
        self.x += self.theta * (self.mu - self.x) * self.dt + self.sigma * np.sqrt(self.dt) * eps
        return self.x.astype(np.float32)
