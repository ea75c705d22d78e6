"""`rlcontrol eval RUN_DIR`: load a run's config and policy.pt, roll out deterministic episodes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from rlcontrol.agents import make_agent
from rlcontrol.config import load_config
from rlcontrol.errors import UserError
from rlcontrol.training import builders
from rlcontrol.training.checkpoint import load_torch
from rlcontrol.training.evaluate import episode_seed, record_video, run_episode
from rlcontrol.training.loop import POLICY_FILE


def load_policy_agent(run_dir: str | Path):
    """(config, env, agent) of a finished or running run, from config.yaml and policy.pt."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    payload = load_torch(run_dir / POLICY_FILE)
    if not isinstance(payload, dict) or "policy" not in payload:
        raise UserError(f"{run_dir / POLICY_FILE} is not an rlcontrol policy file")
    env = builders.make_env(config.env, config.seed + 3, evaluation=True)
    # Acting on one observation at a time runs on the CPU whatever the run trained on: a policy
    # trained on a GPU evaluates and exports on a robot's CPU-only computer (policy.pt is saved
    # from CPU tensors and loaded with map_location="cpu").
    acting = replace(config, train=replace(config.train, device="cpu", compile=False, cuda_graphs=False))
    agent = make_agent(acting, env.spec)
    try:
        agent.load_policy_state_dict(payload["policy"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"{run_dir / POLICY_FILE} does not match the run's config: {str(exc).splitlines()[0]}") from None
    return config, env, agent


def evaluate_run(run_dir: str | Path, episodes: int = 10, video: bool = False, seed: int | None = None) -> dict:
    config, env, agent = load_policy_agent(run_dir)
    seed = config.seed if seed is None else seed

    def policy(obs):
        return agent.act(obs, explore=False)

    # Stream 3: evaluation episodes never seen during training's periodic evaluations.
    returns = [run_episode(env, policy, episode_seed(seed, 3, i)) for i in range(episodes)]
    summary = {"run_dir": str(run_dir), "env": config.env.id, "episodes": episodes,
               "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
               "returns": [float(r) for r in returns]}
    if video:
        out = Path(run_dir) / "eval_video.mp4"
        record_video(env, policy, out, seed, config.train.video_frames or 500, config.train.video_size)
        summary["video"] = str(out)
    env.close()
    return summary
