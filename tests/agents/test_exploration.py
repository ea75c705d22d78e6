import numpy as np
import pytest

from rlcontrol.exploration import GaussianNoise, OrnsteinUhlenbeckNoise


def test_ou_stationary_statistics():
    theta, sigma, dt = 0.15, 0.2, 1e-2
    noise = OrnsteinUhlenbeckNoise(3, sigma, np.random.default_rng(0), theta=theta, dt=dt)
    # Exact AR(1): x' = (1 - theta dt) x + sigma sqrt(dt) eps -> var = sigma^2 dt / (1 - (1 - theta dt)^2)
    phi = 1 - theta * dt
    expected_std = sigma * np.sqrt(dt / (1 - phi**2))
    for _ in range(5000):  # burn-in, ~7 time constants
        noise()
    xs = np.array([noise() for _ in range(200_000)])
    assert xs.mean() == pytest.approx(0.0, abs=0.1 * expected_std * 3)
    assert xs.std() == pytest.approx(expected_std, rel=0.1)
    assert expected_std == pytest.approx(sigma / np.sqrt(2 * theta), rel=0.01)  # the continuous-time limit
    # Temporal correlation: lag-1 autocorrelation is phi.
    x = xs[:, 0] - xs[:, 0].mean()
    assert np.dot(x[:-1], x[1:]) / np.dot(x, x) == pytest.approx(phi, abs=0.01)
    noise.reset()
    assert np.all(noise.x == 0.0)


def test_gaussian_noise_std_and_independence():
    noise = GaussianNoise(2, 0.3, np.random.default_rng(1))
    xs = np.array([noise() for _ in range(50_000)])
    assert xs.std(axis=0) == pytest.approx([0.3, 0.3], rel=0.03)
    x = xs[:, 0]
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.02
