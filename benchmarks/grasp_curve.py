"""Grasp success against the number of grasps seen, next to Quillen et al. (2018)'s points.

    .venv/bin/python -m benchmarks.grasp_curve --series "LABEL=RUN_DIR[,RUN_DIR...]" [--series ...]
        [--held-out benchmarks/results/grasp_success_X.json ...] [--out docs/figures/grasp_curve.png]
        [--name grasp_curve]

Each series is one recipe (several seeds): its periodic evaluations (eval.csv: success on
*training* objects, `train.eval_episodes` attempts each) averaged over the seeds, placed at the
number of grasp attempts the learner had seen by then: the offline file's attempts plus the
online attempts (env steps / steps per attempt). Files from benchmarks.grasp_success add each
run's final success on *held-out* objects (200 attempts) as a marker at the run's last point.

Quillen et al. 2018 ("Deep Reinforcement Learning for Vision-Based Robotic Grasping", off-policy
Q-learning with CEM on PyBullet's diverse-object grasping from pixels) report about 50% after 10k
grasps, 70% after 100k and 90% after 1M for their best methods; those points are drawn for scale.
They are another task (a simulated KUKA arm, 900 random objects, a 472x472 camera), not a target
this task's numbers can be compared with one for one.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUILLEN_2018 = [(10_000, 0.50), (100_000, 0.70), (1_000_000, 0.90)]


def run_curve(run_dir: Path) -> list[tuple[int, float]]:
    """[(grasps seen, training-object success)] from a run's eval.csv and config."""
    from benchmarks.grasp_diagnose import offline_data
    from rlcontrol.config import load_config

    config = load_config(run_dir / "config.yaml")
    steps_per_attempt = int(config.env.kwargs.get("max_steps", 20))
    offline = offline_data(config).get("attempts", 0)
    with (run_dir / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [(offline + int(float(r["env_steps"])) // steps_per_attempt, float(r["mean_return"])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", action="append", required=True, help="LABEL=RUN_DIR[,RUN_DIR...]")
    parser.add_argument("--held-out", nargs="*", default=[], help="benchmarks.grasp_success result files")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "grasp_curve.png"))
    parser.add_argument("--name", default=None, help="also write benchmarks/results/NAME.json")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = {}
    for path in args.held_out:
        for run in json.loads(Path(path).read_text())["runs"]:
            held[str(Path(run["run_dir"]).resolve())] = run["results"]["qtopt"]["success_rate"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    out = {"quillen_2018": QUILLEN_2018, "series": {}}
    for spec in args.series:
        label, _, dirs = spec.partition("=")
        runs = [Path(d) for d in dirs.split(",") if d]
        curves = [run_curve(d) for d in runs]
        length = min(len(c) for c in curves)
        x = [curves[0][i][0] for i in range(length)]
        y = [float(np.mean([c[i][1] for c in curves])) for i in range(length)]
        line, = ax.plot(x, y, marker="o", label=f"{label} (training objects, mean of {len(runs)})")
        finals = [held[str(d.resolve())] for d in runs if str(d.resolve()) in held]
        if finals:
            ax.scatter([x[-1]] * len(finals), finals, marker="*", s=90, color=line.get_color(), zorder=3,
                       label=f"{label}: held-out objects, each seed")
        out["series"][label] = {"runs": [str(d) for d in runs], "grasps": x, "train_object_success": y,
                                "held_out_success": finals}
    qx, qy = zip(*QUILLEN_2018)
    ax.plot(qx, qy, "k--", marker="s", label="Quillen et al. 2018 (PyBullet, another task)")
    ax.set_xscale("log")
    ax.set_xlabel("grasp attempts seen (offline + online)")
    ax.set_ylabel("grasp success")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    if args.name:
        (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({"figure": args.out, "series": list(out["series"])}))


if __name__ == "__main__":
    main()
