"""The learning-curve PNG in the run folder."""

from __future__ import annotations

from pathlib import Path

from rlcontrol.training.atomic import atomic_path
from rlcontrol.training.logger import read_eval_csv, read_jsonl


def plot_learning_curve(run_dir: str | Path, title: str = "") -> Path:
    """Training episode returns (light) and evaluation mean +- std (bold) vs env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train = [(r["env_steps"], r["charts/episodic_return"]) for r in read_jsonl(run_dir / "metrics.jsonl")
             if "charts/episodic_return" in r]
    evals = read_eval_csv(run_dir / "eval.csv")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, lw=1, label="training episodes")
    if evals:
        xs, means, stds = zip(*evals)
        ax.plot(xs, means, "o-", color="tab:orange", lw=2, label="evaluation (deterministic)")
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color="tab:orange", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    out = run_dir / "curve.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
