"""Why a QT-Opt grasping policy succeeds as often as it does: four measurements of one run.

    .venv/bin/python -m benchmarks.grasp_diagnose RUN_DIR [RUN_DIR ...] [--attempts 100] [--object-set test]
        [--grid 9] [--states 200] [--name NAME]

For each run (a finished `rlcontrol train` folder of `algo: qtopt` on rlc:grasp):

1. **Offline data.** The success rate of the attempts in the run's `replay.offline_replay` file
   (an attempt's last transition carries reward 1 and discount 0 when it lifted an object).
2. **Calibration.** The deterministic policy makes `--attempts` seeded attempts (the
   benchmarks.grasp_success stream, on `--object-set`); at every step the Q estimate of the
   action taken (sigmoid of the logit, member 1, the one CEM maximizes, and the min of both)
   is set against the Monte-Carlo return of that very attempt, gamma^(steps left) x success.
   Reported: mean Q vs mean return per step index, a reliability table over Q bins, and the
   Brier score of the final step's Q as a predictor of success.
3. **CEM vs exhaustive search.** For `--states` states visited in those attempts, Q_1 at CEM's
   action against the best of a full grid over the action box (`--grid` points per continuous
   dimension, the grip at -1 and +1): how much Q CEM leaves on the table, and how often.
4. **Learning curve.** The run's periodic evaluations (eval.csv, training objects) against the
   number of grasps the learner had seen (offline attempts + online attempts).

Prints a summary and writes benchmarks/results/NAME.json when --name is given.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED_BASE = 10_000_000  # benchmarks.grasp_success's attempt stream: the same attempts


def offline_data(config) -> dict:
    """Success rate of the attempts in the run's offline replay file."""
    from safetensors.numpy import load_file

    path = config.replay.offline_replay
    if not path or not Path(path).is_file():
        return {"file": path, "available": False}
    arrays = load_file(path)
    reward, discount = arrays["reward"], arrays["discount"]
    size = int(arrays["size"]) if "size" in arrays else len(reward)
    reward, discount = reward[:size], discount[:size]
    n_step = config.replay.n_step
    last = (discount == 0) & (reward >= 1.0 - 1e-6)  # the final transition of a successful attempt
    attempts = int((discount == 0).sum()) // n_step  # each attempt's last n transitions end in it
    return {"file": path, "available": True, "transitions": size, "attempts": attempts,
            "successes": int(last.sum()), "success_rate": float(last.sum()) / max(attempts, 1)}


def q_estimates(agent, obs_batch, actions):
    """(member-1 Q, min-over-members Q) of actions at raw flat observations, as probabilities."""
    import torch

    from rlcontrol.agents.qtopt.losses import q_value

    with torch.no_grad():
        logits = agent.q(agent.normalizer(obs_batch), actions)  # (E, B)
        q = q_value(logits, agent.cfg.loss)
    return q[0].numpy(), q.amin(dim=0).numpy()


def rollouts(agent, env, attempts: int, gamma: float):
    """Per step of `attempts` seeded attempts: flat obs, action, steps left, and the attempt's success."""
    import torch

    from rlcontrol.agents.learner import flatten_obs

    rows = []
    for i in range(attempts):
        obs = env.reset(seed=SEED_BASE + i)
        steps = []
        while True:
            # Replay space: the observation itself, or cached latents in place of the image.
            flat = flatten_obs(agent.replay_observation(obs), 0)
            action = agent.act(obs, explore=False)
            result = env.step(action)
            steps.append((flat, torch.as_tensor(action)))
            obs = result.obs
            if result.terminated or result.truncated:
                success = float(result.reward > 0)
                break
        for t, (flat, action) in enumerate(steps):
            left = len(steps) - 1 - t
            rows.append({"attempt": i, "t": t, "left": left, "obs": flat, "action": action, "success": success,
                         "mc_return": success * gamma ** left})
    return rows


def calibration(agent, rows) -> dict:
    import torch

    obs = torch.stack([r["obs"] for r in rows])
    actions = torch.stack([r["action"] for r in rows]).float()
    q1, qmin = q_estimates(agent, obs, actions)
    g = np.array([r["mc_return"] for r in rows])
    t = np.array([r["t"] for r in rows])
    last = np.array([r["left"] == 0 for r in rows])
    success = np.array([r["success"] for r in rows])
    per_step = [{"t": int(k), "q1": float(q1[t == k].mean()), "q_min": float(qmin[t == k].mean()),
                 "mc_return": float(g[t == k].mean())} for k in np.unique(t)]
    edges = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0001])
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (q1 >= lo) & (q1 < hi)
        if m.any():
            bins.append({"q_from": float(lo), "q_to": float(min(hi, 1.0)), "count": int(m.sum()),
                         "mean_q1": float(q1[m].mean()), "mean_mc_return": float(g[m].mean())})
    attempts_success = success[last]
    return {"success_rate": float(attempts_success.mean()), "per_step": per_step, "reliability": bins,
            "final_step_brier": float(np.mean((q1[last] - attempts_success) ** 2)),
            "final_step_brier_constant": float(np.mean((attempts_success.mean() - attempts_success) ** 2)),
            "mean_q1_minus_return": float((q1 - g).mean()), "mean_qmin_minus_return": float((qmin - g).mean())}


def cem_vs_grid(agent, rows, states: int, grid: int, seed: int = 0) -> dict:
    """Q_1 at CEM's action vs the best of an exhaustive grid over the action box."""
    import torch

    from rlcontrol.agents.qtopt.losses import q_value

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=min(states, len(rows)), replace=False)
    axis = np.linspace(-1.0, 1.0, grid)
    action_dim = rows[0]["action"].shape[0]
    cont = action_dim - 1 if action_dim == 5 else action_dim - 2  # dx dy dz dyaw [grip] [terminate]
    points = [list(p) for p in itertools.product(*([axis] * 4))]
    tail = [[g] for g in (-1.0, 1.0)] if action_dim == 5 else [[g, e] for g in (-1.0, 1.0) for e in (-1.0, 1.0)]
    candidates = torch.tensor([p + t for p in points for t in tail], dtype=torch.float32)  # (G, A)
    del cont
    gaps, cem_q, grid_q = [], [], []
    with torch.no_grad():
        for i in picks:
            x = agent.normalizer(rows[i]["obs"].unsqueeze(0))
            features = agent.q.encode(x)
            scores = q_value(agent.q.score_candidates(features, candidates.unsqueeze(0), member=0)[0], agent.cfg.loss)
            chosen = q_value(agent.q.head(features, rows[i]["action"].float().unsqueeze(0), member=0), agent.cfg.loss)
            best = float(scores.max())
            cem_q.append(float(chosen[0]))
            grid_q.append(best)
            gaps.append(best - float(chosen[0]))
    gaps_arr = np.array(gaps)
    return {"states": len(picks), "grid_points": int(candidates.shape[0]), "mean_q1_cem": float(np.mean(cem_q)),
            "mean_q1_grid_best": float(np.mean(grid_q)), "mean_gap": float(gaps_arr.mean()),
            "p90_gap": float(np.quantile(gaps_arr, 0.9)), "share_gap_over_0.05": float((gaps_arr > 0.05).mean()),
            "share_cem_at_least_grid": float((gaps_arr <= 0).mean())}


def learning_curve(run_dir: Path, offline_attempts: int, max_steps: int) -> list[dict]:
    path = run_dir / "eval.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    curve = []
    for row in rows:
        steps = int(float(row["env_steps"]))
        curve.append({"env_steps": steps, "grasps_seen": offline_attempts + steps // max_steps,
                      "train_object_success": float(row.get("mean_return", row.get("return", "nan")))})
    return curve


def diagnose(run_dir: Path, attempts: int, object_set: str, grid: int, states: int) -> dict:
    from rlcontrol.training import builders
    from rlcontrol.training.evaluate_run import load_policy_agent

    config, train_env, agent = load_policy_agent(run_dir)
    train_env.close()
    if config.algo != "qtopt" or config.env.id != "rlc:grasp":
        raise SystemExit(f"{run_dir}: not a QT-Opt grasp run ({config.algo} on {config.env.id})")
    env = builders.make_env(replace(config.env, kwargs={**config.env.kwargs, "object_set": object_set}), SEED_BASE)
    data = offline_data(config)
    rows = rollouts(agent, env, attempts, config.agent.gamma)
    env.close()
    max_steps = int(config.env.kwargs.get("max_steps", 20))
    return {"run_dir": str(run_dir), "seed": config.seed, "pixels": bool(config.env.pixels),
            "object_set": object_set, "attempts": attempts, "offline_data": data,
            "calibration": calibration(agent, rows), "cem_vs_grid": cem_vs_grid(agent, rows, states, grid),
            "learning_curve": learning_curve(run_dir, data.get("attempts", 0), max_steps)}


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--attempts", type=int, default=100)
    parser.add_argument("--object-set", default="test", choices=("train", "test"))
    parser.add_argument("--grid", type=int, default=9, help="grid points per continuous action dimension")
    parser.add_argument("--states", type=int, default=200, help="visited states to compare CEM with the grid on")
    parser.add_argument("--name", default=None, help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    runs = [diagnose(Path(d), args.attempts, args.object_set, args.grid, args.states) for d in args.run_dirs]
    for run in runs:
        cal, cem, data = run["calibration"], run["cem_vs_grid"], run["offline_data"]
        print(f"## {run['run_dir']} ({'pixels' if run['pixels'] else 'state'}, seed {run['seed']}, "
              f"{run['attempts']} attempts on {run['object_set']} objects)")
        if data.get("available"):
            print(f"offline data: {data['attempts']} attempts, success {data['success_rate']:.3f}")
        print(f"policy success {cal['success_rate']:.3f}; final-step Brier {cal['final_step_brier']:.3f} "
              f"(constant predictor {cal['final_step_brier_constant']:.3f}); mean Q1 - return "
              f"{cal['mean_q1_minus_return']:+.3f}, min Q - return {cal['mean_qmin_minus_return']:+.3f}")
        print("per step t: " + " ".join(f"{s['t']}:{s['q1']:.2f}/{s['mc_return']:.2f}" for s in cal["per_step"]))
        print("reliability (Q1 bin: count, mean Q1, mean return): " + "; ".join(
            f"[{b['q_from']:.2f},{b['q_to']:.2f}) {b['count']} {b['mean_q1']:.2f} {b['mean_mc_return']:.2f}"
            for b in cal["reliability"]))
        print(f"CEM vs grid ({cem['grid_points']} points, {cem['states']} states): mean Q1 {cem['mean_q1_cem']:.3f} "
              f"vs {cem['mean_q1_grid_best']:.3f}, mean gap {cem['mean_gap']:.3f}, p90 {cem['p90_gap']:.3f}, "
              f"gap > 0.05 in {cem['share_gap_over_0.05']:.0%}")
        print("learning curve (grasps seen: train-object success): " + ", ".join(
            f"{p['grasps_seen']}: {p['train_object_success']:.2f}" for p in run["learning_curve"]))
    if args.name:
        out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
        out.write_text(json.dumps({"attempts": args.attempts, "object_set": args.object_set, "grid": args.grid,
                                   "runs": runs}, indent=2))
        print(json.dumps({"results_file": str(out)}))


if __name__ == "__main__":
    main()
