"""Repeatability of live fine-tuning: the sim2real demonstration's fine-tuning step, N times.

    .venv/bin/python -m benchmarks.sim2real_repeats --out runs/sim2real --seeds 0 1 2 3 4 \\
        --finetune-s 240 --rtf 4 [--finetune-args '--keep-best'] [--name sim2real_repeats]
    # the locomotion stand-in (benchmarks/sim2real_tasks.py): its out, duration and speed by default
    .venv/bin/python -m benchmarks.sim2real_repeats --task walker --seeds 1 2 \\
        --finetune-args '--updates-per-transition 2' --name sim2real_repeats_walker

The same sim policy (benchmarks/sim2real_finetune.py trains it into OUT/sim, or reuses it), the
same weak-motor, heavy stand-in, and one `rlcontrol finetune` session per learner seed, each into
its own OUT/<tag>-s<seed> folder. Every version a session exported is evaluated deterministically
on the stand-in's 10 evaluation seeds, so each session gives:

* final: the version the session ended on (what the robot is left running) and its share of the gap;
* best: the best version the session exported, by the same evaluation;
* regret: best minus final, in shares of the gap (the issue's bound: at most 0.05).

Sessions already in OUT are read back (it resumes after a kill; rerunning adds nothing). The
results go to benchmarks/results/NAME.json after every session; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import provenance
from benchmarks import sim2real_finetune as demo
from benchmarks.sim2real_tasks import CARTPOLE, TASKS, TaskProfile

SHARE_TARGET, REGRET_BOUND = 0.9, 0.05


def session_row(out: Path, tag: str, seed: int, tuned: dict, v0: list[float], in_sim: list[float],
                task: TaskProfile = CARTPOLE) -> dict:
    """One session's final, best and regret, from its deterministic per-version evaluation."""
    period = task.control_period_s
    finetune_dir = out / f"{tag}-s{seed}"
    curve, by_version, _ = demo.evaluate_versions(out, finetune_dir, 1, v0, in_sim, period, task)
    final = tuned.get("final") or {}
    # What the policy node runs at the end, by its file: a re-push of an earlier version (keep-best's
    # rollback or end of session) runs under a new number but from that version's file.
    running = Path(tuned.get("policy_status", {}).get("path", ""))
    match = demo.VERSION_FILE.match(running.name)
    final_version = int(match.group(1)) if match else None
    if final_version not in by_version:
        raise SystemExit(f"{finetune_dir}: the session ended on {running.name or 'no policy'}, which has no evaluation")
    point = {p["version"]: p for p in curve}
    # The best version the robot ran: an export that was never pushed (superseded while a push was in
    # flight, or made after a plateau stopped the pushes) was never "seen during the session".
    ran = pushed_versions(finetune_dir)
    best = max((p for p in curve if p["version"] == 0 or p["version"] in ran),
               key=lambda p: (p["gap_closed"], -p["version"]))
    final_share = point[final_version]["gap_closed"]
    return {"seed": seed, "final_version": final_version, "final_mean": point[final_version]["mean"],
            "final_gap_closed": final_share, "best_version": best["version"], "best_mean": best["mean"],
            "best_gap_closed": best["gap_closed"], "regret": best["gap_closed"] - final_share,
            "last_version": max(by_version), "last_gap_closed": point[max(by_version)]["gap_closed"],
            "versions": len(by_version) - 1, "reason": final.get("reason"), "stopped_by": tuned.get("stopped_by"),
            "final_robot_s": point[final_version].get("robot_s"),
            "robot_s_to_gap_closed": {str(share): (demo.first_crossing(curve, share) or {}).get("robot_s")
                                      for share in demo.SHARES},
            "learner": (tuned.get("learner_status") or {}).get("learner"), "control_loop": tuned.get("control_loop"),
            "wall_s": tuned.get("wall_s"), "curve": [{k: p[k] for k in ("version", "robot_s", "mean", "gap_closed")}
                                                     for p in curve]}


def pushed_versions(finetune_dir: Path) -> set[int]:
    """Versions sent to the policy node (finetune.jsonl's push, rollback and final re-push rows)."""
    from sim2real.finetune import METRICS_FILE, read_jsonl

    return {row["version"] for row in read_jsonl(finetune_dir / METRICS_FILE)
            if row.get("event") in ("push", "rollback", "final") and isinstance(row.get("version"), int)}


def summarize(rows: list[dict]) -> dict:
    final = [r["final_gap_closed"] for r in rows]
    regret = [r["regret"] for r in rows]
    return {"sessions": len(rows), "final_gap_closed": {"min": min(final), "median": float(np.median(final)),
                                                        "max": max(final), "mean": float(np.mean(final))},
            "sessions_at_target": sum(f >= SHARE_TARGET for f in final),
            "regret": {"max": max(regret), "mean": float(np.mean(regret))},
            "sessions_within_regret_bound": sum(r <= REGRET_BOUND for r in regret)}


def table(rows: list[dict]) -> str:
    lines = ["| learner seed | ended on | its return | gap closed | best version (gap closed) | best - final | "
             "last version (gap closed) |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | v{r['final_version']} | {r['final_mean']:.1f} | {r['final_gap_closed']:.0%} | "
                     f"v{r['best_version']} ({r['best_gap_closed']:.0%}) | {r['regret']:.0%} | "
                     f"v{r['last_version']} ({r['last_gap_closed']:.0%}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default=CARTPOLE.name, help="the task profile (default cartpole)")
    parser.add_argument("--out", default=None,
                        help="the demonstration's folder (its sim/ run is reused; default: the task's default "
                             "agent's, runs/sim2real for cartpole)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="learner seeds, one session each")
    parser.add_argument("--finetune-s", type=float, default=None, help="default: the task's (240 for cartpole)")
    parser.add_argument("--rtf", type=float, default=None, help="default: the task's (4 for cartpole)")
    parser.add_argument("--exploration-std", type=float, default=0.2)
    parser.add_argument("--sim-steps", type=int, default=None, help="default: the task's (120k for cartpole)")
    parser.add_argument("--finetune-args", default="", help="more `rlcontrol finetune` flags, e.g. '--keep-best'")
    parser.add_argument("--tag", default="repeat", help="session folders are OUT/<tag>-s<seed>")
    parser.add_argument("--name", default="sim2real_repeats", help="benchmarks/results/NAME.json")
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    args.out = args.out or task.out(task.default_agent)
    args.finetune_s = task.finetune_s if args.finetune_s is None else args.finetune_s
    args.rtf = task.real_time_factor if args.rtf is None else args.rtf
    args.sim_steps = task.sim_steps if args.sim_steps is None else args.sim_steps
    out = (demo.ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # An existing OUT/sim is reused whatever its agent (runs/sim2real-sac holds cartpole's SAC sim policy).
    sim_run = demo.train(demo.ROOT / task.sim_configs[task.default_agent], out / "sim", "--steps", args.sim_steps)
    sim = demo.run_policy(sim_run)
    in_sim, v0 = demo.returns(sim, None, task), demo.returns(sim, task.stand_in, task)
    extra = ["--exploration-std", str(args.exploration_std), *args.finetune_args.split()]
    rows, res = [], demo.ROOT / "benchmarks" / "results" / f"{args.name}.json"
    for seed in args.seeds:
        t0 = time.time()
        tuned = demo.finetune(out, sim_run, args.finetune_s, args.rtf, [*extra, "--seed", str(seed)],
                              name=f"{args.tag}-s{seed}", task=task)
        rows.append(session_row(out, args.tag, seed, tuned, v0, in_sim, task))
        r = rows[-1]
        print(f"sim2real_repeats: seed {seed}: ended on v{r['final_version']} ({r['final_gap_closed']:.0%} of the gap), "
              f"best v{r['best_version']} ({r['best_gap_closed']:.0%}); {time.time() - t0:.0f} s", flush=True)
        summary = {"date": time.strftime("%Y-%m-%d"), "commit": provenance.git_commit(), "finetune_s": args.finetune_s,
                   "real_time_factor": args.rtf, "exploration_std": args.exploration_std,
                   "finetune_args": args.finetune_args, "task": task.name, "env": task.env_id,
                   "stand_in": task.stand_in, "eval_seeds": demo.EVAL_SEEDS,
                   "sim_policy": {"in_sim": float(np.mean(in_sim)), "on_stand_in": float(np.mean(v0))},
                   "targets": {"gap_closed": SHARE_TARGET, "regret": REGRET_BOUND},
                   "summary": summarize(rows), "sessions": rows}
        res.parent.mkdir(parents=True, exist_ok=True)
        res.write_text(json.dumps(summary, indent=2))
    print(table(rows))
    print(json.dumps({"results": str(res), **summarize(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
