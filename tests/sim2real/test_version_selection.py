"""The keep-best rule of live fine-tuning (sim2real.version_selection), on hand-computed bounds.

One-sided Student-t quantiles used below (from a printed t table): t(0.90, 2) = 1.8856,
t(0.90, 3) = 1.6377, t(0.95, 2) = 2.9200.
"""

from __future__ import annotations

import math

import pytest

from rlcontrol.errors import UserError
from sim2real.version_selection import (
    EpisodeResult,
    SelectionSettings,
    decide,
    evaluated,
    format_table,
    mean_bounds,
    t_quantile,
)

T90_2, T90_3, T95_2 = 1.8856, 1.6377, 2.9200
KEEP_BEST = SelectionSettings(keep_best=True)


def runs(version, returns, std=0.2, sha=None):
    return [EpisodeResult(version, float(r), std, sha or f"sha{version}", f"/tmp/policy-v{version:04d}.onnx")
            for r in returns]


def test_t_quantiles_match_the_table():
    assert t_quantile(0.9, 2) == pytest.approx(T90_2, abs=1e-4)
    assert t_quantile(0.9, 3) == pytest.approx(T90_3, abs=1e-4)
    assert t_quantile(0.95, 2) == pytest.approx(T95_2, abs=1e-4)


def test_bounds_are_the_one_sided_student_t_bounds_of_the_mean():
    # [10, 12, 14]: mean 12, sample sd 2, half width t * 2 / sqrt(3)
    mean, sd, lower, upper = mean_bounds([10, 12, 14], 0.9)
    half = T90_2 * 2 / math.sqrt(3)  # 2.1773
    assert (mean, sd) == (12, 2)
    assert lower == pytest.approx(12 - half, abs=1e-3) and upper == pytest.approx(12 + half, abs=1e-3)
    # [100, 104, 96, 100]: sd sqrt(32 / 3) = 3.2660, half 1.6377 * 3.2660 / 2 = 2.6744
    _, sd, lower, _ = mean_bounds([100, 104, 96, 100], 0.9)
    assert sd == pytest.approx(3.2660, abs=1e-4) and lower == pytest.approx(97.3256, abs=1e-3)
    # a higher confidence widens the bound
    assert mean_bounds([10, 12, 14], 0.95)[2] == pytest.approx(12 - T95_2 * 2 / math.sqrt(3), abs=1e-3)
    # one episode: no spread, no bound
    assert mean_bounds([5.0], 0.9)[2:] == (-math.inf, math.inf)


def test_best_is_the_highest_lower_bound_not_the_highest_mean_nor_the_luckiest_episode():
    episodes = (runs(0, [500, 510, 490]) + runs(1, [1000])  # one lucky episode: not eligible
                + runs(2, [900, 1000, 800])  # mean 900, sd 100: lower 900 - 1.8856 * 100 / sqrt(3) = 791.1
                + runs(3, [850, 860, 840]))  # mean 850, sd 10: lower 850 - 10.887 = 839.1
    d = decide(episodes, SelectionSettings(), running_version=3, running_sha="sha3")
    assert d.best.label == 3 and d.action == "stay"
    rows = {row["version"]: row for row in d.table}
    assert rows[1]["episodes"] == 1 and not rows[1]["eligible"] and rows[1]["lower"] is None
    assert rows[2]["lower"] == pytest.approx(900 - T90_2 * 100 / math.sqrt(3), abs=0.01)
    assert rows[3]["lower"] == pytest.approx(839.113, abs=0.01) and rows[3]["best"] and rows[3]["running"]
    assert d.reason == ("compared at exploration std 0.2: v3: mean 850.0 over 3 episodes, 90% lower bound 839.1 "
                        "(best); v3 is running")


def test_too_few_episodes_leaves_no_best_and_says_so():
    episodes = runs(0, [500, 520]) + runs(1, [990])
    d = decide(episodes, SelectionSettings(), running_version=1, running_sha="sha1", final=True)
    assert d.best is None and d.action == "stay" and d.target.label == 1
    assert d.reason == "no version has 3 episodes at exploration std 0.2 yet (v0: 2, v1: 1): ended on the running v1"
    assert decide([], SelectionSettings()).reason.startswith("no version has 3 episodes at exploration std unknown")
    # min_episodes 2 makes v0 eligible
    assert decide(episodes, SelectionSettings(min_episodes=2), running_version=1, final=True).best.label == 0


def test_ties_prefer_the_running_version_then_the_newer_one():
    same = [700, 710, 690]
    episodes = runs(4, same) + runs(5, same) + runs(6, [100, 110, 90])
    assert decide(episodes, SelectionSettings(), running_version=4, running_sha="sha4").best.label == 4
    assert decide(episodes, SelectionSettings(), running_version=6, running_sha="sha6").best.label == 5


def test_versions_are_compared_under_the_current_exploration_std_only():
    # v0 ran noise-free (std 0) and scored high; then the node explores at 0.2, where returns are lower.
    episodes = runs(0, [990, 991, 989], std=0.0) + runs(1, [900, 905, 910], std=0.2)
    d = decide(episodes, SelectionSettings(), running_version=1, running_sha="sha1", final=True)
    assert d.exploration_std == 0.2 and d.best.label == 1 and d.action == "stay"
    rows = {row["version"]: row for row in d.table}
    assert rows[0]["episodes"] == 0 and rows[0]["other_std_episodes"] == 3 and not rows[0]["eligible"]
    # Once v0 has run under 0.2 too, it is compared on those episodes only.
    episodes += runs(0, [950, 955, 960], std=0.2)
    d = decide(episodes, SelectionSettings(), running_version=0, running_sha="sha0", final=True)
    assert d.best.label == 0 and d.best.returns == (950, 955, 960) and d.best.other_std_episodes == 3
    # Stds equal to 6 decimals are one setting.
    assert decide(runs(0, [1, 2, 3], std=0.2) + runs(0, [2], std=0.2 + 1e-9), SelectionSettings()).best.n == 4


def test_rollback_when_the_running_version_is_clearly_worse():
    episodes = runs(1, [950, 955, 960, 945]) + runs(2, [800, 790, 810])
    d = decide(episodes, KEEP_BEST, running_version=2, running_sha="sha2")
    # v1: mean 952.5, sd sqrt(125 / 3) = 6.455, lower 952.5 - 1.6377 * 6.455 / 2 = 947.2
    # v2: mean 800, sd 10, upper 800 + 1.8856 * 10 / sqrt(3) = 810.9 < 947.2
    assert d.action == "rollback" and d.target.label == 1 and d.target.path == "/tmp/policy-v0001.onnx"
    assert d.reason == ("compared at exploration std 0.2: v1: mean 952.5 over 4 episodes, 90% lower bound 947.2 "
                        "(best); v2: upper bound 810.9 < 947.2: rolled back to v1")
    assert d.reason_with(3).endswith("rolled back to v1 (re-pushed as v3)")
    off = decide(episodes, SelectionSettings(keep_best=True, rollback=False), running_version=2, running_sha="sha2")
    assert off.action == "stay" and off.reason.endswith("clearly worse, but rollback is off")
    # Rollback is part of keep-best mode, which is off by default (until the repeatability measurements).
    default = decide(episodes, SelectionSettings(), running_version=2, running_sha="sha2")
    assert not SelectionSettings().keep_best and SelectionSettings().rollback and not SelectionSettings().rolls_back
    assert default.action == "stay" and default.reason.endswith("clearly worse, but keep-best is off")


def test_no_rollback_while_the_intervals_overlap_or_the_running_version_is_not_evaluated():
    best = runs(1, [950, 955, 960, 945])  # lower 947.2
    overlapping = runs(2, [900, 960, 930])  # mean 930, sd 30: upper 930 + 32.66 = 962.7 > 947.2
    d = decide(best + overlapping, SelectionSettings(), running_version=2, running_sha="sha2")
    assert d.action == "stay" and d.best.label == 1
    assert d.reason.endswith("v2: mean 930.0 over 3 episodes, 90% bounds [897.3, 962.7]: not clearly worse, "
                             "keeps running")
    terrible_but_short = runs(2, [10, 12])  # 2 of 3 episodes: not judged yet
    d = decide(best + terrible_but_short, SelectionSettings(), running_version=2, running_sha="sha2")
    assert d.action == "stay" and d.reason.endswith("v2: 2 of 3 episodes so far")


def test_end_of_session_switches_to_the_best_and_a_re_push_pools_with_the_original():
    episodes = runs(1, [950, 955, 960, 945]) + runs(2, [800, 790, 810])
    d = decide(episodes, KEEP_BEST, running_version=2, running_sha="sha2", final=True)
    assert d.action == "switch" and d.target.label == 1
    assert d.reason_with(3) == ("compared at exploration std 0.2: v1: mean 952.5 over 4 episodes, 90% lower bound "
                                "947.2 (best); v2: mean 800.0 over 3 episodes, 90% bounds [789.1, 810.9]: ended on "
                                "v1 instead of v2 (re-pushed as v3)")
    # v3 is v1's file re-pushed: its episodes pool with v1's, and it is the best and running.
    episodes += runs(3, [951, 953], sha="sha1")
    d = decide(episodes, KEEP_BEST, running_version=3, running_sha="sha1", final=True)
    assert d.action == "stay" and d.best.versions == (1, 3) and d.best.n == 6
    assert d.reason.endswith("ended on v1, which was running")
    off = decide(runs(1, [950, 955, 960]) + runs(2, [800, 790, 810]), SelectionSettings(),  # keep-best off
                 running_version=2, running_sha="sha2", final=True)
    assert off.action == "stay" and off.target.label == 2 and "keep-best is off: ended on the running v2" in off.reason


def test_the_gate_counts_the_running_weights_episodes_under_the_current_std():
    s = SelectionSettings()
    episodes = runs(1, [950, 955, 960]) + runs(2, [10, 12]) + runs(3, [951], sha="sha1")  # v3 = v1's weights
    assert evaluated(episodes, 1, s, "sha1") and not evaluated(episodes, 2, s, "sha2")
    assert evaluated(episodes, 3, s, "sha1")  # a re-push of a judged version is judged at once
    assert not evaluated(episodes, None, s) and evaluated(episodes + runs(2, [11]), 2, s, "sha2")
    # without weights on record, the version number counts
    unknown = [EpisodeResult(4, 1.0, 0.2), EpisodeResult(4, 2.0, 0.2), EpisodeResult(4, 3.0, 0.2)]
    assert evaluated(unknown, 4, s) and not evaluated(unknown, 5, s)
    assert not evaluated(runs(1, [1, 2, 3], std=0.0) + runs(2, [1], std=0.2), 1, s, "sha1")  # under another std


def test_settings_are_validated_with_one_line():
    for bad in ({"min_episodes": 1}, {"min_episodes": 2.5}, {"confidence": 1.0}, {"confidence": 0.5},
                {"confidence": float("nan")}):
        with pytest.raises(UserError) as info:
            SelectionSettings(**bad)
        assert "\n" not in str(info.value)


def test_table_lines_for_the_command_output():
    episodes = runs(0, [5], std=0.0) + runs(1, [950, 955, 960, 945]) + runs(2, [800]) + runs(3, [951], sha="sha1")
    d = decide(episodes, SelectionSettings(), running_version=3, running_sha="sha1")
    # v1 and v3 (one file): [950, 955, 960, 945, 951], mean 952.2, sd sqrt(126.8 / 4) = 5.630,
    # half width t(0.90, 4) = 1.5332 times 5.630 / sqrt(5) = 3.860
    assert format_table(d.table, 0.9) == [
        "  v0: no episodes at the compared std, 1 under another std  [not eligible]",
        "  v1 (also v3): 5 episodes, mean 952.2, 90% bounds [948.3, 956.1]  [best, running]",
        "  v2: 1 episode, mean 800.0  [not eligible]",
    ]
