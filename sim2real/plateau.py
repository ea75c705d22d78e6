"""A stopping rule for live fine-tuning: end the session once the robot's returns have plateaued.

Issue 17 measured why a fixed session length is a gamble: the learner keeps updating after the
robot's returns have reached their level, and the version a session ends on can be caught in a
down-swing (versions that closed the whole gap were followed, a minute later, by ones at 11-50%).
On a robot every further update is a risk once there is nothing left to gain, so the session stops
learning when the recent episodes say the gain is in:

* **Baseline**: the mean return of the episodes the session's first policy drove (the sim policy,
  or the version a resumed session started on).
* **Recent**: the last ``window`` episodes driven by later versions (whole or not: a return over
  two consecutive versions still tells where the learner stands), none with an e-stop, all under
  the exploration std of the latest episode (returns under another noise level are not comparable).
* **Plateau**: the recent returns gained on the baseline (``gain = mean(recent) - baseline > 0``)
  and lie within ``tolerance * gain`` of each other (``max - min``): once the learner has moved the
  robot's return by ``gain``, a window whose spread is a small share of that is the learner standing
  still. Relative to the gain, not to the return, so the rule needs no task's scale and never fires
  before anything was learned (no gain, no plateau).

The session then ends on the version that drove the last of those episodes (see
ros_nodes.keep_best). Pure: numbers in, a reason (or None) out; unit-tested on hand-computed windows
(tests/sim2real/test_plateau.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rlcontrol.errors import UserError

STD_DECIMALS = 6  # the same rounding as sim2real.version_selection


@dataclass(frozen=True)
class PlateauRule:
    window: int = 10  # recent episodes that must agree
    tolerance: float = 0.05  # their spread (max - min), as a share of their gain over the first policy

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise UserError(f"plateau window must be a whole number of episodes >= 2, got {self.window!r}")
        if (isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float))
                or not math.isfinite(self.tolerance) or not 0.0 < self.tolerance < 1.0):
            raise UserError(f"plateau tolerance must be a number between 0 and 1 (exclusive), got {self.tolerance!r}")


@dataclass(frozen=True)
class RobotEpisode:
    """One robot episode as the rule sees it: who drove its end, its return, the noise, an e-stop."""

    version: int
    ret: float
    exploration_std: float | None = None
    intervened: bool = False


def _std(value: float | None) -> float | None:
    return None if value is None else round(float(value), STD_DECIMALS)


def plateau(episodes: Sequence[RobotEpisode], rule: PlateauRule) -> str | None:
    """The reason the session should stop now, or None. ``episodes``: the session's, in order."""
    usable = [e for e in episodes if not e.intervened and math.isfinite(e.ret)]
    if not usable:
        return None
    std = _std(usable[-1].exploration_std)
    same_noise = [e for e in usable if _std(e.exploration_std) == std]
    if not same_noise:
        return None
    first = same_noise[0].version
    baseline = [e.ret for e in same_noise if e.version == first]
    later = [e.ret for e in same_noise if e.version != first]
    if not baseline or len(later) < rule.window:
        return None
    recent = later[-rule.window:]
    base = sum(baseline) / len(baseline)
    level = sum(recent) / len(recent)
    gain, spread = level - base, max(recent) - min(recent)
    if gain <= 0.0 or spread > rule.tolerance * gain:
        return None
    return (f"plateau: the last {rule.window} episodes returned {min(recent):.1f}-{max(recent):.1f} (mean "
            f"{level:.1f}), a spread of {spread:.1f} <= {rule.tolerance:g} x their gain of {gain:.1f} over "
            f"v{first}'s {base:.1f} ({len(baseline)} episodes)")
