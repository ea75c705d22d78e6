"""The cross-entropy method: known maxima, bounds, shapes, determinism, tie margins."""

import math

import pytest
import torch

from rlcontrol.cem import CEM, cem_maximize


def box(action_dim, low=-1.0, high=1.0):
    return torch.full((action_dim,), low), torch.full((action_dim,), high)


def quadratic(optima):
    """-||a - a*_b||^2 for each of B problems: optimum a*_b, maximum 0."""
    return lambda a: -(a - optima.unsqueeze(1)).square().sum(-1)


def test_batched_quadratics_with_different_optima():
    g = torch.Generator().manual_seed(0)
    optima = torch.rand(8, 3, generator=g) * 1.6 - 0.8  # (B, A), inside the box
    cem = CEM(*box(3), samples=64, elites=6, iterations=4, seed=0)
    calls = []

    def score(a):
        calls.append(a.shape)
        return quadratic(optima)(a)

    action, value = cem(score, 8)
    assert action.shape == (8, 3) and value.shape == (8,)
    assert calls == [(8, 64, 3)] * 4  # one call per iteration, on all B x N candidates
    torch.testing.assert_close(action, optima, atol=0.05, rtol=0)
    # The score returned is the score of the returned action, not an estimate.
    torch.testing.assert_close(value, quadratic(optima)(action.unsqueeze(1))[:, 0])
    # Each problem is solved on its own: more iterations only improve every one of them.
    better, _ = CEM(*box(3), samples=64, elites=6, iterations=8, seed=0)(quadratic(optima), 8)
    assert ((better - optima).norm(dim=-1) <= (action - optima).norm(dim=-1) + 1e-6).all()


def test_quadratic_to_bound_precision_with_qtopt_settings():
    """QT-Opt's 2 iterations of 64 samples, 6 elites: a 1-D optimum to a few hundredths."""
    optima = torch.linspace(-0.9, 0.9, 16).unsqueeze(-1)
    action, _ = CEM(*box(1), samples=64, elites=6, iterations=2, seed=1)(quadratic(optima), 16)
    assert (action - optima).abs().max() < 0.03


def test_maximum_at_a_bound_is_reached_exactly():
    """The maximum of a linear score is a corner of the box; clipped samples land on it."""
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])
    cem = CEM(low, high, samples=64, elites=6, iterations=2, seed=0)
    direction = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # problem 0: (1, 0) is best; problem 1: (-1, 2)
    action, value = cem(lambda a: (a * direction.unsqueeze(1)).sum(-1), 2)
    torch.testing.assert_close(action, torch.tensor([[1.0, 0.0], [-1.0, 2.0]]))
    torch.testing.assert_close(value, torch.tensor([1.0, 3.0]))


def test_every_candidate_stays_inside_the_bounds():
    low, high = torch.tensor([-0.5, 0.2, -2.0]), torch.tensor([0.5, 0.3, 3.0])
    seen = []

    def score(a):
        seen.append(a)
        return -a.sum(-1) * 100  # pushes against the lower bounds, with a wide init_std
    action, _ = CEM(low, high, samples=32, elites=4, iterations=3, init_std=5.0, seed=0)(score, 5)
    for a in [*seen, action.unsqueeze(1)]:
        assert (a >= low).all() and (a <= high).all()


def bimodal(a):
    """Two bumps on [-1, 1]: a low, wide one at -0.6 (height 1) and a higher, narrow one at 0.6 (height 1.5)."""
    x = a[..., 0]
    return torch.exp(-((x + 0.6) / 0.3) ** 2) + 1.5 * torch.exp(-((x - 0.6) / 0.15) ** 2)


def test_bimodal_finds_the_higher_mode_most_of_the_time():
    """Over 200 independent runs (fresh noise each, one batch), the higher mode wins in most."""
    runs = 200
    cem = CEM(*box(1), samples=64, elites=6, iterations=2, seed=0)
    action, value = cem.maximize(bimodal, runs, torch.Generator().manual_seed(0))
    higher = value > 1.0  # above the lower mode's peak: only the higher mode scores that
    assert higher.float().mean() > 0.9, higher.float().mean()
    assert ((action[higher, 0] - 0.6).abs() < 0.1).all()
    assert value[higher].median() > 1.49


def test_fixed_noise_is_deterministic_and_seeded():
    optima = torch.rand(4, 2)
    a1, s1 = CEM(*box(2), seed=7)(quadratic(optima), 4)
    a2, s2 = CEM(*box(2), seed=7)(quadratic(optima), 4)
    a3, _ = CEM(*box(2), seed=8)(quadratic(optima), 4)
    assert torch.equal(a1, a2) and torch.equal(s1, s2)
    assert not torch.equal(a1, a3)
    # The fixed draw is a buffer of shape (I, N, A): saved with the module, no random op in forward.
    cem = CEM(*box(2), samples=16, elites=3, iterations=2, seed=7)
    assert cem.noise.shape == (2, 16, 2) and "noise" in cem.state_dict()


def test_generator_noise_is_reproducible_and_independent_per_problem():
    cem = CEM(*box(2), samples=16, elites=3, iterations=2)
    noise = cem.sample_noise(5, torch.Generator().manual_seed(3))
    assert noise.shape == (2, 5, 16, 2)
    assert torch.equal(noise, cem.sample_noise(5, torch.Generator().manual_seed(3)))
    assert not torch.equal(noise[:, 0], noise[:, 1])  # every problem of the batch draws its own
    optima = torch.zeros(5, 2)
    a1, _ = cem.maximize(quadratic(optima), 5, torch.Generator().manual_seed(3))
    a2, _ = cem.maximize(quadratic(optima), 5, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2)


def reference_cem(score, noise, low, high, elites, mean, std):
    """One problem, written as loops over iterations and sorted Python lists."""
    best = (-math.inf, None)
    for eps in noise:
        cands = [torch.minimum(torch.maximum(mean + std * e, low), high) for e in eps]
        ranked = sorted(((float(score(c)), i) for i, c in enumerate(cands)), key=lambda t: (-t[0], t[1]))
        top = [cands[i] for _, i in ranked[:elites]]
        if ranked[0][0] > best[0]:
            best = (ranked[0][0], top[0])
        stacked = torch.stack(top)
        mean, std = stacked.mean(0), stacked.std(0, unbiased=False)
    return best[1], best[0]


def test_matches_a_loop_reference_implementation():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, generator=g)
    score_one = lambda a: -(a - 0.3 * w).square().sum() + 0.1 * torch.sin(5 * a).sum()  # noqa: E731
    score = lambda a: -(a - 0.3 * w).square().sum(-1) + 0.1 * torch.sin(5 * a).sum(-1)  # noqa: E731
    low, high = box(3, -1.0, 1.0)
    noise = torch.randn(3, 20, 3, generator=g)
    mean, std = torch.zeros(1, 3), torch.ones(1, 3)
    action, value = cem_maximize(score, noise, low, high, 5, mean, std)
    ref_action, ref_value = reference_cem(score_one, noise, low, high, 5, mean[0], std[0])
    torch.testing.assert_close(action[0], ref_action)
    assert value.item() == pytest.approx(ref_value, abs=1e-6)


def test_tie_margin_is_the_smallest_decision_gap():
    # Scores 0, 1, 2, 3 for the four candidates of one iteration; elites 2: best-vs-runner-up gap 1.
    noise = torch.tensor([[[-0.9], [-0.3], [0.3], [0.9]]])
    score = lambda a: (a[..., 0] + 0.9) / 0.6  # noqa: E731
    _, _, margin = cem_maximize(score, noise, *box(1), 2, torch.zeros(1, 1), torch.ones(1, 1), return_margin=True)
    torch.testing.assert_close(margin, torch.tensor([1.0]))
    # Two different actions with the same score: a tie (margin 0); two identical actions: no tie.
    flat = lambda a: torch.zeros(a.shape[:2])  # noqa: E731
    _, _, margin = cem_maximize(flat, noise, *box(1), 2, torch.zeros(1, 1), torch.ones(1, 1), return_margin=True)
    assert margin.item() == 0.0
    clipped = torch.full((1, 4, 1), 5.0)  # all four samples clip onto the bound 1.0
    _, _, margin = cem_maximize(flat, clipped, *box(1), 2, torch.zeros(1, 1), torch.ones(1, 1), return_margin=True)
    assert margin.item() == math.inf


@pytest.mark.parametrize("kwargs, match", [
    ({"samples": 4, "elites": 5}, "elites <= samples"),
    ({"iterations": 0}, "iterations >= 1"),
    ({"init_std": 0.0}, "init_std"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CEM(*box(2), **kwargs)
    with pytest.raises(ValueError, match="low < high"):
        CEM(torch.ones(2), torch.ones(2))
