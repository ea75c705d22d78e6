"""The fine-tuning stopping rule (sim2real.plateau) on hand-computed windows."""

from __future__ import annotations

import math

import pytest

from rlcontrol.errors import UserError
from sim2real.plateau import PlateauRule, RobotEpisode, plateau

RULE = PlateauRule(window=4, tolerance=0.05)


def _episodes(first: list[float], later: list[float], std: float = 0.2) -> list[RobotEpisode]:
    eps = [RobotEpisode(0, r, std) for r in first]
    return eps + [RobotEpisode(1 + i, r, std) for i, r in enumerate(later)]


def test_fires_when_the_recent_spread_is_a_small_share_of_the_gain():
    # baseline 500; recent 900, 910, 905, 915: mean 907.5, gain 407.5, spread 15 <= 0.05 * 407.5 = 20.4
    reason = plateau(_episodes([490, 510], [600, 900, 910, 905, 915]), RULE)
    assert reason is not None and "spread of 15.0" in reason and "gain of 407.5" in reason and "v0's 500.0" in reason


def test_does_not_fire_when_the_spread_is_just_above_the_tolerance():
    # recent 900, 925, 905, 915: mean 911.25, gain 411.25 -> bound 20.56 < spread 25
    assert plateau(_episodes([490, 510], [600, 900, 925, 905, 915]), RULE) is None
    # the same window one episode later, after the outlier left it: 925, 905, 915, 910 -> spread 20 <= 20.6
    assert plateau(_episodes([490, 510], [600, 900, 925, 905, 915, 910]), RULE) is not None


def test_never_fires_without_a_gain_nor_before_a_full_window():
    flat = _episodes([500, 500], [500, 501, 500, 501])  # a steady robot that learned nothing
    assert plateau(flat, RULE) is None
    worse = _episodes([500, 500], [400, 401, 400, 401])
    assert plateau(worse, RULE) is None
    short = _episodes([500, 500], [900, 900, 900])  # 3 < window
    assert plateau(short, RULE) is None
    assert plateau([], RULE) is None


def test_estopped_episodes_and_other_noise_levels_are_left_out():
    eps = _episodes([500, 500], [900, 905, 910, 905])
    assert plateau(eps, RULE) is not None
    # an e-stop episode in the window is ignored, not counted as the fourth agreeing episode
    stopped = eps[:-1] + [RobotEpisode(9, 100.0, 0.2, intervened=True)]
    assert plateau(stopped, RULE) is None
    # the latest episode ran under another std: only episodes under that std count (none before it)
    assert plateau(eps + [RobotEpisode(9, 950.0, 0.0)], RULE) is None
    # non-finite returns are not evidence
    assert plateau(eps[:-1] + [RobotEpisode(9, math.nan, 0.2)], RULE) is None


def test_bad_settings_are_one_clear_error():
    for kwargs in ({"window": 1}, {"window": 2.5}, {"tolerance": 0.0}, {"tolerance": 1.0}, {"tolerance": math.inf}):
        with pytest.raises(UserError, match="plateau"):
            PlateauRule(**kwargs)
