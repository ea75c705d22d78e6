"""What trained obstacle-course policies actually do: distance, obstacles passed, falls.

The return of `rlc:obstacle-course` mixes speed and survival; this rolls out each run's
deterministic policy on held-out courses (the evaluation stream 3 that `rlcontrol eval` uses,
never seen in training) and reports, per run and per config, the mean distance covered, the
obstacles passed, and how many episodes ended in a fall.

    .venv/bin/python -m benchmarks.obstacle_eval RUN_DIR [RUN_DIR ...] [--episodes 20] [--json]

Run folders are grouped by config name (the folder name up to "-seed").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from rlcontrol.training.evaluate import episode_seed
from rlcontrol.training.evaluate_run import load_policy_agent


def rollout(env, agent, seed: int) -> dict:
    obs = env.reset(seed=seed)
    start_x = None
    total = 0.0
    while True:
        result = env.step(agent.act(obs, explore=False))
        total += result.reward
        info = result.info
        if start_x is None:
            start_x = info["x_position"]
        obs = result.obs
        if result.terminated or result.truncated:
            return {"return": total, "distance": info["x_position"] - start_x,
                    "obstacles_passed": info["obstacles_passed"], "fell": bool(info["fell"])}


def evaluate_run_dir(run_dir: Path, episodes: int) -> dict:
    config, env, agent = load_policy_agent(run_dir)
    if config.env.id != "rlc:obstacle-course":
        raise SystemExit(f"{run_dir}: not an obstacle-course run ({config.env.id})")
    episodes_out = [rollout(env, agent, episode_seed(config.seed, 3, i)) for i in range(episodes)]
    env.close()
    return {
        "run_dir": str(run_dir), "config": run_dir.name.split("-seed")[0], "seed": config.seed,
        "mean_return": float(np.mean([e["return"] for e in episodes_out])),
        "mean_distance_m": float(np.mean([e["distance"] for e in episodes_out])),
        "mean_obstacles_passed": float(np.mean([e["obstacles_passed"] for e in episodes_out])),
        "fall_fraction": float(np.mean([e["fell"] for e in episodes_out])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [evaluate_run_dir(Path(d), args.episodes) for d in args.run_dirs]
    if not args.json:
        print("| config | seeds | return | distance (m) | obstacles passed | episodes ending in a fall |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name in dict.fromkeys(r["config"] for r in runs):
            group = [r for r in runs if r["config"] == name]

            def cell(key, fmt="{:.1f}", group=group):
                values = [r[key] for r in group]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return (fmt + " ± " + fmt).format(statistics.mean(values), spread)

            print(f"| {name} | {len(group)} | {cell('mean_return')} | {cell('mean_distance_m')} | "
                  f"{cell('mean_obstacles_passed')} | {cell('fall_fraction', '{:.2f}')} |")
    print(json.dumps({"episodes": args.episodes, "runs": runs}))


if __name__ == "__main__":
    main()
