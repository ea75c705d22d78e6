"""The keep-best rule of live fine-tuning (sim2real.version_selection), on hand-computed bounds.

One-sided Student-t quantiles used below (from a printed t table): t(0.90, 2) = 1.8856,
t(0.90, 3) = 1.6377, t(0.90, 4) = 1.5332, t(0.90, 5) = 1.4759, t(0.90, 6) = 1.4398,
t(0.95, 2) = 2.9200. The rule's bounds use the sd pooled over the compared versions, with
df = sum(n_i - 1).
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
    pooled_spread,
    t_quantile,
)

T90_2, T90_3, T90_4, T90_5, T90_6, T95_2 = 1.8856, 1.6377, 1.5332, 1.4759, 1.4398, 2.9200
KEEP_BEST = SelectionSettings(keep_best=True)


def runs(version, returns, std=0.2, sha=None):
    return [EpisodeResult(version, float(r), std, sha or f"sha{version}", f"/tmp/policy-v{version:04d}.onnx")
            for r in returns]


def test_t_quantiles_match_the_table():
    assert t_quantile(0.9, 2) == pytest.approx(T90_2, abs=1e-4)
    assert t_quantile(0.9, 3) == pytest.approx(T90_3, abs=1e-4)
    for df, t in ((4, T90_4), (5, T90_5), (6, T90_6)):
        assert t_quantile(0.9, df) == pytest.approx(t, abs=1e-4)
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


def test_pooled_spread_sums_squares_within_versions_over_their_degrees_of_freedom():
    # [500, 510, 490]: squares 200, df 2; [900, 1000, 800]: 20000, df 2; [7]: nothing
    assert pooled_spread([[500, 510, 490], [900, 1000, 800], [7]]) == pytest.approx((math.sqrt(20200 / 4), 4))
    assert pooled_spread([[1.0], []]) == (0.0, 0)
    # bounds with a pooled spread: half width t(0.9, 4) * sd / sqrt(n), for any n (even 1)
    _, own_sd, lower, upper = mean_bounds([950.0], 0.9, spread=(10.0, 4))
    assert own_sd == 0.0 and lower == pytest.approx(950 - T90_4 * 10, abs=1e-3)
    assert upper == pytest.approx(950 + T90_4 * 10, abs=1e-3)
    assert mean_bounds([950.0, 960.0], 0.9, spread=(0.0, 0))[2:] == (-math.inf, math.inf)


def test_best_is_the_highest_pooled_lower_bound_not_the_luckiest_episode():
    episodes = (runs(0, [500, 510, 490]) + runs(1, [1000])  # one lucky episode: not eligible
                + runs(2, [900, 1000, 800])  # mean 900
                + runs(3, [850, 860, 840]))  # mean 850
    # pooled over v0, v2, v3: squares 200 + 20000 + 200, df 6: sd sqrt(3400) = 58.31;
    # half width for 3 episodes 1.4398 * 58.31 / sqrt(3) = 48.47
    d = decide(episodes, SelectionSettings(), running_version=3, running_sha="sha3")
    assert d.best.label == 2 and d.action == "stay"
    rows = {row["version"]: row for row in d.table}
    assert rows[1]["episodes"] == 1 and not rows[1]["eligible"] and not rows[1]["best"]
    assert rows[2]["lower"] == pytest.approx(900 - T90_6 * math.sqrt(3400) / math.sqrt(3), abs=0.01)
    assert rows[3]["upper"] == pytest.approx(898.469, abs=0.01) and rows[3]["running"]
    assert rows[2]["pooled_sd"] == pytest.approx(58.31, abs=0.01) and rows[2]["sd"] == pytest.approx(100.0)
    assert d.reason == ("compared at exploration std 0.2: v2: mean 900.0 over 3 episodes, 90% lower bound 851.5 "
                        "(best); v3: mean 850.0 over 3 episodes, 90% bounds [801.5, 898.5]: not clearly worse, "
                        "keeps running")


def test_three_episodes_close_together_do_not_beat_a_clearly_higher_mean():
    """Measured in a 75 s session (docs/sim2real.md): with each version's own sd, v9's 3 episodes,
    close together by chance, gave it the highest lower bound; without noise v9 scores 742, v2 952."""
    v2, v9 = [860, 934, 675], [767, 718, 740]
    # each version's own sd: v2 mean 823, sd 133.4, lower 823 - 1.8856 * 133.4 / sqrt(3) = 677.8;
    # v9 mean 741.7, sd 24.5, lower 714.9: v9 would win
    assert mean_bounds(v2, 0.9)[2] == pytest.approx(677.77, abs=0.01)
    assert mean_bounds(v9, 0.9)[2] == pytest.approx(714.95, abs=0.01)
    # pooled: squares 35594 + 1204.67, df 4: sd 95.915, half 1.5332 * 95.915 / sqrt(3) = 84.90
    d = decide(runs(2, v2) + runs(9, v9), SelectionSettings(), running_version=9, running_sha="sha9")
    assert d.best.label == 2 and d.best.lower == pytest.approx(823 - 84.90, abs=0.01)


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
    # pooled: squares 125 + 200, df 5: sd sqrt(65) = 8.062
    # v1: mean 952.5, lower 952.5 - 1.4759 * 8.062 / 2 = 946.55
    # v2: mean 800, upper 800 + 1.4759 * 8.062 / sqrt(3) = 806.87 < 946.55
    assert d.action == "rollback" and d.target.label == 1 and d.target.path == "/tmp/policy-v0001.onnx"
    assert d.best.lower == pytest.approx(952.5 - T90_5 * math.sqrt(65) / 2, abs=1e-3)
    assert d.reason == ("compared at exploration std 0.2: v1: mean 952.5 over 4 episodes, 90% lower bound 946.6 "
                        "(best); v2: upper bound 806.9 < 946.6: rolled back to v1")
    assert d.reason_with(3).endswith("rolled back to v1 (re-pushed as v3)")
    off = decide(episodes, SelectionSettings(keep_best=True, rollback=False), running_version=2, running_sha="sha2")
    assert off.action == "stay" and off.reason.endswith("clearly worse, but rollback is off")
    # Rollback is part of keep-best mode, which is off by default (until the repeatability measurements).
    default = decide(episodes, SelectionSettings(), running_version=2, running_sha="sha2")
    assert not SelectionSettings().keep_best and SelectionSettings().rollback and not SelectionSettings().rolls_back
    assert default.action == "stay" and default.reason.endswith("clearly worse, but keep-best is off")


def test_no_rollback_while_the_intervals_overlap_or_the_running_version_is_not_evaluated():
    best = runs(1, [950, 955, 960, 945])
    overlapping = runs(2, [900, 960, 930])
    # pooled: squares 125 + 1800, df 5: sd sqrt(385) = 19.62; v1 lower 952.5 - 1.4759 * 19.62 / 2 = 938.0;
    # v2 upper 930 + 1.4759 * 19.62 / sqrt(3) = 946.7 > 938.0
    d = decide(best + overlapping, SelectionSettings(), running_version=2, running_sha="sha2")
    assert d.action == "stay" and d.best.label == 1
    assert d.reason.endswith("v2: mean 930.0 over 3 episodes, 90% bounds [913.3, 946.7]: not clearly worse, "
                             "keeps running")
    terrible_but_short = runs(2, [10, 12])  # 2 of 3 episodes: not judged yet
    d = decide(best + terrible_but_short, SelectionSettings(), running_version=2, running_sha="sha2")
    assert d.action == "stay" and d.reason.endswith("v2: 2 of 3 episodes so far")


def test_end_of_session_switches_to_the_best_and_a_re_push_pools_with_the_original():
    episodes = runs(1, [950, 955, 960, 945]) + runs(2, [800, 790, 810])
    d = decide(episodes, KEEP_BEST, running_version=2, running_sha="sha2", final=True)
    assert d.action == "switch" and d.target.label == 1
    assert d.reason_with(3) == ("compared at exploration std 0.2: v1: mean 952.5 over 4 episodes, 90% lower bound "
                                "946.6 (best); v2: mean 800.0 over 3 episodes, 90% bounds [793.1, 806.9]: ended on "
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
    # v1 and v3 (one file): [950, 955, 960, 945, 951], mean 952.2, sd sqrt(126.8 / 4) = 5.630 (the only
    # version with a spread, so also the pooled sd), half width t(0.90, 4) = 1.5332 times 5.630 / sqrt(5) = 3.860
    assert format_table(d.table, 0.9) == [
        "  v0: no episodes at the compared std, 1 under another std  [not eligible]",
        "  v1 (also v3): 5 episodes, mean 952.2, 90% bounds [948.3, 956.1]  [best, running]",
        "  v2: 1 episode, mean 800.0  [not eligible]",
    ]
