"""The safety layer's parts, each on its own, with hand-computed expectations (no rclpy, no sleeps).

Values are chosen exactly representable in binary (0.25, 0.5, ...) so results compare with ==.
"""

from __future__ import annotations

import gc
import math
import tracemalloc

import numpy as np
import pytest

from ros_nodes.safety import (
    REASONS,
    Clamp,
    EStopLatch,
    GcGuard,
    LatencyStats,
    NonFiniteGuard,
    RateLimiter,
    SafetyLayer,
    TickStats,
    Watchdog,
    tick_summary,
)

# ---------------------------------------------------------------- Clamp


def test_clamp_bounds_each_element_and_reports_whether_it_moved():
    clamp = Clamp([-1.0, 0.0, -2.0], [1.0, 2.0, 2.0])
    out = np.empty(3)
    assert clamp.apply(np.array([5.0, -3.0, 0.5]), out=out) is True
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.5])
    assert clamp.apply(np.array([-1.0, 2.0, 0.5]), out=out) is False  # on the bounds is inside
    np.testing.assert_array_equal(out, [-1.0, 2.0, 0.5])


def test_clamp_in_place_still_reports_the_move():
    clamp = Clamp([-1.0], [1.0])
    x = np.array([3.0])
    assert clamp.apply(x, out=x) is True
    assert x[0] == 1.0


@pytest.mark.parametrize("low, high", [([1.0], [0.0]), ([-np.inf], [1.0]), ([0.0, 0.0], [1.0]), ([[0.0]], [[1.0]])])
def test_clamp_rejects_bad_bounds(low, high):
    with pytest.raises(ValueError):
        Clamp(low, high)


def test_clamp_copies_bounds():
    low = np.array([-1.0])
    clamp = Clamp(low, [1.0])
    low[0] = -5.0
    out = np.empty(1)
    clamp.apply([-3.0], out=out)
    assert out[0] == -1.0


# ---------------------------------------------------------------- RateLimiter


def test_rate_limiter_limits_change_per_element_relative_to_last_sent():
    limiter = RateLimiter([0.25, 0.5], size=2)
    out = np.empty(2)
    assert limiter.limit([1.0, -1.0], out=out) is False  # nothing sent yet: no reference
    np.testing.assert_array_equal(out, [1.0, -1.0])
    limiter.sent([0.0, 0.0])
    assert limiter.limit([1.0, -1.0], out=out) is True
    np.testing.assert_array_equal(out, [0.25, -0.5])
    assert limiter.limit([0.25, 0.5], out=out) is False  # exactly max_delta away is allowed
    np.testing.assert_array_equal(out, [0.25, 0.5])


def test_rate_limiter_continues_from_what_was_sent_not_from_what_was_proposed():
    limiter = RateLimiter(0.25, size=1)
    out = np.empty(1)
    limiter.sent([1.0])
    limiter.sent([0.0])  # e.g. the safety layer substituted the safe command
    limiter.limit([1.0], out=out)
    assert out[0] == 0.25  # ramps from 0.0, does not jump back to 1.0


@pytest.mark.parametrize("max_delta", [[None, 0.5], [np.inf, 0.5]])
def test_rate_limiter_none_or_inf_disables_an_element(max_delta):
    limiter = RateLimiter(max_delta, size=2)
    limiter.sent([0.0, 0.0])
    out = np.empty(2)
    limiter.limit([10.0, 10.0], out=out)
    np.testing.assert_array_equal(out, [10.0, 0.5])


def test_rate_limiter_none_disables_everything():
    limiter = RateLimiter(None, size=2)
    limiter.sent([0.0, 0.0])
    out = np.empty(2)
    assert limiter.limit([10.0, -10.0], out=out) is False
    np.testing.assert_array_equal(out, [10.0, -10.0])


@pytest.mark.parametrize("max_delta", [-0.1, np.nan, [0.1, 0.1, 0.1]])
def test_rate_limiter_rejects_bad_max_delta(max_delta):
    with pytest.raises(ValueError):
        RateLimiter(max_delta, size=2)


# ---------------------------------------------------------------- NonFiniteGuard


@pytest.mark.parametrize(
    "action, obs_finite, expected",
    [
        ([0.0, 1.0], True, "ok"),
        ([np.nan, 1.0], True, "nonfinite_action"),
        ([0.0, -np.inf], True, "nonfinite_action"),
        (None, True, "nonfinite_obs"),  # the policy refused the observation
        ([0.0, 1.0], False, "nonfinite_obs"),
        ([np.nan, 1.0], False, "nonfinite_obs"),  # a bad observation explains the bad action
    ],
)
def test_nonfinite_guard(action, obs_finite, expected):
    assert NonFiniteGuard(2).check(None if action is None else np.array(action), obs_finite) == expected


def test_nonfinite_guard_rejects_wrong_shape_instead_of_broadcasting():
    with pytest.raises(ValueError):
        NonFiniteGuard(2).check(np.array([0.0]), True)


# ---------------------------------------------------------------- Watchdog


def test_watchdog_never_received_is_stale_and_timeout_is_per_name():
    dog = Watchdog(0.5, ["pos", "vel"])
    assert dog.stale(0.0) == ("pos", "vel")
    dog.feed("pos", 1.0)
    assert dog.stale(1.0) == ("vel",)
    dog.feed("vel", 1.25)
    assert dog.stale(1.5) == ()  # exactly timeout after "pos": still fresh
    assert dog.stale(1.625) == ("pos",)
    assert dog.stale(2.0) == ("pos", "vel")


def test_watchdog_ignores_names_it_does_not_require():
    dog = Watchdog(0.5, ["pos"])
    dog.feed("other", 0.0)
    assert dog.stale(0.0) == ("pos",)


def test_watchdog_counts_trips_as_transitions_and_stale_ticks_separately():
    dog = Watchdog(0.5, ["pos", "vel"])
    assert dog.check(0.0) == ("pos", "vel")  # start-up: stale but never fresh, so no trip
    dog.feed("pos", 0.0)
    dog.feed("vel", 0.0)
    assert dog.check(0.25) == ()
    assert dog.check(1.0) == ("pos", "vel")  # trip 1
    assert dog.check(1.5) == ("pos", "vel")  # the same dropout: no new trip
    dog.feed("pos", 2.0)
    dog.feed("vel", 2.0)
    assert dog.check(2.0) == ()
    dog.feed("vel", 2.5)
    assert dog.check(2.75) == ("pos",)  # trip 2, only "pos"
    assert (dog.trips, dog.stale_ticks) == (2, 4)
    assert dog.trips_by_name == {"pos": 2, "vel": 1}


# ---------------------------------------------------------------- EStopLatch


def test_estop_latches_until_explicit_reset():
    estop = EStopLatch()
    assert not estop.active
    estop.on_message(True)
    estop.on_message(False)  # the topic going false does not clear the latch
    assert estop.active
    estop.trip()  # already latched: not a new trip
    assert estop.trips == 1
    estop.reset()
    assert not estop.active
    estop.on_message(True)
    assert estop.active and estop.trips == 2


# ---------------------------------------------------------------- SafetyLayer


def make_layer(**kwargs) -> SafetyLayer:
    args = {"low": [-1.0, -1.0], "high": [1.0, 1.0], "obs_timeout_s": 0.5, "required": ["obs"]}
    return SafetyLayer(**{**args, **kwargs})


def test_layer_default_safe_command_is_zero_clipped_into_bounds():
    layer = SafetyLayer([0.5, -1.0], [1.0, 1.0])
    np.testing.assert_array_equal(layer.safe_command, [0.5, 0.0])


@pytest.mark.parametrize("safe", [[2.0, 0.0], [np.nan, 0.0], [0.0]])
def test_layer_rejects_a_safe_command_outside_bounds(safe):
    with pytest.raises(ValueError):
        make_layer(safe_command=safe)


def test_layer_ok_clamps_and_counts():
    layer = make_layer()
    layer.feed("obs", 0.0)
    cmd, reason = layer.command(np.array([2.0, -0.5]), now=0.0, obs_finite=True)
    assert reason == "ok"
    np.testing.assert_array_equal(cmd, [1.0, -0.5])
    layer.command(np.array([0.5, -0.5]), now=0.0, obs_finite=True)
    assert layer.counters["ok"] == 2 and layer.counters["clamped"] == 1


def test_layer_reason_priority():
    layer = make_layer(safe_command=[0.25, -0.25])
    layer.estop.trip()  # everything wrong at once: e-stop, stale input, bad observation, bad action
    nan = np.array([np.nan, 0.0])
    expected = [("estop", layer.estop.reset), ("stale", lambda: layer.feed("obs", 0.0)),
                ("nonfinite_obs", None)]
    for reason, fix in expected:
        cmd, got = layer.command(nan, now=0.0, obs_finite=False)
        assert got == reason
        np.testing.assert_array_equal(cmd, [0.25, -0.25])
        if fix:
            fix()
    assert layer.command(nan, now=0.0, obs_finite=True)[1] == "nonfinite_action"
    assert layer.command(np.array([0.5, 0.5]), now=0.0, obs_finite=True)[1] == "ok"


def test_layer_nonfinite_yields_safe_command_not_nan():
    layer = make_layer()
    layer.feed("obs", 0.0)
    for action, obs_finite, reason in [([np.nan, 0.5], True, "nonfinite_action"),
                                       ([np.inf, 0.5], True, "nonfinite_action"),
                                       (None, True, "nonfinite_obs"), ([0.5, 0.5], False, "nonfinite_obs")]:
        cmd, got = layer.command(None if action is None else np.array(action), now=0.0, obs_finite=obs_finite)
        assert got == reason
        np.testing.assert_array_equal(cmd, [0.0, 0.0])
    assert (layer.counters["nonfinite_action"], layer.counters["nonfinite_obs"]) == (2, 2)


def test_layer_stale_input_stops_the_robot():
    layer = make_layer()
    assert layer.stale(0.0) == ("obs",) and layer.counters["ticks"] == 0  # a query: counts nothing
    assert layer.command(np.array([0.5, 0.5]), now=0.0, obs_finite=True)[1] == "stale"  # never received
    layer.feed("obs", 1.0)
    assert layer.command(np.array([0.5, 0.5]), now=1.5, obs_finite=True)[1] == "ok"
    cmd, reason = layer.command(np.array([0.5, 0.5]), now=1.75, obs_finite=True)
    assert reason == "stale" and layer.stale_names == ("obs",)
    np.testing.assert_array_equal(cmd, [0.0, 0.0])


def test_layer_rate_limit_stops_at_once_and_recovers_by_ramping():
    layer = make_layer(max_delta=0.25)
    layer.feed("obs", 0.0)
    target = np.array([1.0, -1.0])
    sent = [layer.command(target, 0.0, True)[0].copy() for _ in range(3)]
    np.testing.assert_array_equal(sent, [[0.25, -0.25], [0.5, -0.5], [0.75, -0.75]])  # ramps from safe (0)
    cmd, reason = layer.command(np.array([np.nan, 0.0]), 0.0, True)
    assert reason == "nonfinite_action"
    np.testing.assert_array_equal(cmd, [0.0, 0.0])  # the stop itself is not ramped
    cmd, reason = layer.command(target, 0.0, True)
    assert reason == "ok"
    np.testing.assert_array_equal(cmd, [0.25, -0.25])  # ramps again from the safe command, no jump to 1.0
    assert layer.counters["rate_limited"] == 4


def test_layer_counts_stale_trips_even_under_estop_and_reasons_sum_to_ticks():
    layer = make_layer()
    layer.feed("obs", 0.0)
    layer.command(np.zeros(2), 0.0, True)
    layer.estop.trip()
    for now in (1.0, 2.0):
        assert layer.command(np.zeros(2), now, True)[1] == "estop"
    c = layer.counters
    assert (c["ticks"], c["ok"], c["estop"], c["stale"], c["stale_trips"]) == (3, 1, 2, 0, 1)
    assert sum(c[r] for r in ("ok", "estop", "stale", "nonfinite_obs", "nonfinite_action")) == c["ticks"]


def test_a_driver_takeover_gives_the_safe_command_until_released_below_the_estop():
    layer = make_layer()
    layer.feed("obs", 0.0)
    assert layer.command(np.array([0.5, 0.5]), 0.0, True)[1] == "ok"
    layer.takeover.set(True)
    layer.takeover.set(True)  # the driver's topic repeating itself is not a new takeover
    command, reason = layer.command(np.array([0.5, 0.5]), 0.01, True)
    assert reason == "takeover" and (command == layer.safe_command).all() and layer.takeover.takeovers == 1
    layer.estop.trip()
    assert layer.command(np.array([0.5, 0.5]), 0.02, True)[1] == "estop"
    layer.estop.reset()
    layer.takeover.set(False)
    assert layer.command(np.array([0.5, 0.5]), 0.03, True)[1] == "ok"
    c = layer.counters
    assert (c["takeover"], c["estop"], c["ok"]) == (1, 1, 2) and sum(c[r] for r in REASONS) == c["ticks"]


def test_layer_rejects_wrong_action_shape():
    layer = make_layer()
    layer.feed("obs", 0.0)
    with pytest.raises(ValueError):
        layer.command(np.array([0.5]), 0.0, True)


def test_layer_ok_path_reuses_its_output_and_allocates_no_array():
    n = 100_000  # large, so that any temporary array (>= n bytes) stands out from Python's small objects
    layer = SafetyLayer(-np.ones(n), np.ones(n), max_delta=0.5, obs_timeout_s=0.5, required=["obs"])
    layer.feed("obs", 0.0)
    action = np.full(n, 2.0)
    tracemalloc.start()
    try:
        first, _ = layer.command(action, 0.0, True)  # warm-up
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        second, reason = layer.command(action, 0.0, True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "ok" and second is first
    assert second[0] == 1.0 and layer.counters["clamped"] == 2
    assert peak - before < n // 4


# ---------------------------------------------------------------- LatencyStats, TickStats


def test_latency_stats_percentiles_in_ms():
    stats = LatencyStats(capacity=100)
    assert stats.summary()["count"] == 0 and math.isnan(stats.summary()["p50_ms"])
    for ms in range(100, 0, -1):  # 100 ms .. 1 ms
        stats.add(ms / 1000)
    s = stats.summary()
    # numpy's linear interpolation over 1..100: p50 between 50 and 51, p99 at 99 + 0.01
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100.0)


def test_latency_stats_keeps_only_the_last_capacity_samples():
    stats = LatencyStats(capacity=4)
    for ms in (500, 20, 30, 40, 50):
        stats.add(ms / 1000)
    s = stats.summary()
    assert s["count"] == 4
    assert s["max_ms"] == pytest.approx(50.0)
    assert s["p50_ms"] == pytest.approx(35.0)


def test_tick_summary_rate_and_missed_ticks():
    # period 0.25 s; gaps 0.25, 0.35 (1.4 periods: jitter, none missed), 0.4 (1.6 periods: 1 missed),
    # 0.75 (3 periods: 2 missed)
    starts = [0.0, 0.25, 0.6, 1.0, 1.75]
    s = tick_summary(starts, 0.25)
    assert s["count"] == 5
    assert s["missed"] == 3
    assert s["missed_fraction"] == pytest.approx(3 / (4 + 3))
    assert s["rate_hz"] == pytest.approx(4 / 1.75)


def test_tick_stats_ring_keeps_chronological_order():
    stats = TickStats(period_s=0.25, capacity=3)
    for t in (0.0, 0.25, 0.5, 0.75, 1.5):
        stats.add(t)
    s = stats.summary()  # window 0.5, 0.75, 1.5: gaps 0.25 and 0.75 (2 missed)
    assert (s["count"], s["missed"]) == (3, 2)
    assert s["missed_fraction"] == pytest.approx(0.5) == stats.missed_fraction()
    assert s["rate_hz"] == pytest.approx(2.0) == stats.rate_hz()


def test_tick_summary_too_few_ticks():
    s = tick_summary([1.0], 0.25)
    assert s["count"] == 1 and s["missed"] == 0 and math.isnan(s["rate_hz"])


# ---------------------------------------------------------------- GcGuard


@pytest.fixture
def restore_gc():
    enabled = gc.isenabled()
    guards: list[GcGuard] = []
    yield guards
    for guard in guards:
        guard.exit_control()
        guard.uninstall()
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def fake_clock(step: float):
    """Each call returns `step` more than the last, so every measured pause is exactly `step`."""
    calls = iter(range(10**9))
    return lambda: next(calls) * step


def test_gc_guard_measures_collections_and_disables_automatic_gc(restore_gc):
    gc.enable()
    guard = GcGuard(clock=fake_clock(0.5))
    restore_gc.append(guard)
    guard.enter_control()
    assert not gc.isenabled()
    assert guard.count[2] >= 1  # the full collection enter_control ran
    young = guard.count[0]
    assert guard.collect_if_slack(0.01, min_slack_s=0.001) == 0
    assert guard.count[0] == young + 1
    assert guard.collect_if_slack(0.0005, min_slack_s=0.001) is None  # not enough time before the next tick
    assert guard.count[0] == young + 1
    s = guard.stats()
    assert s["count"] == sum(guard.count)
    assert s["max_ms"] == 500.0 and s["gen0_max_ms"] == 500.0
    assert s["total_ms"] == 500.0 * s["count"]
    assert not gc.isenabled()
    guard.exit_control()
    assert gc.isenabled()


def test_gc_guard_with_the_real_clock_measures_a_positive_pause(restore_gc):
    guard = GcGuard()
    restore_gc.append(guard)
    guard.install()
    before = guard.count[1]
    gc.collect(1)
    assert guard.count[1] == before + 1 and guard.stats()["gen1_max_ms"] > 0.0
    guard.uninstall()
    gc.collect(1)
    assert guard.count[1] == before + 1  # uninstalled: no longer measured


def test_gc_guard_runs_a_full_collection_rarely_and_only_with_enough_slack(restore_gc):
    guard = GcGuard(full_every=2, full_min_slack_s=0.004)
    restore_gc.append(guard)
    guard.enter_control()
    got = [guard.collect_if_slack(t, min_slack_s=0.001) for t in (0.01, 0.01, 0.002, 0.01, 0.01)]
    assert got == [0, 0, 0, 2, 0]  # the due full collection waits for a tick with 4 ms of slack


def test_gc_guard_exit_restores_a_previously_disabled_gc(restore_gc):
    gc.disable()
    guard = GcGuard()
    restore_gc.append(guard)
    guard.enter_control()
    guard.exit_control()
    assert not gc.isenabled()


def test_gc_guard_enter_twice_still_restores_automatic_gc(restore_gc):
    gc.enable()
    guard = GcGuard()
    restore_gc.append(guard)
    guard.enter_control()
    guard.enter_control()
    guard.exit_control()
    assert gc.isenabled()
