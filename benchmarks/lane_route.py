"""Learning to drive from pixels: DDPG + PER from raw pixels vs from a pretrained VAE latent.

    .venv/bin/python -m benchmarks.lane_route --seeds 0 1 2 --steps 15000 --jobs 2

The question of "Learning to Drive in a Day" (Kendall et al. 2018): how many episodes (and env
steps) until the car completes the route, when the convolutional encoder is trained from raw
pixels with the actor-critic, against when it is a VAE pretrained on frames of random episodes.
Each (config, seed) is one real `rlcontrol train configs/<config>.yaml` run with the same budget
(configs/ddpg_lane_following_pixels.yaml and configs/ddpg_lane_following_vae.yaml differ only in
the encoder). From each run's metrics.jsonl (every training episode's return, exploration
noise included) and eval.csv (deterministic evaluations) it reports:

  * the first training episode that completes the route (return == route length, 250 m), as
    an episode count and env steps (the paper's measure: its car also drove with noise);
  * the first evaluation whose every episode completes the route;
  * final evaluation return; and a return-curve PNG (training episodes, mean over seeds).

Writes benchmarks/results/<name>.json and docs/figures/<name>.png. Interrupted runs resume
from their last checkpoint when the command is repeated. The VAE file must exist first:
    .venv/bin/rlcontrol pretrain-vae --env rlc:lane-following --frames 20000 --epochs 20 \\
        --out runs/vae_lane.safetensors --pixel-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("ddpg_lane_following_pixels", "ddpg_lane_following_vae")
ROUTE = 250.0
COMPLETE = ROUTE - 1e-6  # a completed route returns exactly route_length (envs/lane.py)


def train(config: str, seed: int, steps: int, eval_every: int, out_root: Path) -> Path:
    run_dir = out_root / f"{config}-seed{seed}"
    cmd = [sys.executable, "-m", "rlcontrol.cli", "train", str(ROOT / "configs" / f"{config}.yaml"),
           "--seed", str(seed), "--steps", str(steps), "--run-dir", str(run_dir), "--json", "--no-progress",
           "--set", f"train.eval_every={eval_every}", "--set", "train.eval_episodes=5",
           "--set", "train.threads=1", "--set", "train.video_frames=300"]
    if (run_dir / "checkpoints").is_dir():
        cmd.append("--resume")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} seed {seed} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return run_dir


def episodes(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps at each training episode's end, its return), in order."""
    steps, returns = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "charts/episodic_return" in row:
            steps.append(row["env_steps"])
            returns.append(row["charts/episodic_return"])
    return np.asarray(steps), np.asarray(returns)


def evaluations(run_dir: Path) -> list[dict]:
    with open(run_dir / "eval.csv") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def summarize(config: str, seed: int, run_dir: Path) -> dict:
    steps, returns = episodes(run_dir)
    done = np.flatnonzero(returns >= COMPLETE)
    evals = evaluations(run_dir)
    # A mean of 250 means every episode completed (no episode returns more than the route).
    first_eval = next((e for e in evals if e["mean_return"] >= COMPLETE), None)
    return {
        "config": config, "seed": seed, "run_dir": str(run_dir), "env_steps": int(steps[-1]) if len(steps) else 0,
        "episodes": int(len(returns)),
        "first_completed_episode": int(done[0]) + 1 if len(done) else None,
        "first_completed_env_steps": int(steps[done[0]]) if len(done) else None,
        "completed_training_episodes": int(len(done)),
        "first_all_complete_eval_env_steps": int(first_eval["env_steps"]) if first_eval else None,
        "final_eval_return": evals[-1]["mean_return"] if evals else None,
        "best_training_return": float(returns.max()) if len(returns) else None,
    }


def plot(runs: dict[str, list[Path]], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    grid = np.linspace(0, steps, 101)
    for config, dirs in runs.items():
        curves = []
        for run_dir in dirs:
            s, r = episodes(run_dir)
            ax.plot(s, r, alpha=0.15, lw=0.6, color="C0" if "pixels" in config else "C1")
            # Mean of the last 10 episodes, held between episode ends.
            c = np.concatenate([[0.0], np.cumsum(r)])
            i = np.arange(1, len(r) + 1)
            smooth = (c[i] - c[np.maximum(i - 10, 0)]) / np.minimum(i, 10)
            curves.append(np.interp(grid, s, smooth))
        label = "raw pixels (conv2d)" if "pixels" in config else "VAE latent (frozen)"
        ax.plot(grid, np.mean(curves, axis=0), lw=2, color="C0" if "pixels" in config else "C1",
                label=f"{label}, mean of {len(dirs)} seeds")
    ax.axhline(ROUTE, color="k", ls="--", lw=0.8, label="route completed (250 m)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return (m along the lane)")
    ax.set_title("DDPG + PER on rlc:lane-following, 64x64 camera")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--eval-every", type=int, default=2_500)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--name", default="lane_route")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-lane"))
    args = parser.parse_args()
    out_root = Path(args.out)
    jobs = [(c, s) for c in args.configs for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        dirs = list(pool.map(lambda cs: train(cs[0], cs[1], args.steps, args.eval_every, out_root), jobs))
    results = [summarize(c, s, d) for (c, s), d in zip(jobs, dirs)]
    runs = {c: [d for (cc, _), d in zip(jobs, dirs) if cc == c] for c in args.configs}
    png = ROOT / "docs" / "figures" / f"{args.name}.png"
    plot(runs, png, args.steps)
    print("| config | seed | first route completion: episode | env steps | completed episodes | "
          "first all-complete eval at | final eval return |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['seed']} | {r['first_completed_episode']} | {r['first_completed_env_steps']} | "
              f"{r['completed_training_episodes']}/{r['episodes']} | {r['first_all_complete_eval_env_steps']} | "
              f"{r['final_eval_return']:.1f} |")
    for c in args.configs:
        finals = [r["final_eval_return"] for r in results if r["config"] == c]
        print(f"{c}: final eval return {statistics.mean(finals):.1f} +- "
              f"{statistics.pstdev(finals):.1f} over {len(finals)} seeds")
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps({"steps": args.steps, "eval_every": args.eval_every, "runs": results,
                               "figure": str(png.relative_to(ROOT))}, indent=1))
    print(json.dumps({"results": str(out), "figure": str(png)}))


if __name__ == "__main__":
    main()
