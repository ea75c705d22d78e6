"""PrioritizedReplayBuffer against the brute-force formulas of Schaul et al. (2016)."""

import numpy as np
import pytest
import torch

from rlcontrol.replay import PrioritizedReplayBuffer

OBS_DIM, ACTION_DIM = 2, 1
ALPHA, EPS = 0.6, 1e-6


def transition(i):
    return {
        "obs": np.full(OBS_DIM, i, np.float32),
        "action": np.zeros(ACTION_DIM, np.float32),
        "reward": float(i),
        "discount": 0.99,
        "next_obs": np.full(OBS_DIM, i + 1, np.float32),
    }


def filled_buffer(n, capacity=None, **kwargs):
    kwargs = {"alpha": ALPHA, "eps": EPS, "beta0": 0.4, "beta_steps": 1000, "seed": 0} | kwargs
    buffer = PrioritizedReplayBuffer(capacity or n, (OBS_DIM,), ACTION_DIM, **kwargs)
    for i in range(n):
        buffer.add(transition(i))
    return buffer


def probabilities(td_abs, alpha=ALPHA, eps=EPS):
    """P(i) = (|delta_i| + eps)^alpha / sum_k (|delta_k| + eps)^alpha."""
    p = (np.abs(td_abs) + eps) ** alpha
    return p / p.sum()


def empirical_frequencies(buffer, batches, batch_size=256):
    counts = np.zeros(buffer.capacity)
    for _ in range(batches):
        np.add.at(counts, buffer.sample(batch_size).indices.numpy(), 1)
    return counts / counts.sum()


TD = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 0.05, 3.0])


def test_sampling_frequencies_match_brute_force_probabilities():
    buffer = filled_buffer(len(TD))
    buffer.update_priorities(np.arange(len(TD)), TD)
    frequencies = empirical_frequencies(buffer, batches=400)  # 102,400 draws
    # Binomial sd <= sqrt(0.25 / 102400) = 0.0016 (stratification only lowers it): 0.008 is 5 sd.
    np.testing.assert_allclose(frequencies, probabilities(TD), atol=0.008)
    assert frequencies[0] > 0  # |delta| = 0 still has eps


def test_update_priorities_changes_subsequent_probabilities():
    buffer = filled_buffer(len(TD))
    buffer.update_priorities(np.arange(len(TD)), TD)
    new_td = TD.copy()
    new_td[[0, 5]] = [8.0, 0.0]  # the rarest becomes the most likely and vice versa
    buffer.update_priorities(torch.tensor([0, 5]), torch.tensor([-8.0, 0.0]))  # tensors, sign ignored
    frequencies = empirical_frequencies(buffer, batches=400)
    np.testing.assert_allclose(frequencies, probabilities(new_td), atol=0.008)
    assert frequencies[0] > 0.25 and frequencies[5] < 0.01


def test_alpha_zero_is_uniform():
    buffer = filled_buffer(len(TD), alpha=0.0)
    buffer.update_priorities(np.arange(len(TD)), TD)
    np.testing.assert_allclose(empirical_frequencies(buffer, batches=200), 1 / len(TD), atol=0.01)


def test_importance_weights_equal_the_formula_exactly():
    n = len(TD)
    buffer = filled_buffer(n)
    buffer.update_priorities(np.arange(n), TD)
    for beta in [0.4, 0.7, 1.0]:
        buffer.set_beta(beta)
        batch = buffer.sample(64)
        p = probabilities(TD)[batch.indices.numpy()]
        w = (n * p) ** -beta
        expected = w / w.max()  # normalised by the largest weight in the batch
        np.testing.assert_allclose(batch.weights.numpy(), expected, rtol=1e-6, atol=1e-7)
        assert batch.weights.dtype == torch.float32 and batch.weights.max() == 1.0


def test_weights_use_n_filled_not_capacity():
    buffer = filled_buffer(4, capacity=100)
    buffer.update_priorities(np.arange(4), TD[:4])
    buffer.set_beta(1.0)
    batch = buffer.sample(32)
    assert int(batch.indices.max()) < 4  # unfilled slots have no priority
    p = probabilities(TD[:4])[batch.indices.numpy()]
    np.testing.assert_allclose(batch.weights.numpy(), (4 * p) ** -1.0 / ((4 * p) ** -1.0).max(), rtol=1e-6)


def test_beta_anneals_linearly_over_sample_calls():
    buffer = filled_buffer(4, beta0=0.4, beta_steps=10)
    observed = {}
    for call in range(21):
        observed[call] = buffer.beta
        buffer.sample(4)
    assert observed[0] == pytest.approx(0.4)
    assert observed[5] == pytest.approx(0.7)  # 0.4 + 0.6 * 5/10
    assert observed[10] == pytest.approx(1.0)
    assert observed[20] == pytest.approx(1.0)
    assert buffer.sample_calls == 21
    buffer.set_beta(0.5)
    assert buffer.beta == 0.5
    buffer.sample(4)
    assert buffer.beta == 0.5  # fixed until released
    buffer.set_beta(None)
    assert buffer.beta == 1.0
    assert filled_buffer(1, beta_steps=0).beta == 1.0
    with pytest.raises(ValueError):
        buffer.set_beta(1.5)


def test_new_items_get_the_max_priority():
    buffer = filled_buffer(2, capacity=4)
    np.testing.assert_array_equal(buffer.sum_tree.priorities[:2], [1.0, 1.0])  # 1^alpha before any TD
    buffer.update_priorities([0, 1], [5.0, 0.01])
    buffer.add(transition(2))
    assert buffer.sum_tree.priorities[2] == pytest.approx((5.0 + EPS) ** ALPHA)
    buffer.update_priorities([0], [0.1])  # the max ever seen stays (Schaul et al., baselines)
    buffer.add(transition(3))
    assert buffer.sum_tree.priorities[3] == pytest.approx((5.0 + EPS) ** ALPHA)
    # A wrapped-around add overwrites slot 0 and gives it the max priority, not the old one.
    buffer.add(transition(4))
    assert buffer.sum_tree.priorities[0] == pytest.approx((5.0 + EPS) ** ALPHA)
    indices = buffer.add_batch({k: np.stack([np.asarray(transition(5)[k])] * 2) for k in transition(5)})
    np.testing.assert_allclose(buffer.sum_tree.priorities[indices], (5.0 + EPS) ** ALPHA)


def test_batches_are_whole_transitions_and_seeded():
    def indices(seed):
        buffer = filled_buffer(len(TD), seed=seed)
        buffer.update_priorities(np.arange(len(TD)), TD)
        batches = [buffer.sample(16) for _ in range(3)]
        for batch in batches:
            assert torch.equal(batch.obs[:, 0], batch.indices.float())
            assert torch.equal(batch.reward, batch.indices.float())
        return [b.indices for b in batches]

    assert all(torch.equal(a, b) for a, b in zip(indices(1), indices(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(indices(1), indices(2), strict=True))


def test_invalid_priority_updates():
    buffer = filled_buffer(4, capacity=8)
    with pytest.raises(IndexError):
        buffer.update_priorities([4], [1.0])  # not filled yet
    with pytest.raises(ValueError, match="non-finite"):
        buffer.update_priorities([0, 1], [1.0, np.nan])
    with pytest.raises(ValueError):
        buffer.update_priorities([0, 1], [1.0])
    np.testing.assert_array_equal(buffer.sum_tree.priorities[:4], 1.0)  # unchanged
    for bad in [dict(alpha=-1), dict(beta0=2.0), dict(beta_steps=-1), dict(eps=-1e-3)]:
        with pytest.raises(ValueError):
            PrioritizedReplayBuffer(4, (1,), 1, **bad)


def test_all_zero_priorities_cannot_be_sampled():
    buffer = filled_buffer(2, eps=0.0)
    buffer.update_priorities([0, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="priorities are 0"):
        buffer.sample(2)
