"""Cost of one DDPG update on camera frames through a frozen VAE encoder: features remembered per
batch only vs per frame (rlcontrol/networks/image_encoders.py, FrozenFeatureCache).

    .venv/bin/python -m benchmarks.frozen_feature_memo --vae runs/live/vae_lane_standin.safetensors \
        [--transitions 1500] [--updates 150] [--rounds 3]

The agent is configs/ddpg_lane_following_vae.yaml's (batch 64, prioritized replay) with the given
VAE, on a replay of --transitions random-action steps of rlc:lane-following's 64x64 camera. Each
round times --updates updates per mode, the modes alternating in one process so the machine's drift
hits both; per-frame rounds start from an empty memory and warm up on --updates updates first (the
steady state: every frame in the replay seen). Printed and appended to the runs in
benchmarks/results/frozen_feature_memo.json: milliseconds per update, each round.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _agent_and_replay(vae: str, transitions: int, seed: int = 0):
    from rlcontrol.agents import make_agent
    from rlcontrol.config import load_config
    from rlcontrol.training import builders

    config = load_config(ROOT / "configs" / "ddpg_lane_following_vae.yaml")
    encoders = dict(config.agent.encoders)
    encoders["pixels"] = replace(encoders["pixels"], vae_path=vae)
    config = replace(config, agent=replace(config.agent, encoders=encoders))
    env = builders.make_env(config.env, seed, evaluation=True)
    agent = make_agent(config, env.spec)
    replay = builders.make_replay(config, env.spec)
    rng = np.random.default_rng(seed)
    obs, episode = env.reset(seed=seed), 0
    for _ in range(transitions):
        action = rng.uniform(-1.0, 1.0, env.spec.action_dim)
        step = env.step(action)
        replay.add({"obs": obs, "action": action, "reward": step.reward, "next_obs": step.obs,
                    "discount": 0.0 if step.terminated else config.agent.gamma})
        if step.terminated or step.truncated:
            episode += 1
            obs = env.reset(seed=seed + episode)
        else:
            obs = step.obs
    env.close()
    return config, agent, replay


def _time_updates(agent, replay, batch_size: int, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        batch = replay.sample(batch_size)
        metrics = agent.update(batch)
        replay.update_priorities(batch.indices, metrics["priority"])
    return (time.perf_counter() - start) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.provenance import git_commit
    from rlcontrol.networks import image_encoders

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", required=True)
    parser.add_argument("--transitions", type=int, default=1500)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, agent, replay = _agent_and_replay(args.vae, args.transitions)
    cache = image_encoders.FROZEN_FEATURES
    rounds = []
    for r in range(args.rounds):
        row = {}
        for mode, frames in (("per_batch", 0), ("per_frame", 200_000)):
            cache.max_frames = frames
            cache.clear()
            if frames:
                _time_updates(agent, replay, config.agent.batch_size, args.updates)  # warm-up: see every frame
            row[mode] = round(_time_updates(agent, replay, config.agent.batch_size, args.updates), 2)
        rounds.append(row)
        print(f"round {r}: per batch {row['per_batch']:.1f} ms, per frame {row['per_frame']:.1f} ms per update",
              flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "load_average": os.getloadavg()[0],
              "transitions": args.transitions, "updates_per_round": args.updates, "batch_size": config.agent.batch_size,
              "ms_per_update": rounds,
              "range": {mode: [min(r[mode] for r in rounds), max(r[mode] for r in rounds)]
                        for mode in ("per_batch", "per_frame")}}
    path = ROOT / "benchmarks" / "results" / "frozen_feature_memo.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []  # every run kept: the machine drifts
    runs.append(result)
    path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(json.dumps(result["range"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
