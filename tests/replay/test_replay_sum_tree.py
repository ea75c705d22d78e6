"""SumTree against brute force (numpy cumsum + searchsorted) over many random priority sets."""

import numpy as np
import pytest

from rlcontrol.replay import SumTree

# Small trees, a power of two, just past one, and trees deeper than the bulk-searched top levels.
CAPACITIES = [1, 2, 3, 7, 64, 1025, 5000, 70_000]


def random_priorities(rng, size):
    """Mixed magnitudes with many exact zeros (unsampleable items)."""
    priorities = rng.exponential(size=size) * 10.0 ** rng.integers(-3, 3, size=size)
    priorities[rng.random(size) < 0.3] = 0.0
    return priorities


def brute_force_find(priorities, values):
    """Item k with cumsum[k-1] <= v < cumsum[k]; side='right' skips zero-priority items."""
    cumulative = np.cumsum(priorities)
    return np.minimum(np.searchsorted(cumulative, values, side="right"), priorities.size - 1)


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_updates_total_and_prefix_search_match_brute_force(capacity):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    reference = np.zeros(capacity)
    for _ in range(20):
        # Batched updates with duplicate indices: the last write wins, as in a sequential loop.
        indices = rng.integers(0, capacity, size=rng.integers(1, 300))
        priorities = random_priorities(rng, indices.size)
        tree.update(indices, priorities)
        for i, p in zip(indices, priorities, strict=True):
            reference[i] = p
        np.testing.assert_array_equal(tree.priorities, reference)
        assert tree.total == pytest.approx(reference.sum(), rel=1e-12, abs=0)
        if reference.sum() == 0:
            continue
        values = rng.random(1000) * tree.total
        found = tree.find_prefix_sum(values)
        assert found.dtype == np.int64
        assert np.all(reference[found] > 0)
        # Away from interval boundaries (where the two summation orders may round differently by
        # an ulp) the answers must agree exactly.
        cumulative = np.cumsum(reference)
        margin = 1e-9 * reference.sum()
        near_boundary = np.abs(cumulative[found] - values) < margin
        near_boundary |= np.abs(cumulative[found] - reference[found] - values) < margin
        expected = brute_force_find(reference, values)
        np.testing.assert_array_equal(found[~near_boundary], expected[~near_boundary])


def test_duplicate_indices_last_write_wins_and_all_ancestors_agree():
    tree = SumTree(8)
    tree.update([3, 5, 3, 3, 5], [1.0, 2.0, 7.0, 4.0, 0.5])
    np.testing.assert_array_equal(tree.priorities, [0, 0, 0, 4.0, 0, 0.5, 0, 0])
    assert tree.total == 4.5
    # v in [0, 4) -> item 3, v in [4, 4.5) -> item 5.
    np.testing.assert_array_equal(tree.find_prefix_sum(np.array([0.0, 3.99, 4.0, 4.49])), [3, 3, 5, 5])


def test_single_and_scalar_updates():
    tree = SumTree(5000)
    tree.update([4321], [2.5])
    tree.update(np.array([7, 8]), 1.5)  # one priority for several items
    assert tree.total == 5.5
    np.testing.assert_array_equal(tree.get(np.array([7, 8, 4321, 0])), [1.5, 1.5, 2.5, 0.0])


def test_edge_values_never_return_zero_priority_or_unfilled_items():
    rng = np.random.default_rng(0)
    for capacity in [3, 1000, 3000]:
        for _ in range(50):
            priorities = random_priorities(rng, capacity)
            filled = rng.integers(1, capacity + 1)
            priorities[filled:] = 0.0  # unfilled tail of a buffer
            if priorities.sum() == 0:
                priorities[0] = 1.0
            tree = SumTree(capacity)
            tree.assign(priorities[:filled])
            total = tree.total
            # v == total (or beyond, clipped), the largest double below it, 0 and below 0.
            values = np.array([total, np.nextafter(total, 0), total * (1 - 1e-16), 0.0, -1.0, 2 * total])
            found = tree.find_prefix_sum(values)
            assert np.all(priorities[found] > 0), (priorities, values, found)
            last_positive = np.flatnonzero(priorities)[-1]
            assert found[0] == last_positive and found[-1] == last_positive
            assert found[3] == found[4] == np.flatnonzero(priorities)[0]


def test_huge_dynamic_range_still_lands_on_positive_items():
    # 1 + 1e20 == 1e20 in float64: small items' intervals vanish in the running sum.
    priorities = np.array([1e20, 1.0, 0.0, 1e-300, 0.0, 0.0, 0.0, 0.0] * 300)
    tree = SumTree(priorities.size)
    tree.update(np.arange(priorities.size), priorities)
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(10_000) * tree.total, np.linspace(0, tree.total, 10_000)])
    assert np.all(priorities[tree.find_prefix_sum(values)] > 0)


def test_assign_rebuild_is_bit_identical_to_incremental_updates():
    rng = np.random.default_rng(2)
    incremental = SumTree(3000)
    for _ in range(50):
        indices = rng.integers(0, 3000, size=200)
        incremental.update(indices, random_priorities(rng, 200))
    incremental.update([17], [3.25])  # also the single-item path
    rebuilt = SumTree(3000)
    rebuilt.assign(incremental.priorities.copy(), incremental.max_recorded)
    assert rebuilt.total == incremental.total
    np.testing.assert_array_equal(rebuilt._nodes, incremental._nodes)  # every internal sum, exactly
    values = rng.random(10_000) * incremental.total
    np.testing.assert_array_equal(rebuilt.find_prefix_sum(values), incremental.find_prefix_sum(values))
    restored = SumTree(3000)
    restored.load_state_dict(incremental.state_dict())
    assert restored.total == incremental.total and restored.max_recorded == incremental.max_recorded


def test_max_recorded_is_a_running_max():
    tree = SumTree(4)
    assert tree.max_recorded == 0.0
    tree.update([0, 1], [2.0, 5.0])
    tree.update([1], [0.1])
    assert tree.max_recorded == 5.0


def test_invalid_input():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="total priority is 0"):
        tree.find_prefix_sum(np.array([0.0]))
    with pytest.raises(IndexError):
        tree.update([4], [1.0])
    with pytest.raises(IndexError):
        tree.update([-1], [1.0])
    for bad in [-1.0, np.nan, np.inf]:
        with pytest.raises(ValueError, match="finite"):
            tree.update([0, 1], [1.0, bad])
    with pytest.raises(ValueError):
        tree.update([0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        SumTree(0)
    assert tree.total == 0.0  # nothing was written by the failed calls
