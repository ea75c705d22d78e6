"""What a higher update-to-data ratio costs: the real training loop at K updates per agent step.

    .venv/bin/python -m benchmarks.utd_cost [--config sac_cheetah_run] [--ks 1 2 4 8] [--steps 300] [--rounds 3]

Builds the real Trainer for a config (default: the shipped SAC recipe on dmc:cheetah-run), fills
the replay with 2,000 random steps, then times `--steps` consecutive loop steps (act, env.step,
replay add, K x (sample + update)) at each K, interleaved over `--rounds` so that the machine's
drift hits every K alike. Reports per-update time and the ratio t(K) / (t_collect + K * t_update(1)):
1.0 means K updates cost exactly K times one (the target of issue 16), below 1 that acting is
amortised. Nothing in the loop syncs per update (metrics stay tensors until a log); on the CPU
there is no device to sync with at all, so this measures Python and allocator overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]


class LoopTimer:
    """The real Trainer's loop for a config, timed per part."""

    def __init__(self, config_name: str, threads: int):
        from rlcontrol.config import load_config
        from rlcontrol.distributed.collector import make_collector
        from rlcontrol.training.loop import Trainer

        self.config = load_config(ROOT / "configs" / f"{config_name}.yaml",
                                  [f"train.threads={threads}", "train.learning_starts=2000", "train.video_frames=0"])
        self.trainer = Trainer(self.config, tempfile.mkdtemp(), progress=False)
        self.trainer.collector = make_collector(self.trainer)
        self.trainer.collector.start()
        self.metrics: dict = {}
        while self.trainer.state.env_steps < self.config.train.learning_starts:  # uniform random actions
            self.step()

    def _episode_end(self, harvest) -> None:
        if harvest.episode_returns:
            self.trainer.state.episodes += len(harvest.episode_returns)
            self.trainer.collector.episodes_handled()

    def step(self) -> None:
        """One iteration of Trainer.run's loop: collect one agent step, then updates_per_step updates."""
        harvest, self.metrics = self.trainer._step(self.metrics)
        self._episode_end(harvest)

    def collect_seconds(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self._episode_end(self.trainer.collector.collect())
        return (time.perf_counter() - start) / steps

    def loop_seconds(self, k: int, steps: int) -> float:
        self.config.train.updates_per_step = k
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps

    def update_seconds(self, steps: int) -> float:
        agent, replay, batch_size = self.trainer.agent, self.trainer.replay, self.config.agent.batch_size
        start = time.perf_counter()
        for _ in range(steps):
            agent.update(replay.sample(batch_size))
        return (time.perf_counter() - start) / steps


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sac_cheetah_run")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    timer = LoopTimer(args.config, args.threads)
    loop_seconds, collect_seconds, update_seconds = timer.loop_seconds, timer.collect_seconds, timer.update_seconds
    loop_seconds(1, 30)  # warm-up (allocator, first autograd graphs)
    rows: dict[int, list[float]] = {k: [] for k in args.ks}
    collect, update = [], []
    for _ in range(args.rounds):
        collect.append(collect_seconds(args.steps))
        update.append(update_seconds(args.steps))
        for k in args.ks:
            rows[k].append(loop_seconds(k, max(30, args.steps // k)))
    t_collect, t_update = statistics.median(collect), statistics.median(update)
    result = {"config": args.config, "threads": args.threads, "torch": torch.__version__,
              "collect_ms": round(t_collect * 1e3, 3), "update_ms": round(t_update * 1e3, 3), "ks": {}}
    print(f"{args.config}: collect {t_collect * 1e3:.2f} ms/agent step, one update {t_update * 1e3:.2f} ms "
          f"({1 / t_update:.0f} updates/s), {args.threads} threads")
    print("| K | ms per agent step (median, range) | updates/s | t(K) / (collect + K x update) |")
    print("| --- | --- | --- | --- |")
    for k in args.ks:
        med = statistics.median(rows[k])
        ratio = med / (t_collect + k * t_update)
        result["ks"][k] = {"ms_per_step": [round(x * 1e3, 3) for x in rows[k]], "ratio": round(ratio, 3),
                           "updates_per_s": round(k / med, 1)}
        print(f"| {k} | {med * 1e3:.2f} ({min(rows[k]) * 1e3:.2f}-{max(rows[k]) * 1e3:.2f}) | {k / med:.0f} | "
              f"{ratio:.2f} |")
    timer.trainer.collector.close()
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
