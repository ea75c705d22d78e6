"""Where the plateau stopping rule (sim2real.plateau) would have ended recorded fine-tuning sessions.

    .venv/bin/python -m benchmarks.plateau_whatif --repeats benchmarks/results/sim2real_repeats_sac.json \\
        --out runs/sim2real-sac --tag avg005 [--window 10 --tolerance 0.05 ...]

Replays each session's robot episodes (OUT/<tag>-s<seed>/episodes.jsonl) through the rule, episode
by episode, and reads the stopping version's deterministic stand-in evaluation from the repeats
results (benchmarks.sim2real_repeats evaluates every exported version): the share of the gap it
closed, and how far below the best version exported up to then. Offline, so it costs no robot time;
a rule chosen here still has to be checked on fresh sessions (the live `--stop-on-plateau` runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sim2real.finetune import read_jsonl
from sim2real.plateau import PlateauRule, RobotEpisode, plateau


def replay(episodes: list[dict], rule: PlateauRule) -> tuple[int, int, str] | None:
    """(episode index, version driving it, reason) of the first episode after which the rule fires."""
    seen: list[RobotEpisode] = []
    for i, row in enumerate(episodes):
        if not isinstance(row.get("policy_version"), int) or not isinstance(row.get("return"), (int, float)):
            continue
        seen.append(RobotEpisode(row["policy_version"], float(row["return"]), row.get("exploration_std"),
                                 bool(row.get("intervened"))))
        reason = plateau(seen, rule)
        if reason:
            return i, row["policy_version"], reason
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", required=True, help="a benchmarks.sim2real_repeats results JSON")
    parser.add_argument("--out", required=True, help="the folder holding the sessions (OUT/<tag>-s<seed>)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--window", type=int, nargs="+", default=[10])
    parser.add_argument("--tolerance", type=float, nargs="+", default=[0.05])
    args = parser.parse_args(argv)
    sessions = json.loads(Path(args.repeats).read_text())["sessions"]
    for window in args.window:
        for tolerance in args.tolerance:
            rule = PlateauRule(window=window, tolerance=tolerance)
            rows = []
            for s in sessions:
                curve = {p["version"]: p for p in s["curve"]}
                episodes = read_jsonl(Path(args.out) / f"{args.tag}-s{s['seed']}" / "episodes.jsonl")
                hit = replay(episodes, rule)
                if hit is None:
                    rows.append(f"seed {s['seed']}: never (ends on v{s['final_version']}, "
                                f"{s['final_gap_closed']:.0%})")
                    continue
                index, version, _ = hit
                share = curve[version]["gap_closed"] if version in curve else float("nan")
                best = max(p["gap_closed"] for v, p in curve.items() if v <= version)
                rows.append(f"seed {s['seed']}: episode {index} on v{version} at {curve.get(version, {}).get('robot_s')} "
                            f"robot s: {share:.0%} of the gap, {best - share:.0%} below the best so far")
            print(f"window {window}, tolerance {tolerance:g}:\n  " + "\n  ".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
