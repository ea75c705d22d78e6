"""Cost of one QT-Opt update from pixels: a conv encoder trained end to end vs cached frozen latents.

    .venv/bin/python -m benchmarks.grasp_update_cost [--encoder runs/grasp_encoder.safetensors] [--updates 30]
        [--rounds 3] [--threads 1]

Both agents are built from their shipped configs (configs/qtopt_grasp_pixels.yaml: conv encoder,
batch 64; configs/qtopt_grasp_pixels_pretrained.yaml: frozen encoder, batch 256) on rlc:grasp's
64x64 image + gripper state, and update on random replay batches of their own replay layout
(images, or latents). Rounds alternate between the two in one process, so the machine's drift
hits both; printed: milliseconds per update, per round, and per transition in the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np


def _agent_and_batch(config_path: str, encoder: str | None, seed: int = 0):
    import envs
    from rlcontrol.agents import make_agent
    from rlcontrol.config import load_config
    from rlcontrol.replay import make_replay

    config = load_config(config_path)
    if encoder is not None:
        config = replace(config, agent=replace(config.agent, frozen_encoder=encoder))
    env = envs.make("rlc:grasp", seed=seed, pixels=True, pixel_size=64, obs_format="dict",
                    **{k: v for k, v in config.env.kwargs.items() if k != "object_set"})
    agent = make_agent(config, env.spec)
    spec = getattr(agent, "replay_obs_spec", env.spec.observation)
    size = config.agent.batch_size * 4
    replay = make_replay(size, spec, env.spec.action_dim, prioritized=False, seed=seed)
    rng = np.random.default_rng(seed)

    def random_obs():
        return {k: (rng.integers(0, 256, s.shape, dtype=np.uint8) if s.dtype == np.uint8
                    else rng.standard_normal(s.shape).astype(np.float32)) for k, s in spec.items()}

    for _ in range(size):
        replay.add({"obs": random_obs(), "action": rng.uniform(-1, 1, env.spec.action_dim).astype(np.float32),
                    "reward": float(rng.random() < 0.2), "discount": 0.9, "next_obs": random_obs()})
    env.close()
    return agent, replay, config.agent.batch_size


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="runs/grasp_encoder.safetensors")
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    arms = {"conv (end to end)": _agent_and_batch("configs/qtopt_grasp_pixels.yaml", None),
            "frozen encoder, cached latents": _agent_and_batch("configs/qtopt_grasp_pixels_pretrained.yaml",
                                                               args.encoder)}
    results = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, (agent, replay, batch) in arms.items():
            agent.update(replay.sample(batch))  # warm-up
            start = time.perf_counter()
            for _ in range(args.updates):
                agent.update(replay.sample(batch))
            results[name].append(1e3 * (time.perf_counter() - start) / args.updates)
    out = {name: {"batch": arms[name][2], "ms_per_update": [round(v, 1) for v in ms],
                  "ms_per_transition": [round(v / arms[name][2], 3) for v in ms]} for name, ms in results.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
