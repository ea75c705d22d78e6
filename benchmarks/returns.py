"""Mean evaluation return after a fixed budget of env steps, over several seeds.

    .venv/bin/python -m benchmarks.returns --tasks cartpole_swingup reacher_easy --seeds 0 1 2 --steps 100000 [--jobs 2]
    .venv/bin/python -m benchmarks.returns --configs td3_cheetah_run d4pg_cheetah_run --steps 30000 --name d4pg_vs_td3

Each (config, seed) is one real `rlcontrol train configs/<config>.yaml` run (separate process,
`--jobs` at a time, one torch thread each), evaluated at the end over 10 deterministic
episodes; `--tasks T` is short for `--configs td3_T`. Equal env steps for every config.
Prints a markdown table and writes benchmarks/results/<name>.json (default returns.json).
Interrupted runs resume from their last checkpoint when the command is repeated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(config: str, seed: int, steps: int, threads: int, compile_: bool, out_root: Path) -> dict:
    run_dir = out_root / f"{config}-seed{seed}"
    cmd = [sys.executable, "-m", "rlcontrol.cli", "train", str(ROOT / "configs" / f"{config}.yaml"),
           "--seed", str(seed), "--steps", str(steps), "--run-dir", str(run_dir), "--json", "--no-progress",
           "--set", "train.eval_episodes=10", "--set", f"train.threads={threads}", "--set", "train.video_frames=0",
           "--set", f"train.compile={'true' if compile_ else 'false'}"]
    resume = (run_dir / "checkpoints").is_dir()
    if resume:
        cmd.append("--resume")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} seed {seed} failed: {proc.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"config": config, "algo": summary["algo"], "task": summary["env"], "seed": seed, "env_steps": summary["env_steps"], "eval_return": summary["eval_return"],
            "env_steps_per_s": summary["env_steps_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="TD3 tasks: short for --configs td3_TASK ...")
    parser.add_argument("--configs", nargs="+", default=None, help="config names in configs/ (without .yaml)")
    parser.add_argument("--name", default="returns", help="results file: benchmarks/results/NAME.json")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the losses (faster, same results up to float rounding)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-returns"))
    args = parser.parse_args()
    out_root = Path(args.out)
    threads = 1 if args.jobs > 1 else 2
    configs = args.configs or [f"td3_{t}" for t in (args.tasks or ["cartpole_swingup", "reacher_easy"])]
    jobs = [(c, s) for c in configs for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda ts: run_one(ts[0], ts[1], args.steps, threads, args.compile, out_root), jobs))
    table = ["| config | algo | task | env steps | seeds | mean eval return | per seed | env steps/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for config in configs:
        rows = [r for r in results if r["config"] == config]
        rets = [r["eval_return"] for r in rows]
        sps = statistics.mean(r["env_steps_per_s"] for r in rows)
        table.append(f"| {config} | {rows[0]['algo']} | {rows[0]['task']} | {args.steps:,} | {len(rows)} | "
                     f"{statistics.mean(rets):.1f} ± {statistics.pstdev(rets):.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in rets)} | {sps:.0f} |")
    print("\n".join(table))
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{args.name}.json").write_text(json.dumps({"steps": args.steps, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
