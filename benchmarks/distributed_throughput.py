"""Distributed actors on Ray: collected env steps/s and learner updates/s for K actors.

Measures, on dmc:cheetah-run with the TD3 config (or D4PG's, --algo d4pg), three setups:

    in-process   distributed.num_actors 1: the trainer steps its own env (no Ray)
    ray K=1      one Ray actor worker (--ray-address local)
    ray K=2      two Ray actor workers

each twice: learning (the real loop: chunk -> replay -> updates_per_step x agent steps of
updates -> weight publication) and --no-learn (collection alone: acting with the policy after
learning_starts, storing into replay, but no updates), so actor scaling shows apart from the
learner bottleneck. Every measurement runs in a fresh process; after the collectors are up and
`--warmup` seconds have passed it counts env steps and updates over a `--window` seconds of wall
clock. Learning starts after 1,000 env steps (before that actions are uniform random).

    .venv/bin/python -m benchmarks.distributed_throughput [--algo td3|d4pg] [--warmup 15] [--window 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

SETUPS = {"in-process": {"num_actors": 1}, "ray K=1": {"num_actors": 1, "ray_address": "local"},
          "ray K=2": {"num_actors": 2}}  # the default set; --setups also takes any "ray K=N"


def setup_overrides(setup: str) -> dict:
    """distributed.* settings of a setup name: one of SETUPS, or "ray K=N" for any N >= 1."""
    if setup in SETUPS:
        return SETUPS[setup]
    if setup.startswith("ray K=") and setup[6:].isdigit() and int(setup[6:]) >= 1:
        return {"num_actors": int(setup[6:]), "ray_address": "local"}
    raise SystemExit(f"unknown setup {setup!r}: expected one of {', '.join(SETUPS)} or 'ray K=N'")
LEARNING_STARTS = 1000


def measure(algo: str, setup: str, learn: bool, warmup: float, window: float) -> dict:
    """One measurement in this process: env steps/s and updates/s over the window."""
    from rlcontrol.config import load_config
    from rlcontrol.distributed.collector import make_collector
    from rlcontrol.training.loop import Trainer

    overrides = [f"train.learning_starts={LEARNING_STARTS}", "train.total_env_steps=100000000",
                 "train.threads=2", "train.eval_every=0", "train.video_frames=0", "replay.capacity=300000"]
    overrides += [f"distributed.{k}={v}" for k, v in setup_overrides(setup).items()]
    config = load_config(f"configs/{algo}_cheetah_run.yaml", overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, progress=False)
        try:
            trainer.collector = make_collector(trainer)
            trainer.collector.start()
            metrics: dict = {}
            start = time.perf_counter()
            marks = None
            while True:
                if learn:
                    harvest, metrics = trainer._step(metrics)
                else:
                    harvest = trainer.collector.collect()
                    trainer.state.env_steps += harvest.env_steps
                    trainer.state.agent_steps += harvest.agent_steps
                if harvest.episode_returns:  # (no logs or evaluations here: only acting and learning)
                    trainer.collector.episodes_handled()
                now = time.perf_counter()
                if marks is None and now - start >= warmup and trainer.state.env_steps > LEARNING_STARTS:
                    marks = (now, trainer.state.env_steps, trainer.session_updates)
                if marks is not None and now - marks[0] >= window:
                    break
            seconds = now - marks[0]
            return {"algo": algo, "setup": setup, "learn": learn, "seconds": round(seconds, 2),
                    "env_steps_per_s": round((trainer.state.env_steps - marks[1]) / seconds, 1),
                    "updates_per_s": round((trainer.session_updates - marks[2]) / seconds, 1),
                    "restarts": trainer.collector.stats()["restarts"]}
        finally:
            trainer.logger.close()
            trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("td3", "d4pg"), default="td3")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the window (collectors up first)")
    parser.add_argument("--window", type=float, default=30.0, help="measured wall-clock seconds")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated, from: " + ", ".join(SETUPS) + ", or any 'ray K=N'")
    parser.add_argument("--no-learn", action="store_true", help="only collection alone (default: both)")
    parser.add_argument("--json", action="store_true", help="print only the JSON list")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, in this process
    args = parser.parse_args()
    if args.one:
        setup, learn = args.one.rsplit("|", 1)
        print(json.dumps(measure(args.algo, setup, learn == "learn", args.warmup, args.window)))
        return

    for setup in args.setups.split(","):
        setup_overrides(setup)  # a typo fails here, not after minutes of measuring
    results = []
    modes = ["no-learn"] if args.no_learn else ["learn", "no-learn"]
    for mode in modes:
        for setup in args.setups.split(","):
            cmd = [sys.executable, "-m", "benchmarks.distributed_throughput", "--algo", args.algo, "--warmup",
                   str(args.warmup), "--window", str(args.window), "--one", f"{setup}|{mode}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{setup} ({mode}) failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if not args.json:
                print(f"  {setup:<11} {mode:<8} {results[-1]['env_steps_per_s']:8.1f} env steps/s "
                      f"{results[-1]['updates_per_s']:8.1f} updates/s", file=sys.stderr)
    if not args.json:
        print(f"| setup ({args.algo}, dmc:cheetah-run) | learning: env steps/s | learning: updates/s | "
              "collection alone: env steps/s |")
        print("| --- | ---: | ---: | ---: |")
        for setup in args.setups.split(","):
            row = {r["learn"]: r for r in results if r["setup"] == setup}
            cells = [f"{row[True]['env_steps_per_s']:.0f}" if True in row else "-",
                     f"{row[True]['updates_per_s']:.0f}" if True in row else "-",
                     f"{row[False]['env_steps_per_s']:.0f}" if False in row else "-"]
            print(f"| {setup} | " + " | ".join(cells) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
