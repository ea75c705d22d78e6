"""An exported policy through ROS 2 against the same policy in process, on the same episodes.

    .venv/bin/python -m benchmarks.deploy_parity POLICY.onnx [--env ENV] [--env-kwargs JSON] [--episodes 20]
        [--real-time-factor 4] [--seed 0] [--name NAME]

The deployed side is `rlcontrol deploy` (the simulated robot and the lifecycle policy node as
separate processes over real DDS, the policy node's safety layer in the loop); the in-process
side runs the same ONNX file through `rlcontrol.deploy.runtime` on the task directly. The robot
seeds episode i with seed + i; so does the in-process side, so both see the same episodes (for
rlc:grasp: the same objects and start poses). Differences come from the deploy path itself:
observation-to-command latency, the rate limiter and the safety layer. Writes
benchmarks/results/NAME.json when --name is given.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy")
    parser.add_argument("--env", default=None, help="task (default: the policy's)")
    parser.add_argument("--env-kwargs", type=json.loads, default={})
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--real-time-factor", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="results file: benchmarks/results/NAME.json")
    args = parser.parse_args()

    from rlcontrol.deploy import runtime
    from rlcontrol.deploy.rollout import onnx_returns
    from ros_nodes.launch import deploy

    meta = runtime.load(args.policy).metadata
    env_id = args.env or meta.env_id
    deployed = deploy(args.policy, env_id=env_id, env_kwargs=args.env_kwargs, episodes=args.episodes,
                      real_time_factor=args.real_time_factor, seed=args.seed, quiet=True, trigger="observation")
    seeds = [args.seed + i for i in range(args.episodes)]
    expected = onnx_returns(args.policy, env_id, seeds, action_repeat=deployed["action_repeat"],
                            env_kwargs=args.env_kwargs)
    d = deployed["diagnostics"]
    summary = {
        "policy": args.policy, "algorithm": meta.algorithm, "env_id": env_id, "env_kwargs": args.env_kwargs,
        "episodes": args.episodes, "real_time_factor": args.real_time_factor,
        "deployed_returns": deployed["returns"], "in_process_returns": expected,
        "deployed_mean": float(np.mean(deployed["returns"])), "in_process_mean": float(np.mean(expected)),
        "same_episode_outcomes": int(sum(abs(a - b) < 1e-6 for a, b in zip(deployed["returns"], expected))),
        "obs_to_command_p50_ms": d.get("obs_to_command_p50_ms"), "obs_to_command_p99_ms": d.get("obs_to_command_p99_ms"),
        "nonfinite_obs": d.get("nonfinite_obs"), "watchdog_trips": d.get("watchdog_trips"),
        "exit_codes": deployed["exit_codes"],
    }
    if args.name:
        (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(summary, indent=2))
    print(f"deployed through ROS 2: mean return {summary['deployed_mean']:.3f}; in process: "
          f"{summary['in_process_mean']:.3f}; same outcome in {summary['same_episode_outcomes']}/{args.episodes} episodes")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
