"""Where one TD3 training step's time goes: act, env.step, replay add, sample, update.

    .venv/bin/python -m benchmarks.loop_breakdown [--compile] [--steps 600]

Runs the real Trainer's parts on dmc:cheetah-run (2x256, batch 256, 2 threads) after 1,000
random steps, timing each phase of `--steps` consecutive steps.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402


def main() -> None:
    from rlcontrol.config import config_from_dict
    from rlcontrol.training.loop import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    cfg = config_from_dict({"algo": "td3", "env": {"id": "dmc:cheetah-run"},
                            "train": {"total_env_steps": 10**6, "learning_starts": 1000, "threads": 2,
                                      "video_frames": 0, "compile": args.compile}})
    tr = Trainer(cfg, tempfile.mkdtemp(), progress=False)
    rng = np.random.default_rng(0)
    obs = tr.env.reset(seed=0)

    def store(obs, action, result):
        for transition in tr.accumulator.add(obs, action, result.reward, result.obs, result.terminated, result.truncated):
            tr.replay.add(transition)

    for _ in range(1000):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        result = tr.env.step(action)
        store(obs, action, result)
        obs = tr.env.reset(seed=1) if result.truncated else result.obs
    for _ in range(30):
        tr.agent.update(tr.replay.sample(256))
    times = collections.defaultdict(float)
    for _ in range(args.steps):
        t0 = time.perf_counter()
        action = tr.agent.act(obs, explore=True)
        t1 = time.perf_counter()
        result = tr.env.step(action)
        t2 = time.perf_counter()
        store(obs, action, result)
        t3 = time.perf_counter()
        batch = tr.replay.sample(256)
        t4 = time.perf_counter()
        tr.agent.update(batch)
        t5 = time.perf_counter()
        for name, dt in zip(("act", "env.step", "replay add", "sample", "update"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[name] += dt
        obs = tr.env.reset(seed=2) if result.truncated else result.obs
    total = sum(times.values())
    for name, t in times.items():
        print(f"{name:11s} {t / args.steps * 1e3:6.3f} ms  {t / total * 100:4.1f}%")
    print(f"total       {total / args.steps * 1e3:6.3f} ms -> {args.steps / total:.0f} env steps/s")


if __name__ == "__main__":
    main()
