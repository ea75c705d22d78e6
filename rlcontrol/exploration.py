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


class EpsilonGreedyGaussian:
    """Exploration for a policy without an actor (QT-Opt's CEM argmax):

        with probability epsilon:  a uniform random action in [-1, 1]^A   (epsilon-greedy)
        otherwise:                 clip(a_greedy + N(0, sigma^2 I), -1, 1)

    QT-Opt explored epsilon-greedily around the CEM action; the Gaussian part (sigma, off
    with 0) is what distributed actor workers scale per worker (they set `.sigma`).
    `explores_uniformly()` is drawn first so the caller can skip the CEM for a random step.
    """

    def __init__(self, action_dim: int, epsilon: float, sigma: float, rng: np.random.Generator):
        self.action_dim, self.epsilon, self.sigma, self.rng = action_dim, epsilon, sigma, rng

    def reset(self) -> None:
        pass

    def explores_uniformly(self) -> bool:
        return self.epsilon > 0 and self.rng.random() < self.epsilon

    def uniform(self) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)

    def perturb(self, action: np.ndarray) -> np.ndarray:
        if self.sigma <= 0:
            return action
        return np.clip(action + self.sigma * self.rng.standard_normal(self.action_dim), -1.0, 1.0).astype(np.float32)
