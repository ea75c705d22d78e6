"""Offline grasp attempts for QT-Opt: a replay file for `replay.offline_replay`.

QT-Opt started from grasps collected by a randomized scripted policy, because uniformly random
actions almost never lift anything and the reward is sparse (docs/grasp.md, Baselines). This
runs `envs.grasp.RandomDescent` (QT-Opt's scripted exploration) and, for a fraction of the
attempts, the privileged `ScriptedGrasp` with Gaussian action noise, in the environment a run
config describes, and saves the transitions (n-step and gamma from that config) with
`ReplayBuffer.save`:

    .venv/bin/python scripts/grasp_offline_replay.py configs/qtopt_grasp.yaml \\
        --attempts 2000 --out runs/grasp_offline.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def collect(config_path: str, attempts: int, out: str, scripted_fraction: float, noise: float, seed: int) -> dict:
    from envs.grasp import RandomDescent, ScriptedGrasp
    from rlcontrol.config import load_config
    from rlcontrol.replay import NStepAccumulator, ReplayBuffer
    from rlcontrol.training import builders

    config = load_config(config_path)
    env = builders.make_env(config.env, seed)
    rng = np.random.default_rng(seed)
    descent, scripted = RandomDescent(rng), ScriptedGrasp()
    accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
    transitions, successes = [], {"random_descent": [0, 0], "scripted_noisy": [0, 0]}
    for attempt in range(attempts):
        obs = env.reset(seed=seed * 1_000_003 + attempt)
        use_scripted = rng.random() < scripted_fraction
        name = "scripted_noisy" if use_scripted else "random_descent"
        accumulator.reset()
        while True:
            action = scripted(env) if use_scripted else descent(env)
            if use_scripted and noise > 0:
                action = action + noise * rng.standard_normal(action.shape)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)  # the agent's normalized units
            result = env.step(action)
            transitions.extend(accumulator.add(obs, action, result.reward, result.obs, result.terminated,
                                               result.truncated))
            obs = result.obs
            if result.terminated or result.truncated:
                successes[name][0] += int(result.reward > 0)
                successes[name][1] += 1
                break
    env.close()
    replay = ReplayBuffer(len(transitions), env.spec.observation, env.spec.action_dim, seed=seed)
    for transition in transitions:
        replay.add(transition)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    replay.save(out)
    return {"out": out, "attempts": attempts, "transitions": len(replay),
            "success_rate": {k: round(s / n, 3) if n else None for k, (s, n) in successes.items()},
            "attempts_by_policy": {k: n for k, (_, n) in successes.items()},
            "n_step": config.replay.n_step, "gamma": config.agent.gamma}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the run config whose env, gamma and n-step the data must match")
    parser.add_argument("--attempts", type=int, default=2000, help="grasp attempts (episodes) to collect")
    parser.add_argument("--out", required=True, help="replay file to write (safetensors)")
    parser.add_argument("--scripted-fraction", type=float, default=0.0,
                        help="fraction of attempts by the privileged scripted grasp (with --noise)")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian action noise on the scripted grasp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(collect(args.config, args.attempts, args.out, args.scripted_fraction, args.noise, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
