"""TD3 training throughput: rlcontrol vs Stable-Baselines3, same hyperparameters, same run.

Both train TD3 on dm_control cheetah-run from state with batch 256, 2x256 MLPs for actor
and critics, one gradient step per env step, policy delay 2, target smoothing 0.2/0.5,
Gaussian exploration 0.1, Adam 3e-4, tau 0.005, gamma 0.99, 2 torch threads. Each measures
steady-state env steps/s after learning has started (warm-up steps excluded). The two are
run alternately, `--rounds` times each (rlcontrol with train.compile on, SB3, then rlcontrol
eager), and the ratio of medians is reported, because this machine's speed drifts over minutes.
Every measurement runs in a fresh process, so neither library inherits the other's process
state (torch.compile caches, allocator tuning: rlcontrol's Trainer tunes glibc malloc, see
rlcontrol/training/malloc.py; SB3 runs with the defaults its users get).

    .venv/bin/python -m benchmarks.td3_throughput --steps 3000 --rounds 3 [--json]

Needs the bench extras: scripts/setup.sh dev,bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

WARMUP = 1000  # env steps of random actions before learning (both libraries)
BATCH = 256


def rlcontrol_sps(steps: int, seed: int, threads: int, device: str = "cpu", compile_: bool = True,
                  cuda_graphs: bool = False) -> float:
    """Steady-state env steps/s of rlcontrol's real training loop (median over log windows after warm-up)."""
    from rlcontrol.config import config_from_dict
    from rlcontrol.training.logger import read_jsonl
    from rlcontrol.training.loop import train

    log_every = 250
    cfg = config_from_dict({
        "algo": "td3", "seed": seed,
        "env": {"id": "dmc:cheetah-run"},
        "agent": {"actor_hidden": [256, 256], "critic_hidden": [256, 256], "batch_size": BATCH, "actor_lr": 3e-4,
                  "critic_lr": 3e-4, "tau": 0.005, "gamma": 0.99, "policy_delay": 2, "target_noise": 0.2,
                  "target_noise_clip": 0.5, "exploration_sigma": 0.1},
        "replay": {"capacity": 1_000_000},
        "train": {"total_env_steps": WARMUP + steps, "learning_starts": WARMUP, "eval_every": 0, "eval_episodes": 1,
                  "checkpoint_every": 10**9, "log_every": log_every, "threads": threads, "video_frames": 0,
                  "device": device, "compile": compile_, "cuda_graphs": cuda_graphs},
    })
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, run_dir, progress=False)
        rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    # Skip the window that straddles the start of learning.
    sps = [r["charts/SPS"] for r in rows if "charts/SPS" in r and r["env_steps"] > WARMUP + log_every]
    return statistics.median(sps)


def sb3_sps(steps: int, seed: int, threads: int, device: str = "cpu") -> float:
    """Steady-state env steps/s of Stable-Baselines3 TD3 with the same hyperparameters."""
    import gymnasium as gym
    from dm_control import suite
    from shimmy import DmControlCompatibilityV0
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(threads)
    env = gym.wrappers.FlattenObservation(DmControlCompatibilityV0(suite.load("cheetah", "run", task_kwargs={"random": seed})))
    action_dim = env.action_space.shape[0]

    class Timer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.marks: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps % 250 == 0:
                self.marks.append((self.num_timesteps, time.perf_counter()))
            return True

    model = TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=WARMUP, batch_size=BATCH,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, policy_delay=2, target_policy_noise=0.2,
                target_noise_clip=0.5, action_noise=NormalActionNoise(np.zeros(action_dim), 0.1 * np.ones(action_dim)),
                policy_kwargs={"net_arch": [256, 256]}, seed=seed, device=device, verbose=0)
    timer = Timer()
    model.learn(WARMUP + steps, callback=timer)
    windows = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(timer.marks, timer.marks[1:]) if a[0] > WARMUP + 250]
    return statistics.median(windows)


def _measure(which: str, args, seed: int) -> float:
    """One measurement in a fresh interpreter; returns its env steps/s."""
    import subprocess

    cmd = [sys.executable, "-m", "benchmarks.td3_throughput", "--one", which, "--seed", str(seed),
           "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
           "--sb3-device", args.sb3_device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # reported, and left out of the medians; the other arms still run
        print(f"{which} measurement failed: {proc.stderr.strip()[-1500:]}", file=sys.stderr)
        return float("nan")
    return float(proc.stdout.strip().splitlines()[-1])


ARMS = {"ours": "rlcontrol (train.compile)", "eager": "rlcontrol (eager)", "graphs": "rlcontrol (train.cuda_graphs)",
        "sb3": "SB3"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="learning env steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each library")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="rlcontrol's device (cpu or cuda)")
    parser.add_argument("--sb3-device", default=None, help="SB3's device (default: the same as --device)")
    parser.add_argument("--arms", default="ours,sb3,eager",
                        help="comma-separated, measured in this order each round: ours (train.compile), sb3, eager, "
                             "graphs (train.cuda_graphs, cuda only)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", choices=tuple(ARMS), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sb3_device = args.sb3_device or args.device
    torch.set_num_threads(args.threads)
    if args.one:
        if args.one == "sb3":
            print(sb3_sps(args.steps, seed=args.seed, threads=args.threads, device=args.sb3_device))
        else:
            print(rlcontrol_sps(args.steps, seed=args.seed, threads=args.threads, device=args.device,
                                compile_=args.one == "ours", cuda_graphs=args.one == "graphs"))
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "sb3" not in arms or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms: a comma-separated subset of {', '.join(ARMS)} that includes sb3")
    sps: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm in arms:
            sps[arm].append(_measure(arm, args, r))
        print(f"round {r}: " + ", ".join(f"{ARMS[a]} {sps[a][-1]:.1f}" for a in arms) + " env steps/s", file=sys.stderr)
    def med(values: list[float]) -> float:
        values = [v for v in values if v == v]  # failed measurements (nan) left out
        return statistics.median(values) if values else float("nan")

    theirs = med(sps["sb3"])
    suffix = {"ours": "", "eager": "_eager", "graphs": "_graphs"}  # result keys: rlcontrol{suffix}_sps, ratio{suffix}
    result = {"task": "dmc:cheetah-run", "threads": args.threads, "device": args.device, "sb3_device": args.sb3_device,
              "steps_per_measurement": args.steps, "rounds": args.rounds}
    for arm in arms:
        name = "sb3" if arm == "sb3" else f"rlcontrol{suffix[arm]}"
        result[f"{name}_sps"] = [round(x, 1) for x in sps[arm]]
        result[f"{name}_median"] = round(med(sps[arm]), 1)
        if arm != "sb3":
            result[f"ratio{suffix[arm]}"] = round(med(sps[arm]) / theirs, 2)
    result |= {"torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if "cuda" in (args.device, args.sb3_device) else None}
    if args.json:
        print(json.dumps(result))
    else:
        print(", ".join(f"{ARMS[a]} {med(sps[a]):.1f}" + ("" if a == "sb3" else f" ({med(sps[a]) / theirs:.2f}x SB3)")
                        for a in arms) + " env steps/s")


if __name__ == "__main__":
    main()
