"""Keeping the best policy version during live fine-tuning: which pushed version is best, when the
running one is clearly worse (roll back), and when a version has been tried long enough.

Pure: numbers in, a decision and its reason out (scipy for the Student-t quantile, nothing else),
so the rule is unit-tested on hand-computed bounds (tests/sim2real/test_version_selection.py).
ros_nodes.keep_best applies it on the robot (in the fine-tuning node); ``rlcontrol finetune
--restore-best`` applies it to the logs of a session whose learner was killed.

Keep-best mode (``SelectionSettings.keep_best``) is off by default for now: which default is right
is for the repeatability measurements of issue 17 to decide. Rollback is part of that mode. Without
it the rule still names the best version (the end-of-session summary reports it as information),
but nothing is held, rolled back or switched.

The rule
--------
* **What is compared.** The robot's episode returns, per policy. A policy is identified by its
  weights (the ONNX file's sha256): a version re-pushed under a new number (a rollback) pools its
  episodes with the original's. Only whole episodes count: the same version ran from the episode's
  start to its end, and no e-stop intervened (the safety layer's steps are not the policy's).
* **Exploration noise.** Every return is tagged with the policy node's ``exploration_std`` in force.
  Noise lowers returns, by an amount that depends on the policy, so returns under different stds are
  not comparable. Versions are compared only on the episodes run under the *current* std (the std of
  the most recent episode); episodes under another std are counted in the table but not used.
  Dedicated noise-free evaluation episodes were the alternative; they were not chosen because the
  node's std is fixed while it is active (changing it means a reconfigure on the robot), they cost
  robot time that yields no exploratory data for the learner, and the policy that is finally deployed
  is judged fairly against its peers under the same noise (the ranking is what matters, not the
  absolute level).
* **Eligible**: at least ``min_episodes`` such episodes (default 3; at least 2, for a spread).
* **Best**: the eligible policy with the highest one-sided lower confidence bound of its mean return,
  ``mean - t(confidence, df) * sd / sqrt(n)`` (Student t, default confidence 0.9), where ``sd`` is
  **pooled** over every compared policy (squared deviations from each policy's own mean, over
  ``df = sum(n_i - 1)``, as in a one-way analysis of variance). A version with one lucky episode is
  never eligible, and a version with fewer episodes gets a wider bound. Pooled, not each version's own
  sd: with 3 episodes a sample sd is itself very uncertain (its 10th percentile is a third of the
  true sd), and a version whose 3 episodes happened to lie close together won on its narrow bound
  over clearly better ones (measured: docs/sim2real.md, Keeping the best version). Ties (equal lower
  bound and equal mean): the running policy, then the newer version.
* **Rollback** (keep-best mode): when the running policy is eligible and its upper bound
  ``mean + t(confidence, df) * sd / sqrt(n)`` is below the best's lower bound, it is clearly worse:
  go back to the best.
* **Judged** (:func:`evaluated`): the running policy (its weights, so a rollback's re-push of a judged
  version counts as judged at once) has ``min_episodes`` whole episodes under the current std; in
  keep-best mode the learner's newer exports wait until then, so every new version is evaluated
  before it is replaced.
* **End of session** (keep-best mode): the best policy, or the running one when no policy is
  eligible yet. Without keep-best: the running one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rlcontrol.errors import UserError

DEFAULT_MIN_EPISODES = 3
DEFAULT_CONFIDENCE = 0.9
STD_DECIMALS = 6  # stds equal to this many decimals are the same setting


@dataclass(frozen=True)
class EpisodeResult:
    """One robot episode: its return and the policy that drove all of it.

    ``exploration_std`` is the policy node's noise std during the episode (None: unknown);
    ``sha256`` identifies the weights (None: unknown, the version number stands in)."""

    version: int
    ret: float
    exploration_std: float | None = None
    sha256: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class SelectionSettings:
    min_episodes: int = DEFAULT_MIN_EPISODES
    confidence: float = DEFAULT_CONFIDENCE
    keep_best: bool = False  # hold new versions until the running one is evaluated; end on the best
    rollback: bool = True  # with keep_best: go back to the best when the running version is clearly worse

    def __post_init__(self) -> None:
        if isinstance(self.min_episodes, bool) or not isinstance(self.min_episodes, int) or self.min_episodes < 2:
            raise UserError(f"min_episodes must be a whole number >= 2 (a bound needs a spread), got {self.min_episodes!r}")
        if not isinstance(self.confidence, (int, float)) or not 0.5 < float(self.confidence) < 1.0:
            raise UserError(f"confidence must be a number between 0.5 and 1 (exclusive), got {self.confidence!r}")

    @property
    def rolls_back(self) -> bool:
        """Rollback is part of keep-best mode: without it the session runs as before keep-best existed."""
        return self.keep_best and self.rollback

    @property
    def percent(self) -> str:
        return f"{100 * self.confidence:g}%"


def t_quantile(confidence: float, df: int) -> float:
    """The one-sided Student-t quantile: P(T <= q) = confidence for T with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(confidence, df))


def mean_bounds(returns: Sequence[float], confidence: float,
                spread: tuple[float, int] | None = None) -> tuple[float, float, float, float]:
    """(mean, sample sd, lower, upper): the one-sided ``confidence`` bounds of the mean return.

    ``spread`` (sd, df): the sd to bound with and its degrees of freedom, pooled over the versions
    compared (:func:`pooled_spread`); without it, the returns' own sample sd with n - 1. With no
    degrees of freedom (fewer than 2 returns anywhere) the bounds are -inf and +inf."""
    n = len(returns)
    if n == 0:
        return math.nan, 0.0, -math.inf, math.inf
    mean = math.fsum(returns) / n
    sd = math.sqrt(math.fsum((r - mean) ** 2 for r in returns) / (n - 1)) if n >= 2 else 0.0
    bound_sd, df = spread if spread is not None else (sd, n - 1)
    if df < 1:
        return mean, sd, -math.inf, math.inf
    half = t_quantile(confidence, df) * bound_sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def pooled_spread(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """(sd, df) pooled over groups of returns, as in a one-way analysis of variance: the squared
    deviations from each group's own mean, summed, over sum(n_i - 1). Groups of one add nothing."""
    squares, df = 0.0, 0
    for returns in groups:
        if len(returns) >= 2:
            mean = math.fsum(returns) / len(returns)
            squares += math.fsum((r - mean) ** 2 for r in returns)
            df += len(returns) - 1
    return (math.sqrt(squares / df), df) if df else (0.0, 0)


def std_key(std: float | None) -> float | None:
    return None if std is None else round(float(std), STD_DECIMALS)


@dataclass(frozen=True)
class PolicyStats:
    """The episodes of one policy (one set of weights), under the compared exploration std."""

    label: int  # the first version that ran these weights
    versions: tuple[int, ...]
    sha256: str | None
    path: str | None
    returns: tuple[float, ...]
    other_std_episodes: int
    min_episodes: int
    confidence: float
    spread: tuple[float, int] | None = None  # (sd, df) pooled over the compared versions: the bounds' sd
    mean: float = field(init=False)
    sd: float = field(init=False)
    lower: float = field(init=False)
    upper: float = field(init=False)

    def __post_init__(self) -> None:
        mean, sd, lower, upper = mean_bounds(self.returns, self.confidence, self.spread)
        for name, value in (("mean", mean), ("sd", sd), ("lower", lower), ("upper", upper)):
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return len(self.returns)

    @property
    def eligible(self) -> bool:
        return self.n >= self.min_episodes

    @property
    def name(self) -> str:
        return f"v{self.label}"

    def row(self, *, best: bool = False, running: bool = False) -> dict:
        def num(x):
            return None if x is None or not math.isfinite(x) else round(x, 3)

        return {"version": self.label, "versions": list(self.versions), "sha256": self.sha256, "path": self.path,
                "episodes": self.n, "mean": num(self.mean), "sd": num(self.sd),
                "pooled_sd": num(self.spread[0]) if self.spread and self.spread[1] else None, "lower": num(self.lower),
                "upper": num(self.upper), "eligible": self.eligible, "best": best, "running": running,
                "other_std_episodes": self.other_std_episodes}


def _identity(e: EpisodeResult) -> str:
    return f"sha256:{e.sha256}" if e.sha256 else f"version:{e.version}"


def compared_std(episodes: Sequence[EpisodeResult]) -> float | None:
    """The exploration std the versions are compared under: the most recent episode's."""
    return std_key(episodes[-1].exploration_std) if episodes else None


def policy_stats(episodes: Sequence[EpisodeResult], settings: SelectionSettings) -> dict[str, PolicyStats]:
    """identity -> PolicyStats (returns under the compared std), in order of first appearance."""
    std = compared_std(episodes)
    groups: dict[str, dict] = {}
    for e in episodes:
        g = groups.setdefault(_identity(e), {"versions": [], "sha256": e.sha256, "path": e.path, "returns": [],
                                             "other": 0})
        if e.version not in g["versions"]:
            g["versions"].append(e.version)
        g["path"] = g["path"] or e.path
        if std_key(e.exploration_std) == std:
            g["returns"].append(float(e.ret))
        else:
            g["other"] += 1
    spread = pooled_spread(g["returns"] for g in groups.values())
    return {key: PolicyStats(label=min(g["versions"]), versions=tuple(sorted(g["versions"])), sha256=g["sha256"],
                             path=g["path"], returns=tuple(g["returns"]), other_std_episodes=g["other"],
                             min_episodes=settings.min_episodes, confidence=settings.confidence, spread=spread)
            for key, g in groups.items()}


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _describe(stats: PolicyStats, settings: SelectionSettings) -> str:
    if not stats.eligible:
        return f"{stats.name}: {stats.n} of {settings.min_episodes} episodes so far"
    return (f"{stats.name}: mean {_fmt(stats.mean)} over {stats.n} episodes, {settings.percent} bounds "
            f"[{_fmt(stats.lower)}, {_fmt(stats.upper)}]")


def _std_phrase(std: float | None) -> str:
    return "exploration std unknown" if std is None else f"exploration std {std:g}"


@dataclass(frozen=True)
class Decision:
    """What the rule says now. ``action``: "rollback" (mid-session: go back to ``best``), "switch"
    (end of session: end on ``best``, which is not running), or "stay"."""

    action: str
    best: PolicyStats | None
    running: PolicyStats | None
    reason: str
    table: list[dict]
    exploration_std: float | None
    best_text: str = ""  # "compared at ...: vN: mean ... (best)", the first part of the reason

    @property
    def target(self) -> PolicyStats | None:
        """The policy the robot should run: the best for rollback and switch, else the running one."""
        return self.best if self.action in ("rollback", "switch") else self.running

    def reason_with(self, pushed_as: int | None) -> str:
        """The reason, naming the version number a re-push got."""
        if pushed_as is None or self.best is None:
            return self.reason
        return f"{self.reason} (re-pushed as v{pushed_as})"


def _running_group(stats: dict[str, PolicyStats], running_version: int | None, running_sha: str | None):
    if running_sha and f"sha256:{running_sha}" in stats:
        return f"sha256:{running_sha}"
    for key, s in stats.items():
        if running_version is not None and running_version in s.versions:
            return key
    return None


def decide(episodes: Iterable[EpisodeResult], settings: SelectionSettings, *, running_version: int | None = None,
           running_sha: str | None = None, final: bool = False) -> Decision:
    """The rule. Mid-session (``final`` False): "rollback" when the running policy is eligible and
    its upper bound is below the best's lower bound (and ``settings.rolls_back``), else "stay". At the
    end of a session (``final``): "switch" to the best when it is not the running policy (and
    ``settings.keep_best``), else "stay"."""
    episodes = list(episodes)
    std = compared_std(episodes)
    stats = policy_stats(episodes, settings)
    run_key = _running_group(stats, running_version, running_sha)
    running = stats.get(run_key) if run_key else None
    eligible = [(key, s) for key, s in stats.items() if s.eligible]
    best_key, best = None, None
    if eligible:
        best_key, best = max(eligible, key=lambda ks: (ks[1].lower, ks[1].mean, ks[0] == run_key, ks[1].label))
    table = [s.row(best=key == best_key, running=key == run_key) for key, s in stats.items()]
    run_name = f"v{running_version}" if running_version is not None else "the running version"
    if running is not None and running_version is not None and running.label != running_version:
        run_name = f"v{running_version} (= {running.name})"
    the_running = f"the running {run_name}" if running_version is not None else run_name
    compared = f"compared at {_std_phrase(std)}"

    if best is None:
        counts = ", ".join(f"{s.name}: {s.n}" for s in stats.values()) or "no episodes"
        reason = (f"no version has {settings.min_episodes} episodes at {_std_phrase(std)} yet ({counts}): "
                  f"{'ended on' if final else 'keeps'} {the_running}")
        return Decision("stay", None, running, reason, table, std)

    best_text = (f"{best.name}: mean {_fmt(best.mean)} over {best.n} episodes, {settings.percent} lower bound "
                 f"{_fmt(best.lower)} (best)")
    head = f"{compared}: {best_text}"
    if best_key == run_key:
        tail = f"ended on {best.name}, which was running" if final else f"{best.name} is running"
        return Decision("stay", best, running, f"{compared}: {best_text}; {tail}", table, std, head)

    if not final:
        if running is None:
            return Decision("stay", best, running, f"{compared}: {best_text}; {run_name}: no whole episodes yet",
                            table, std, head)
        if not running.eligible:
            return Decision("stay", best, running, f"{compared}: {best_text}; {_describe(running, settings)}",
                            table, std, head)
        if running.upper < best.lower:
            worse = f"{compared}: {best_text}; {running.name}: upper bound {_fmt(running.upper)} < {_fmt(best.lower)}"
            if settings.rolls_back:
                return Decision("rollback", best, running, f"{worse}: rolled back to {best.name}", table, std, head)
            off = "keep-best" if not settings.keep_best else "rollback"
            return Decision("stay", best, running, f"{worse}, clearly worse, but {off} is off", table, std, head)
        return Decision("stay", best, running,
                        f"{compared}: {best_text}; {_describe(running, settings)}: not clearly worse, keeps running",
                        table, std, head)

    running_text = _describe(running, settings) if running is not None else f"{run_name}: no whole episodes"
    if not settings.keep_best:
        return Decision("stay", best, running,
                        f"{compared}: {best_text}; keep-best is off: ended on {the_running} "
                        f"({running_text})", table, std, head)
    return Decision("switch", best, running,
                    f"{compared}: {best_text}; {running_text}: ended on {best.name} instead of {run_name}", table, std, head)


def evaluated(episodes: Iterable[EpisodeResult], version: int | None, settings: SelectionSettings,
              sha256: str | None = None) -> bool:
    """Whether the running policy (weights ``sha256``, or version ``version`` when the weights are
    unknown) has ``min_episodes`` whole episodes under the current exploration std: the gate before
    the next version replaces it. A re-push of a judged version is judged at once."""
    episodes = list(episodes)
    if version is None and sha256 is None:
        return False
    std = compared_std(episodes)
    n = sum(1 for e in episodes if std_key(e.exploration_std) == std
            and (e.sha256 == sha256 if sha256 and e.sha256 else e.version == version))
    return n >= settings.min_episodes


def format_table(table: Sequence[dict], confidence: float) -> list[str]:
    """The per-policy table as text lines (for the command's output)."""
    pct = f"{100 * confidence:g}%"
    lines = []
    for row in table:
        also = [v for v in row["versions"] if v != row["version"]]
        name = f"v{row['version']}" + (f" (also {', '.join(f'v{v}' for v in also)})" if also else "")
        if row["episodes"] == 0:
            stats = "no episodes at the compared std"
        elif row["lower"] is None or row["episodes"] < 2:
            stats = f"{row['episodes']} episode{'s' if row['episodes'] != 1 else ''}, mean {row['mean']:.1f}"
        else:
            stats = (f"{row['episodes']} episodes, mean {row['mean']:.1f}, {pct} bounds "
                     f"[{row['lower']:.1f}, {row['upper']:.1f}]")
        marks = [m for m, on in (("best", row["best"]), ("running", row["running"]),
                                 ("not eligible", not row["eligible"])) if on]
        other = f", {row['other_std_episodes']} under another std" if row["other_std_episodes"] else ""
        lines.append(f"  {name}: {stats}{other}" + (f"  [{', '.join(marks)}]" if marks else ""))
    return lines
