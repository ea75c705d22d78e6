"""Grasp success of learned QT-Opt policies on held-out objects, against baselines on the same attempts.

    .venv/bin/python -m benchmarks.grasp_success RUN_DIR [RUN_DIR ...] [--attempts 200] [--object-set test]
        [--name grasp_success] [--json]

Each run's deterministic policy (CEM argmax of its Q network, from RUN_DIR/policy.pt) makes
`--attempts` seeded grasp attempts in its own task (state or pixels, as trained) with the object
set replaced by `--object-set` (default `test`: shape families and size bands never seen in
training, docs/grasp.md). Three baselines make the very same attempts (same seeds, so the same
objects and start poses): uniform random actions, `RandomDescent` (QT-Opt's randomized scripted
exploration, no object information) and `ScriptedGrasp` (privileged simulator state: the
ceiling of what the task allows). Attempt i is seeded with 10_000_000 + i, a stream that
training (episode seeds from the run seed) and the offline data script (seed * 1_000_003 + i)
do not use.

Prints a markdown table and writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED_BASE = 10_000_000


def attempt(env, act, seed: int) -> bool:
    """One seeded attempt with `act(env, obs) -> normalized action`; True if it lifted an object."""
    obs = env.reset(seed=seed)
    while True:
        result = env.step(act(env, obs))
        obs = result.obs
        if result.terminated or result.truncated:
            return bool(result.reward > 0)


def success(env, act, attempts: int) -> dict:
    outcomes = [attempt(env, act, SEED_BASE + i) for i in range(attempts)]
    rate = float(np.mean(outcomes))
    # Normal-approximation 95% interval of a binomial rate (reported, not used for decisions).
    half = 1.96 * float(np.sqrt(max(rate * (1 - rate), 1e-12) / attempts))
    return {"success_rate": rate, "ci95": [max(0.0, rate - half), min(1.0, rate + half)], "attempts": attempts}


def evaluate_run(run_dir: Path, attempts: int, object_set: str) -> dict:
    from envs.grasp import RandomDescent, ScriptedGrasp, random_policy
    from rlcontrol.training import builders
    from rlcontrol.training.evaluate_run import load_policy_agent

    config, train_env, agent = load_policy_agent(run_dir)
    train_env.close()
    if config.env.id != "rlc:grasp":
        raise SystemExit(f"{run_dir}: not a grasp run ({config.env.id})")
    env_cfg = replace(config.env, kwargs={**config.env.kwargs, "object_set": object_set})
    env = builders.make_env(env_cfg, SEED_BASE)
    rng = np.random.default_rng(0)
    descent, scripted, uniform = RandomDescent(np.random.default_rng(0)), ScriptedGrasp(), random_policy(rng)
    rows = {
        "qtopt": success(env, lambda _env, obs: agent.act(obs, explore=False), attempts),
        "random": success(env, lambda e, _obs: uniform(e), attempts),
        "random_descent": success(env, lambda e, _obs: descent(e), attempts),
        "scripted_privileged": success(env, lambda e, _obs: scripted(e), attempts),
    }
    env.close()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    env_steps = max((m.get("env_steps", 0) for m in metrics), default=0)
    return {"run_dir": str(run_dir), "seed": config.seed, "pixels": config.env.pixels,
            "pixel_size": config.env.pixel_size if config.env.pixels else None,
            "observe_objects": config.env.kwargs.get("observe_objects", True),
            "env_steps": env_steps, "offline_attempts_file": config.replay.offline_replay,
            "offline_pretrain_updates": config.replay.offline_pretrain_updates,
            "object_set": object_set, "results": rows}


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--object-set", default="test", choices=("train", "test"))
    parser.add_argument("--name", default="grasp_success", help="results file: benchmarks/results/NAME.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [evaluate_run(Path(d), args.attempts, args.object_set) for d in args.run_dirs]
    if not args.json:
        print("| run | observation | env steps | QT-Opt | uniform random | RandomDescent | scripted (privileged) |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for run in runs:
            kind = f"pixels {run['pixel_size']}x{run['pixel_size']}" if run["pixels"] else "state"
            cells = " | ".join(f"{run['results'][k]['success_rate']:.3f}"
                               for k in ("qtopt", "random", "random_descent", "scripted_privileged"))
            print(f"| {Path(run['run_dir']).name} | {kind} | {run['env_steps']} | {cells} |")
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps({"attempts": args.attempts, "object_set": args.object_set, "runs": runs}, indent=2))
    print(json.dumps({"results_file": str(out), "runs": len(runs)}))


if __name__ == "__main__":
    main()
