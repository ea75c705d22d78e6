"""Sample efficiency: rlcontrol's agent vs Stable-Baselines3 SAC at equal env steps, several seeds.

    .venv/bin/python -m benchmarks.sample_efficiency [--tasks cartpole_swingup reacher_easy cheetah_run walker_walk] \
        [--arms rlcontrol sb3] [--seeds 0 1 2] [--steps 100000] [--eval-every 10000] [--jobs 2]
    .venv/bin/python -m benchmarks.sample_efficiency --report-only          # table + JSON from the run dirs
    .venv/bin/python -m benchmarks.sample_efficiency --tasks cartpole_swingup --seeds 0 --steps 4000 \
        --eval-every 2000 --config-prefix td3 --name smoke --out /tmp/se-smoke   # a quick smoke run

Needs the bench extras: scripts/setup.sh dev,bench

Both arms train on the task of configs/<prefix>_<task>.yaml (prefix `sac` by default) for the same
number of env steps (simulator control steps = agent steps x action repeat), one run per seed:

* `rlcontrol`: the real `rlcontrol train` command on that config (10 evaluation episodes,
  train.eval_every = --eval-every, no video).
* `sb3`: Stable-Baselines3 SAC in its own process, on rlcontrol's own environment (`envs.make`,
  wrapped by `RlcGymEnv`: same observations, action repeat, normalized actions in [-1, 1],
  episode length and truncation, and the same per-episode seeds as rlcontrol's training loop).
  From the config it takes env.id, env.action_repeat, agent.actor_hidden / critic_hidden
  (net_arch pi / qf), batch_size, gamma, tau, replay.capacity (capped at the run's agent steps,
  which changes nothing but the memory allocated and written to checkpoints) and
  train.learning_starts (converted to agent steps: divided by the action repeat). Everything
  else is SB3's default: learning rate 3e-4 (one for actor, critics and temperature), train_freq 1, gradient_steps 1 (whatever train.updates_per_step says),
  ent_coef "auto" (initial 1.0, target entropy -action_dim), ReLU MLPs, no observation
  normalization.

Evaluation is the same for both: every --eval-every env steps and at the end (rlcontrol
evaluates at the first episode end at or after each multiple, SB3 at the first agent step at
or after it: the same point for dm_control's 1000-step episodes and multiples of 1000), 10 deterministic episodes on a separate env instance (seed + 1)
with rlcontrol's evaluation episode seeds. "Training seconds" is the wall-clock of acting and
learning only, evaluations and checkpoints excluded (rlcontrol logs it as eval/train_seconds).

Reported per (arm, task, seed): the final evaluation return, the curve (env steps, training
seconds, mean return), env steps/s (env steps / training seconds) and the training seconds and
env steps at which the evaluation mean first reached 0.9 x the State-SAC return at 100k env
steps of CURL (Laskin et al. 2020, Table 1). Prints one markdown table per task and writes
benchmarks/results/<name>.json after every finished run.

Resumable: repeat the command after an interruption. Finished runs are read back from their run
dirs (summary.json, metrics.jsonl / the SB3 checkpoint's history) without retraining; rlcontrol
runs continue from their last checkpoint (`--resume`), SB3 runs from theirs (model, replay
buffer and evaluation history, every train.checkpoint_every env steps; an episode that a
checkpoint cuts, which dm_control's 1000-step episodes never are at multiples of 1000, restarts).
An SB3 run continues its episodes and replay exactly, not its random number streams. Runs are
queued arm by arm for each (task, seed), so with --jobs 2 the two arms mostly run side by side
and see the same machine load. Timings are only comparable on an otherwise idle machine: with
more runnable threads than cores, torch's thread pools slow down many times over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from benchmarks import provenance
from benchmarks.sb3_peer import EVAL_EPISODES, BenchError, has_state_observations, train_sb3

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]
PROG = "sample_efficiency"

TASKS = ("cartpole_swingup", "reacher_easy", "cheetah_run", "walker_walk")
ARMS = ("rlcontrol", "sb3")
# State SAC at 100k env steps, CURL (Laskin et al. 2020) Table 1; the threshold is 90% of it.
REFERENCE_100K = {"cartpole_swingup": 835.0, "reacher_easy": 746.0, "cheetah_run": 616.0, "walker_walk": 891.0,
                  "finger_spin": 811.0, "ball_in_cup_catch": 746.0}
# Tasks no config names (issue 16: the recipe must be general): the cheetah-run config with only
# env.id and PlaNet/CURL's action repeat changed. Not in the default --tasks.
HELD_OUT = {"finger_spin": ("dmc:finger-spin", 2), "ball_in_cup_catch": ("dmc:ball_in_cup-catch", 4)}
RECIPE_TASK = "cheetah_run"
THRESHOLD_FRACTION = 0.9


# --------------------------------------------------------------------------- curves


def threshold_for(task: str) -> float:
    return THRESHOLD_FRACTION * REFERENCE_100K[task]


def first_crossing(curve: list, threshold: float) -> tuple[float | None, int | None]:
    """(training seconds, env steps) of the first evaluation whose mean return is >= threshold.

    `curve` is [(env_steps, train_seconds or None, mean_return), ...] in any order. Returns
    (None, None) if no evaluation reached it, and (None, steps) if the one that did has no
    training time recorded (an rlcontrol run started before eval/train_seconds existed).
    """
    for steps, seconds, ret in sorted(curve, key=lambda p: p[0]):
        if ret >= threshold:
            return seconds, steps
    return None, None


def read_rlcontrol_curve(run_dir: Path) -> list[tuple[int, float | None, float]]:
    """The evaluation curve of an rlcontrol run dir, from metrics.jsonl (last record per env step)."""
    by_step: dict[int, tuple[int, float | None, float]] = {}
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run
        if "eval/mean_return" in rec:
            steps = int(rec["env_steps"])
            by_step[steps] = (steps, rec.get("eval/train_seconds"), float(rec["eval/mean_return"]))
    return [by_step[s] for s in sorted(by_step)]


def run_curve(arm: str, run_dir: Path, summary: dict) -> list:
    """A run's evaluation curve: rlcontrol's from metrics.jsonl, SB3's from its summary."""
    return read_rlcontrol_curve(run_dir) if arm == "rlcontrol" else [tuple(p) for p in summary["curve"]]


def expected_env_steps(steps: int, action_repeat: int) -> int:
    """Env steps a run of --steps ends at: whole agent steps (rlcontrol stops at the first >= steps)."""
    return math.ceil(steps / action_repeat) * action_repeat


# --------------------------------------------------------------------------- one run per (arm, task, seed)


def config_path(prefix: str, task: str) -> Path:
    return ROOT / "configs" / f"{prefix}_{RECIPE_TASK if task in HELD_OUT else task}.yaml"


def task_overrides(task: str) -> list[str]:
    """The --set items that turn the recipe's config into a held-out task's (none for a named task)."""
    if task not in HELD_OUT:
        return []
    env_id, repeat = HELD_OUT[task]
    return [f"env.id={env_id}", f"env.action_repeat={repeat}"]


def run_dir_for(out_root: Path, arm: str, prefix: str, task: str, seed: int) -> Path:
    return out_root / f"{arm}-{prefix}_{task}-seed{seed}"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def finished_result(arm: str, task: str, seed: int, run_dir: Path, steps: int, repeat: int,
                    eval_every: int) -> dict | None:
    """The result of a finished run read back from its run dir, or None if it has not finished."""
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    want = expected_env_steps(steps, repeat)
    if summary.get("env_steps", 0) < want:
        return None  # shorter than asked: continue it
    if summary["env_steps"] > want:
        raise BenchError(f"{run_dir} holds a run of {summary['env_steps']} env steps, more than --steps {steps}; "
                         "use another --out")
    if arm == "rlcontrol":
        import yaml

        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
        run_eval_every = (saved.get("train") or {}).get("eval_every")
    else:
        run_eval_every = (summary.get("identity") or {}).get("eval_every")
    curve = run_curve(arm, run_dir, summary)
    if run_eval_every is not None and run_eval_every != eval_every:
        raise BenchError(f"{run_dir} was evaluated every {run_eval_every} env steps, not --eval-every {eval_every}; "
                         "use another --out")
    return make_result(arm, task, seed, run_dir, summary, curve)


def make_result(arm: str, task: str, seed: int, run_dir: Path, summary: dict, curve: list) -> dict:
    threshold = threshold_for(task)
    seconds, steps_at = first_crossing(curve, threshold)
    final_seconds = curve[-1][1] if curve else None
    env_steps = summary["env_steps"]
    sps = round(env_steps / final_seconds, 2) if final_seconds else summary.get("env_steps_per_s")
    return {
        "arm": arm, "task": task, "seed": seed, "algo": summary.get("algo"), "env": summary.get("env"),
        "run_dir": str(run_dir), "env_steps": env_steps,
        "final_return": summary["eval_return"] if summary.get("eval_return") is not None else curve[-1][2],
        "train_seconds": final_seconds,
        "env_steps_per_s": sps,  # env steps / training seconds over the whole run (all sessions)
        "threshold": threshold, "threshold_train_seconds": seconds, "threshold_env_steps": steps_at,
        "curve": [list(p) for p in curve],
    }


def read_back(arm: str, task: str, seed: int, args, repeat: int) -> dict | None:
    """finished_result for one requested run, marked as read back (`reused`), or None."""
    run_dir = run_dir_for(Path(args.out), arm, args.config_prefix, task, seed)
    result = finished_result(arm, task, seed, run_dir, args.steps, repeat, args.eval_every)
    if result is not None:
        result["reused"] = True
    return result


def run_one(arm: str, task: str, seed: int, args, threads: int, repeat: int) -> dict:
    done = read_back(arm, task, seed, args, repeat)
    if done is not None:
        return done
    run_dir = run_dir_for(Path(args.out), arm, args.config_prefix, task, seed)
    cfg = config_path(args.config_prefix, task)
    overrides = [word for item in [*task_overrides(task), *args.set] for word in ("--set", item)]
    if arm == "rlcontrol":
        cmd = [sys.executable, "-m", "rlcontrol.cli", "train", str(cfg), "--seed", str(seed), "--steps", str(args.steps),
               "--run-dir", str(run_dir), "--json", "--no-progress",
               "--set", f"train.eval_episodes={EVAL_EPISODES}", "--set", f"train.threads={threads}",
               "--set", "train.video_frames=0", "--set", f"train.eval_every={args.eval_every}", *overrides]
        if (run_dir / "checkpoints").is_dir():
            cmd.append("--resume")
    else:
        cmd = [sys.executable, "-m", "benchmarks.sample_efficiency", "--_sb3-worker", "--config", str(cfg),
               "--run-dir", str(run_dir), "--seed", str(seed), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--threads", str(threads), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} {task} seed {seed} failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
    summary = json.loads(_last_line(proc.stdout))
    result = make_result(arm, task, seed, run_dir, summary, run_curve(arm, run_dir, summary))
    result["reused"] = False
    return result


def requested_runs(args) -> list[tuple[str, str, int]]:
    """(arm, task, seed) of every requested run, the two arms of one (task, seed) next to each other."""
    return [(arm, task, seed) for task in args.tasks for seed in args.seeds for arm in args.arms]


def collect_existing(args, tasks_repeat: dict) -> list[dict]:
    """--report-only: every finished run among the requested ones."""
    results = []
    for arm, task, seed in requested_runs(args):
        res = read_back(arm, task, seed, args, tasks_repeat[task])
        if res is not None:
            results.append(res)
    return results


# --------------------------------------------------------------------------- report


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.pstdev(xs)


def summarize(results: list[dict], tasks: list[str], arms: list[str], seeds: list[int], steps: int) -> dict:
    """Per task and arm: final returns, time to threshold, env steps/s; rlcontrol/SB3 ratios."""
    out = {}
    for task in tasks:
        per_arm = {}
        for arm in arms:
            rows = sorted((r for r in results if r["task"] == task and r["arm"] == arm), key=lambda r: r["seed"])
            if not rows:
                continue
            rets = [r["final_return"] for r in rows]
            mean, std = _mean_std(rets)
            times = [r["threshold_train_seconds"] for r in rows]
            reached = [r for r in rows if r["threshold_env_steps"] is not None]
            timed = [t for t in times if t is not None]
            all_timed = len(timed) == len(rows) == len(seeds)
            sps = [r["env_steps_per_s"] for r in rows if r["env_steps_per_s"]]
            per_arm[arm] = {
                "seeds": [r["seed"] for r in rows], "final_returns": rets, "mean_return": mean, "std_return": std,
                "threshold_train_seconds": times, "threshold_env_steps": [r["threshold_env_steps"] for r in rows],
                "seeds_reached": len(reached),
                "mean_threshold_minutes": statistics.mean(timed) / 60 if all_timed else None,
                "env_steps_per_s": statistics.mean(sps) if sps else None,
            }
        entry = {"threshold": threshold_for(task), "reference_100k": REFERENCE_100K[task], "arms": per_arm}
        a, b = per_arm.get("rlcontrol"), per_arm.get("sb3")
        if a and b:
            entry["return_ratio"] = a["mean_return"] / b["mean_return"] if b["mean_return"] else None
            if a["mean_threshold_minutes"] is not None and b["mean_threshold_minutes"] is not None:
                entry["threshold_time_ratio"] = a["mean_threshold_minutes"] / b["mean_threshold_minutes"]
            else:
                entry["threshold_time_ratio"] = None
            entry["threshold_note"] = _threshold_note(per_arm, len(seeds), steps)
            sa, sb = a["env_steps_per_s"], b["env_steps_per_s"]
            entry["env_steps_per_s_ratio"] = sa / sb if sa and sb else None
        out[task] = entry
    return out


def _threshold_note(per_arm: dict, n_seeds: int, steps: int) -> str | None:
    """Why there is no time-to-threshold ratio (None when there is one)."""
    parts = []
    for arm, label in (("rlcontrol", "rlcontrol"), ("sb3", "SB3")):
        s = per_arm[arm]
        if s["seeds_reached"] == 0:
            parts.append(f"{label} never reached it within {steps:,} steps")
        elif len(s["seeds"]) < n_seeds:
            parts.append(f"{label} has {len(s['seeds'])}/{n_seeds} seeds finished")
        elif s["seeds_reached"] < n_seeds:
            parts.append(f"{label} reached it in {s['seeds_reached']}/{n_seeds} seeds")
        elif s["mean_threshold_minutes"] is None:
            parts.append(f"{label}'s run has no training time recorded (run before eval/train_seconds)")
    return "; ".join(parts) or None


def _fmt_minutes(seconds: float | None, steps_at: int | None) -> str:
    if steps_at is None:
        return "never"
    if seconds is None:
        return f"? ({steps_at // 1000}k)"
    return f"{seconds / 60:.1f} ({steps_at / 1000:g}k)"


def format_tables(summary: dict, steps: int) -> str:
    blocks = []
    for task, entry in summary.items():
        if not entry["arms"]:
            blocks.append(f"### {task}: no finished runs\n")
            continue
        lines = [f"### {task} ({steps:,} env steps; threshold {entry['threshold']:.1f} = "
                 f"{THRESHOLD_FRACTION:g} x State SAC {entry['reference_100k']:g})", "",
                 "| arm | seeds | final return (mean ± std) | per seed | minutes to threshold per seed (env steps) "
                 "| mean minutes | env steps/s |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for arm, s in entry["arms"].items():
            mins = ", ".join(_fmt_minutes(t, k) for t, k in zip(s["threshold_train_seconds"], s["threshold_env_steps"]))
            mean_min = f"{s['mean_threshold_minutes']:.1f}" if s["mean_threshold_minutes"] is not None else "—"
            sps = f"{s['env_steps_per_s']:.0f}" if s["env_steps_per_s"] else "?"
            lines.append(f"| {arm} | {len(s['seeds'])} | {s['mean_return']:.1f} ± {s['std_return']:.1f} | "
                         f"{', '.join(f'{x:.1f}' for x in s['final_returns'])} | {mins} | {mean_min} | {sps} |")
        if "return_ratio" in entry:
            rr = f"{entry['return_ratio']:.2f}x" if entry["return_ratio"] is not None else "—"
            tr = (f"{entry['threshold_time_ratio']:.2f}x" if entry["threshold_time_ratio"] is not None
                  else entry["threshold_note"] or "—")
            sr = f"{entry['env_steps_per_s_ratio']:.2f}x" if entry["env_steps_per_s_ratio"] else "—"
            lines.append(f"| rlcontrol / SB3 | | {rr} | | | {tr} | {sr} |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def machine_info() -> dict:
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "processor": platform.processor(), "nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def _python_name() -> str:
    """sys.executable, relative to the repository when it is the project's .venv."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return str(exe)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rlcontrol", "stable-baselines3", "torch", "dm-control", "mujoco"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _int_at_least(text: str, minimum: int, kind: str) -> int:
    value = int(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text}")
    return value


def _positive(text: str) -> int:  # (argparse names the type function in its messages: keep these names)
    return _int_at_least(text, 1, "positive")


def _non_negative(text: str) -> int:
    return _int_at_least(text, 0, "non-negative")


def _error_exit(exc: Exception) -> int:
    """One line on stderr; exit code 2."""
    print(f"{PROG}: error: {exc}", file=sys.stderr)
    return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=f"python -m benchmarks.{PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS),
                        help=f"tasks, from {', '.join(TASKS)}, or held out (no config of their own): "
                             f"{', '.join(HELD_OUT)}")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help="rlcontrol and/or sb3")
    parser.add_argument("--seeds", nargs="+", type=_non_negative, default=[0, 1, 2])
    parser.add_argument("--steps", type=_positive, default=100_000, help="env steps per run")
    parser.add_argument("--eval-every", type=_non_negative, default=10_000, help="env steps between evaluations")
    parser.add_argument("--jobs", type=_positive, default=2, help="runs at a time (one torch thread each when > 1)")
    parser.add_argument("--name", default=None, help="results file: benchmarks/results/NAME.json "
                                                     "(default sample_efficiency_<steps>)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-sample-efficiency"), help="run dirs go here")
    parser.add_argument("--config-prefix", default="sac", help="configs/<prefix>_<task>.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both arms (e.g. train.learning_starts=1000); repeatable")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table and JSON from the run dirs")
    args = parser.parse_args(argv)
    for kind, given, known in (("task", args.tasks, (*TASKS, *HELD_OUT)), ("arm", args.arms, ARMS)):
        bad = [x for x in given if x not in known]
        if bad:
            parser.error(f"unknown {kind} {bad[0]!r} (choose from {', '.join(known)})")
    args.tasks = list(dict.fromkeys(args.tasks))
    args.arms = list(dict.fromkeys(args.arms))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.name = args.name or f"sample_efficiency_{args.steps}"
    return args


def check_configs(args) -> dict[str, int]:
    """Every task's config loads (with --set) and suits the SB3 arm; returns task -> action repeat."""
    from rlcontrol.config import load_config
    from rlcontrol.errors import UserError

    repeats = {}
    for task in args.tasks:
        path = config_path(args.config_prefix, task)
        if not path.is_file():
            raise BenchError(f"config file not found: {path.relative_to(ROOT)} (--config-prefix {args.config_prefix})")
        try:
            config = load_config(path, [*task_overrides(task), *args.set])
        except UserError as exc:
            raise BenchError(str(exc)) from None
        if "sb3" in args.arms and not has_state_observations(config):
            raise BenchError(f"{path.relative_to(ROOT)}: the SB3 arm needs state observations")
        repeats[task] = config.env.action_repeat
    return repeats


def write_results(path: Path, args, argv: list[str], threads: int, results: list[dict], failures: list[str]) -> dict:
    ordered = sorted(results, key=lambda r: (args.tasks.index(r["task"]), args.arms.index(r["arm"]), r["seed"]))
    summary = summarize(ordered, args.tasks, args.arms, args.seeds, args.steps)
    payload = {
        "name": args.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": provenance.git_commit(),
        "machine": machine_info(),
        "versions": _versions(),
        "threads": threads, "jobs": args.jobs,
        "command": shlex.join([_python_name(), "-m", f"benchmarks.{PROG}", *argv]),
        "steps": args.steps, "eval_every": args.eval_every, "eval_episodes": EVAL_EPISODES,
        "config_prefix": args.config_prefix, "overrides": args.set, "tasks": args.tasks, "arms": args.arms,
        "seeds": args.seeds, "threshold_fraction": THRESHOLD_FRACTION, "reference_100k": REFERENCE_100K,
        "summary": summary, "runs": ordered, "failures": failures,
    }
    from rlcontrol.training.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_sb3-worker"]:
        return sb3_worker(argv[1:])
    args = parse_args(argv)
    try:
        repeats = check_configs(args)
    except BenchError as exc:
        return _error_exit(exc)
    threads = 1 if args.jobs > 1 else 2
    results_path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    results_path.parent.mkdir(exist_ok=True)
    results: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()
    if args.report_only:
        try:
            results = collect_existing(args, repeats)
        except BenchError as exc:
            return _error_exit(exc)
    else:
        # The two arms of one (task, seed) next to each other: with --jobs 2 they share the machine.
        jobs = requested_runs(args)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_one, arm, task, seed, args, threads, repeats[task]): (arm, task, seed)
                       for arm, task, seed in jobs}
            for future in as_completed(futures):
                arm, task, seed = futures[future]
                with lock:
                    try:
                        res = future.result()
                        results.append(res)
                        print(f"{PROG}: {arm} {task} seed {seed}: return {res['final_return']:.1f} at "
                              f"{res['env_steps']:,} env steps" + (" (read back)" if res["reused"] else ""),
                              file=sys.stderr, flush=True)
                    except (RuntimeError, BenchError) as exc:
                        failures.append(str(exc))
                        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
                    write_results(results_path, args, argv, threads, results, failures)
    summary = write_results(results_path, args, argv, threads, results, failures)
    print(format_tables(summary, args.steps))
    print(f"results: {results_path}", file=sys.stderr)
    if failures:
        print(f"{PROG}: {len(failures)} run(s) failed; repeat the command to retry them", file=sys.stderr)
        return 1
    return 0


def sb3_worker(argv: list[str]) -> int:
    """One SB3 run in this process (what run_one starts; benchmarks/sb3_peer.py's train_sb3):
    the summary JSON as stdout's last line."""
    parser = _Parser(prog=f"{PROG} --_sb3-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--seed", type=_non_negative, required=True)
    parser.add_argument("--steps", type=_positive, required=True)
    parser.add_argument("--eval-every", type=_non_negative, required=True)
    parser.add_argument("--threads", type=_non_negative, default=1)
    parser.add_argument("--eval-episodes", type=_positive, default=EVAL_EPISODES)
    parser.add_argument("--learning-starts", type=_non_negative, default=None)
    parser.add_argument("--stop-after", type=_positive, default=None)
    parser.add_argument("--set", action="append", default=[])
    a = parser.parse_args(argv)
    from rlcontrol.errors import UserError

    try:
        summary = train_sb3(a.config, a.run_dir, a.seed, a.steps, a.eval_every, a.threads, a.eval_episodes,
                            a.set, a.learning_starts, a.stop_after)
    except (BenchError, UserError) as exc:
        return _error_exit(exc)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
