"""The safety layer: every command passes through here before the policy node publishes it.

Pure Python + numpy, no rclpy, so each guard is unit-testable on its own and the policy node
only wires ROS callbacks to it. Per control tick the node calls `SafetyLayer.command(...)`;
the parts it combines are usable separately:

    Clamp           per-element physical bounds
    RateLimiter     largest change per tick, relative to the command actually sent
    NonFiniteGuard  NaN/inf observation or policy output -> safe command
    Watchdog        required inputs that went quiet -> safe command
    EStopLatch      e-stop that only an explicit reset clears
    DriverTakeover  a safety driver's takeover: the safe command while the driver has control
    LatencyStats, TickStats, GcGuard   timing diagnostics and GC pauses of the control loop

All times are seconds from one monotonic clock chosen by the caller (passed in explicitly, so
tests need no sleeps and simulated time works too).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable

import numpy as np

# Highest priority first: the first that applies is the reason a tick's command was replaced.
REASONS = ("estop", "takeover", "stale", "nonfinite_obs", "nonfinite_action", "ok")


def _vector(name: str, values, size: int | None = None) -> np.ndarray:
    # A private float64 copy: later changes to the caller's array must not move the limits.
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1 or (size is not None and arr.shape != (size,)):
        expected = f"({size},)" if size is not None else "1-D"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
    return arr


class Clamp:
    """Per-element [low, high] bounds of the physical command.

    NaN passes through a clip (as it does through ros2_control's limiters), so non-finite
    values must be caught before this (`NonFiniteGuard`). Bounds must be finite: an unbounded
    hardware command is exactly what this layer exists to prevent.
    """

    def __init__(self, low, high):
        self.low = _vector("low", low)
        self.high = _vector("high", high, self.low.size)
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError("low and high must be finite")
        if (self.low > self.high).any():
            raise ValueError("low must be <= high element-wise")
        self._outside = np.empty(self.low.shape, dtype=bool)

    def apply(self, x, out: np.ndarray) -> bool:
        """Write x clipped into [low, high] to `out` (may be x itself); True if anything moved."""
        # Decide before clipping so that in-place use (out is x) still reports correctly.
        moved = np.less(x, self.low, out=self._outside).any() or np.greater(x, self.high, out=self._outside).any()
        np.clip(x, self.low, self.high, out=out)
        return bool(moved)


def _deltas(max_delta, size: int) -> np.ndarray:
    if max_delta is None:
        return np.full(size, np.inf)
    if np.ndim(max_delta) == 0:
        max_delta = [max_delta] * size
    deltas = _vector("max_delta", [np.inf if d is None else d for d in max_delta], size)
    if np.isnan(deltas).any() or (deltas < 0).any():
        raise ValueError("max_delta must be >= 0 (None or inf disables an element)")
    return deltas


class RateLimiter:
    """Bounds the change per tick of each element relative to the last command actually *sent*.

    Relative to what was sent, not to what the policy proposed: after the safety layer
    substituted the safe command, recovery then ramps from the safe command instead of jumping
    back to where the policy was. The caller reports every sent command with `sent()`; until
    the first one, nothing is limited (there is no reference to limit against).
    """

    def __init__(self, max_delta, size: int):
        self.max_delta = _deltas(max_delta, size)
        self._last = np.zeros(size)
        self._has_last = False
        self._lo = np.empty(size)
        self._hi = np.empty(size)
        self._outside = np.empty(size, dtype=bool)

    @property
    def last(self) -> np.ndarray | None:
        return self._last.copy() if self._has_last else None

    def limit(self, x, out: np.ndarray) -> bool:
        """Write x limited to last +- max_delta to `out` (may be x itself); True if anything moved."""
        if not self._has_last:
            np.copyto(out, x)
            return False
        np.subtract(self._last, self.max_delta, out=self._lo)
        np.add(self._last, self.max_delta, out=self._hi)
        moved = np.less(x, self._lo, out=self._outside).any() or np.greater(x, self._hi, out=self._outside).any()
        np.clip(x, self._lo, self._hi, out=out)
        return bool(moved)

    def sent(self, command) -> None:
        """Record the command that went to the robot: the next tick is limited relative to it."""
        np.copyto(self._last, command)
        self._has_last = True

    def reset(self) -> None:
        self._has_last = False


class NonFiniteGuard:
    """Decides whether a tick's inputs are finite: a NaN/inf must become the safe command.

    A clamp or rate limiter would forward NaN to the hardware, so this check comes first.
    `obs_finite` is the caller's verdict on the observation (it knows the observation's layout);
    a `None` action means the policy refused the observation, which counts as a bad observation.
    """

    def __init__(self, size: int):
        self._shape = (size,)
        self._finite = np.empty(size, dtype=bool)  # preallocated: the check runs every tick

    def check(self, action, obs_finite: bool) -> str:
        """'nonfinite_obs', 'nonfinite_action' or 'ok' (the observation wins when both are bad)."""
        if action is None or not obs_finite:
            return "nonfinite_obs"
        if np.shape(action) != self._shape:
            raise ValueError(f"action must have shape {self._shape}, got {np.shape(action)}")
        if not np.isfinite(action, out=self._finite).all():
            return "nonfinite_action"
        return "ok"


class Watchdog:
    """Which required inputs have had no message within `timeout_s`.

    A name never received is stale: the robot must not move before every input has arrived.
    `stale(now)` is a pure query; `check(now)`, called once per tick, also counts stale ticks
    and trips. A trip is the transition from fresh to stale, so one dropout that lasts many
    ticks is one trip, and the start-up period (never fresh yet) is no trip. `trips` counts the
    input set as a whole going stale; `trips_by_name` says which inputs did.
    """

    def __init__(self, timeout_s: float, required_names: Iterable[str]):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.required = tuple(dict.fromkeys(required_names))  # de-duplicated, order kept
        self._received: dict[str, float | None] = dict.fromkeys(self.required)
        self._last_stale: tuple[str, ...] = self.required  # before any check nothing has been fresh
        self.trips = 0
        self.stale_ticks = 0
        self.trips_by_name = dict.fromkeys(self.required, 0)

    def feed(self, name: str, t: float) -> None:
        """Record that a fresh message for `name` arrived at time `t` (names not required are ignored)."""
        if name in self._received:
            self._received[name] = t

    def stale(self, now: float) -> tuple[str, ...]:
        """Required names with no message within timeout_s before `now` (exactly timeout_s is fresh)."""
        return tuple(name for name, t in self._received.items() if t is None or now - t > self.timeout_s)

    def check(self, now: float) -> tuple[str, ...]:
        """`stale(now)`, counting a stale tick and any trips (fresh at the last check, stale now).

        Call once per tick: transitions are observed at checks.
        """
        names = self.stale(now)
        if names:
            self.stale_ticks += 1
            if not self._last_stale:
                self.trips += 1
            for name in names:
                if name not in self._last_stale:
                    self.trips_by_name[name] += 1
        self._last_stale = names
        return names


class EStopLatch:
    """An e-stop that stays latched until an explicit `reset()`.

    A `False` on the e-stop topic does not clear it: a publisher that stops asserting the stop
    (or restarts and publishes its default) must not restart the robot; a person resets it.
    """

    def __init__(self):
        self.active = False  # True while latched
        self.trips = 0  # latching transitions; repeated stop messages while latched are not new trips

    def trip(self) -> None:
        if not self.active:
            self.trips += 1
            self.active = True

    def on_message(self, stop: bool) -> None:
        """Handle a value from the e-stop topic: True trips, False is ignored (see class docstring)."""
        if stop:
            self.trip()

    def reset(self) -> None:
        self.active = False


class DriverTakeover:
    """The safety driver's control (Learning to Drive in a Day): while `active`, the policy's
    commands are replaced by the safe command. Not latched, unlike the e-stop: the driver hands
    control back explicitly (`set(False)`); `takeovers` counts the times the driver took it."""

    def __init__(self):
        self.active = False
        self.takeovers = 0

    def set(self, driver_has_control: bool) -> None:
        if driver_has_control and not self.active:
            self.takeovers += 1
        self.active = bool(driver_has_control)


class SafetyLayer:
    """Every tick's command decision: the policy's action made safe, or the safe command.

    Reasons, highest priority first: estop > takeover > stale > nonfinite_obs > nonfinite_action > ok.
    On "ok" the action is clamped to [low, high] and then rate limited (the result stays in
    bounds because the last sent command is); otherwise the safe command is sent as is, at
    once (a stop is never ramped), and rate limiting continues from it.

    `counters` holds, for diagnostics: ticks, one count per reason (they sum to ticks),
    stale_trips (watchdog trips, counted even while the e-stop is latched), clamped and
    rate_limited (ok ticks on which that stage changed the command).

    The limiter's reference starts at the safe command, i.e. the robot is assumed to be at rest
    at the safe command before the first tick. For position-like commands choose a safe
    command that holds the robot, or leave max_delta None.
    """

    def __init__(self, low, high, safe_command=None, max_delta=None, obs_timeout_s: float = 0.1,
                 required: Iterable[str] = ()):
        self.clamp = Clamp(low, high)
        size = self.clamp.low.size
        if safe_command is None:
            safe = np.clip(np.zeros(size), self.clamp.low, self.clamp.high)
        else:
            safe = _vector("safe_command", safe_command, size)
            # A safe command outside the limits is a configuration error, not something to fix silently.
            if not np.isfinite(safe).all() or (safe < self.clamp.low).any() or (safe > self.clamp.high).any():
                raise ValueError("safe_command must be finite and within [low, high]")
        safe.flags.writeable = False
        self.safe_command = safe
        self.guard = NonFiniteGuard(size)
        self.rate_limiter = None if max_delta is None else RateLimiter(max_delta, size)
        if self.rate_limiter is not None:
            self.rate_limiter.sent(safe)
        self.watchdog = Watchdog(obs_timeout_s, required)
        self.estop = EStopLatch()
        self.takeover = DriverTakeover()
        self.counters = dict.fromkeys(("ticks", *REASONS, "stale_trips", "clamped", "rate_limited"), 0)
        self.stale_names: tuple[str, ...] = ()
        self._out = np.empty(size)

    def feed(self, name: str, t: float) -> None:
        """A fresh message for input `name` arrived at time `t` (see `Watchdog.feed`)."""
        self.watchdog.feed(name, t)

    def stale(self, now: float) -> tuple[str, ...]:
        """Required inputs stale at `now`; a pure query (lets the node skip the policy on such ticks)."""
        return self.watchdog.stale(now)

    def command(self, proposed_action, now: float, obs_finite: bool) -> tuple[np.ndarray, str]:
        """The command to publish this tick and why.

        The returned array is preallocated and overwritten by the next call: publish it (or
        copy it) before calling again. On the ok path no numpy array is allocated (for a float64
        ndarray action; a list or float32 array is converted on the way).
        `proposed_action` is the policy's physical action of shape (n,), or None when the
        policy refused the observation.
        """
        counters = self.counters
        counters["ticks"] += 1
        # Checked every tick, even under e-stop, so stale trips are counted whatever else happens.
        self.stale_names = self.watchdog.check(now)
        counters["stale_trips"] = self.watchdog.trips
        if self.estop.active:
            reason = "estop"
        elif self.takeover.active:
            reason = "takeover"
        elif self.stale_names:
            reason = "stale"
        else:
            reason = self.guard.check(proposed_action, obs_finite)
        counters[reason] += 1
        if reason != "ok":
            np.copyto(self._out, self.safe_command)
        else:
            counters["clamped"] += self.clamp.apply(proposed_action, out=self._out)
            if self.rate_limiter is not None:
                counters["rate_limited"] += self.rate_limiter.limit(self._out, out=self._out)
        if self.rate_limiter is not None:
            self.rate_limiter.sent(self._out)
        return self._out, reason


class _Ring:
    """The last `capacity` floats in a preallocated buffer: `add` only stores, no allocation."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._buf = np.zeros(capacity)
        self._next = 0
        self.count = 0

    def add(self, value: float) -> None:
        self._buf[self._next] = value
        self._next = (self._next + 1) % self._buf.size
        self.count = min(self.count + 1, self._buf.size)

    def values(self) -> np.ndarray:
        """Stored values, oldest first (a copy once the buffer has wrapped)."""
        if self.count < self._buf.size:
            return self._buf[: self.count]
        return np.concatenate((self._buf[self._next:], self._buf[: self._next]))


class LatencyStats:
    """Durations (e.g. observation-to-command latency) in a preallocated ring buffer.

    `add` runs on the control path, so it only stores a float; `summary` (off the hot path,
    e.g. for /diagnostics) summarizes the last `capacity` samples.
    """

    def __init__(self, capacity: int = 1000):
        self._ring = _Ring(capacity)

    def add(self, seconds: float) -> None:
        self._ring.add(seconds)

    def summary(self) -> dict:
        """count (samples in the window) and p50_ms, p99_ms, max_ms (NaN when empty)."""
        window = self._ring.values()
        if window.size == 0:
            return {"count": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
        p50, p99 = np.percentile(window, (50, 99))
        return {"count": int(window.size), "p50_ms": float(p50) * 1e3, "p99_ms": float(p99) * 1e3,
                "max_ms": float(window.max()) * 1e3}


def tick_summary(starts, period_s: float) -> dict:
    """Loop rate and missed ticks from chronological tick start times.

    A gap longer than 1.5 periods means ticks were missed: round(gap / period) - 1 of them.
    missed_fraction is missed / (ticks that should have happened over the span).
    """
    starts = np.asarray(starts, dtype=np.float64)
    if starts.size < 2:
        return {"count": int(starts.size), "rate_hz": math.nan, "missed": 0, "missed_fraction": 0.0}
    gaps = np.diff(starts)
    periods = np.floor(gaps / period_s + 0.5)  # round half up, so 1.5 < gap < 2.5 periods is 1 missed
    missed = int(np.where(gaps > 1.5 * period_s, periods - 1, 0).sum())
    span = float(starts[-1] - starts[0])
    return {"count": int(starts.size), "rate_hz": (starts.size - 1) / span if span > 0 else math.nan,
            "missed": missed, "missed_fraction": missed / (gaps.size + missed)}


class TickStats:
    """Tick start times in a preallocated ring buffer; `summary()` gives loop rate and missed ticks."""

    def __init__(self, period_s: float, capacity: int = 1000):
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)
        self._ring = _Ring(capacity)

    def add(self, t_start: float) -> None:
        self._ring.add(t_start)

    def summary(self) -> dict:
        """`tick_summary` over the last `capacity` ticks."""
        return tick_summary(self._ring.values(), self.period_s)

    def rate_hz(self) -> float:
        return self.summary()["rate_hz"]

    def missed_fraction(self) -> float:
        return self.summary()["missed_fraction"]


class GcGuard:
    """Measures Python GC pauses and keeps collections out of control ticks.

    A cyclic collection can start on any allocation and stop the loop for milliseconds. Inside
    the control section the automatic collector is off (`enter_control`), everything alive at
    that point is frozen (never scanned again), and the loop collects young garbage itself
    when a tick leaves enough slack (`collect_if_slack`). If the loop never has slack, cyclic
    garbage accumulates (reference counting still frees the rest).

    gc is process-wide: this affects every thread. Pauses are measured with `gc.callbacks`
    for all collections while installed, including ones not started here.
    """

    def __init__(self, full_every: int = 1000, full_min_slack_s: float = 0.005,
                 clock: Callable[[], float] = time.perf_counter):
        self.full_every = full_every
        self.full_min_slack_s = full_min_slack_s
        self._clock = clock
        self._t0 = 0.0
        self._installed = False
        self._active = False
        self._was_enabled = True
        self._young_since_full = 0
        self.count = [0, 0, 0]  # per generation
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = self._clock()
            return
        pause = self._clock() - self._t0
        gen = info["generation"]
        self.count[gen] += 1
        self.total_s[gen] += pause
        self.max_s[gen] = max(self.max_s[gen], pause)

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    @property
    def active(self) -> bool:
        return self._active

    def enter_control(self) -> None:
        """Collect now, freeze the survivors and disable automatic collection (idempotent)."""
        if self._active:
            return  # a second call must not record "disabled" as the state to restore
        self.install()
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        self._active = True

    def collect_if_slack(self, time_left_s: float, min_slack_s: float = 0.001) -> int | None:
        """Collect if `time_left_s` before the next tick allows; the generation collected, or None.

        Usually generation 0 (cheap: only objects allocated since the last collection); after
        `full_every` of those, a full collection instead, as soon as a tick leaves
        `full_min_slack_s`, so that garbage promoted to older generations is freed too.
        """
        if time_left_s < min_slack_s:
            return None
        if self._young_since_full >= self.full_every and time_left_s >= self.full_min_slack_s:
            self._young_since_full = 0
            gc.collect()
            return 2
        self._young_since_full += 1
        gc.collect(0)
        return 0

    def exit_control(self) -> None:
        """Undo `enter_control`: unfreeze and restore automatic collection as it was."""
        if not self._active:
            return
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
        self._active = False

    def stats(self) -> dict:
        """count, total_ms, max_ms over all collections, and per generation (gen0/1/2_*)."""
        out = {"count": sum(self.count), "total_ms": sum(self.total_s) * 1e3, "max_ms": max(self.max_s) * 1e3}
        for gen in range(3):
            out.update({f"gen{gen}_count": self.count[gen], f"gen{gen}_total_ms": self.total_s[gen] * 1e3,
                        f"gen{gen}_max_ms": self.max_s[gen] * 1e3})
        return out
