"""The one off-policy training loop every agent of the DDPG family shares.

    act (uniform random until learning_starts, then mu(s) + noise)
    -> env.step -> n-step accumulator -> replay
    -> `updates_per_step` x (sample -> agent.update -> priorities)
    -> at episode ends: log, evaluate when due, checkpoint when due.

Evaluations and checkpoints happen at the first episode end after their period, and every
episode's randomness is derived from (seed, episode index): together with the RNG states in
the checkpoint this makes `--resume` continue exactly as if the run had never stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlcontrol.agents import make_agent
from rlcontrol.config import Config, save_config
from rlcontrol.errors import UserError
from rlcontrol.replay import NStepAccumulator
from rlcontrol.training import builders
from rlcontrol.training.atomic import atomic_write, atomic_write_text
from rlcontrol.training.checkpoint import CheckpointManager
from rlcontrol.training.evaluate import episode_seed, evaluate, record_video
from rlcontrol.training.logger import MetricsLogger
from rlcontrol.training.malloc import keep_freed_memory
from rlcontrol.training.plots import plot_learning_curve

POLICY_FILE = "policy.pt"


@dataclass
class LoopState:
    """Counters that a checkpoint must restore (JSON-serialisable)."""

    env_steps: int = 0
    agent_steps: int = 0
    episodes: int = 0
    evals_done: int = 0
    next_eval_at: int = 0
    next_checkpoint_at: int = 0
    next_log_at: int = 0
    train_seconds: float = 0.0
    recent_returns: list = field(default_factory=list)
    last_eval_return: float | None = None


def _check_resumable(config: Config, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    from rlcontrol.config import load_config

    old = load_config(saved).to_dict()
    new = config.to_dict()
    # Extending the run is allowed; anything else would silently change the experiment.
    old["train"].pop("total_env_steps"), new["train"].pop("total_env_steps")
    for section in new:
        a, b = old.get(section), new[section]
        if a != b:
            if isinstance(b, dict):
                key = next(k for k in b if a.get(k) != b[k])
                raise UserError(f"--resume with a different config: {section}.{key} was {a.get(key)!r}, now {b[key]!r}")
            raise UserError(f"--resume with a different config: {section} was {a!r}, now {b!r}")


class Trainer:
    """Owns one run: environment, agent, replay, logs and checkpoints. `run()` trains to the end."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        t = config.train
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UserError(f"--run-dir {self.run_dir} exists and is not a folder")
        if t.threads:
            torch.set_num_threads(t.threads)
        keep_freed_memory()  # no page faults for the update's short-lived tensors (training/malloc.py)
        self.ckpts = CheckpointManager(self.run_dir / "checkpoints", keep=t.keep_checkpoints)
        latest = self.ckpts.latest()
        if latest is not None and not resume:
            raise UserError(f"{self.run_dir} already holds a run (checkpoint {latest.name}); pass --resume to "
                            "continue it or choose another --run-dir")
        if resume:
            _check_resumable(config, self.run_dir)
        # Environments first: a bad env id must fail before anything is written.
        self.env = builders.make_env(config.env, config.seed)
        self.eval_env = builders.make_env(config.env, config.seed + 1)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.yaml")
        self.agent = make_agent(config, self.env.spec)
        self.replay = builders.make_replay(config, self.env.spec)
        self.accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
        self.rng = np.random.default_rng(config.seed)  # uniform actions before learning starts
        self.state = LoopState(next_eval_at=t.eval_every or t.total_env_steps,
                               next_checkpoint_at=t.checkpoint_every, next_log_at=t.log_every)
        offsets = None
        if resume and latest is not None:
            offsets = self._restore(latest)
        self.logger = MetricsLogger(self.run_dir, resume_offsets=offsets,
                                    resume_step=self.state.env_steps if offsets else None)
        self.logger.log_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```")
        # Throughput of this process's acting + learning (evaluation and checkpoints excluded).
        self.session_steps, self.session_seconds, self.last_sps = 0, 0.0, None

    # ------------------------------------------------------------------ state

    def _restore(self, folder: Path) -> dict:
        agent_state, replay_path, saved = self.ckpts.load(folder)
        self.agent.load_state_dict(agent_state)
        try:
            self.replay = type(self.replay).load(replay_path, device=self.config.train.device)
        except (OSError, ValueError) as exc:
            raise UserError(f"damaged checkpoint {folder.name}: replay buffer: {exc}") from None
        self.rng.bit_generator.state = saved["rng"]
        self.agent.noise_rng.bit_generator.state = saved["noise_rng"]
        self.state = LoopState(**saved["loop"])
        return saved["log_sizes"]

    def checkpoint(self) -> None:
        state_json = {"loop": self.state.__dict__, "rng": self.rng.bit_generator.state,
                      "noise_rng": self.agent.noise_rng.bit_generator.state, "log_sizes": self.logger.flush()}
        self.ckpts.save(self.state.env_steps, self.agent.state_dict(), self.replay, state_json)
        write_policy(self.agent, self.run_dir, self.state.env_steps)

    def policy(self, obs):
        return self.agent.act(obs, explore=False)

    def evaluate(self) -> None:
        returns = evaluate(self.eval_env, self.policy, self.config.train.eval_episodes, self.config.seed,
                           self.state.evals_done)
        self.state.evals_done += 1
        self.state.last_eval_return = float(np.mean(returns))
        self.logger.log_eval(self.state.env_steps, returns)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        """Train to train.total_env_steps, then evaluate, checkpoint and write the artifacts."""
        t = self.config.train
        bar = _progress_bar(t.total_env_steps, self.state.env_steps, enabled=self.progress)
        obs = _start_episode(self.env, self.agent, self.config.seed, self.state.episodes)
        episode_return, metrics = 0.0, {}
        self._log_clock, self._log_steps = time.perf_counter(), self.state.env_steps
        try:
            while self.state.env_steps < t.total_env_steps:
                result, metrics = self._step(obs, metrics)
                obs = result.obs
                episode_return += result.reward
                if self.state.env_steps >= self.state.next_log_at:
                    self._log_training(metrics, bar)
                if self.state.agent_steps % 50 == 0:
                    bar.update(self.state.env_steps - bar.n)
                if result.terminated or result.truncated:
                    self._end_episode(episode_return)
                    episode_return = 0.0
                    obs = _start_episode(self.env, self.agent, self.config.seed, self.state.episodes)
                    self.accumulator.reset()
                    bar.set_postfix_str(_postfix(self.last_sps, self.state), refresh=False)
            bar.update(self.state.env_steps - bar.n)
            bar.close()
            self.evaluate()
            self.checkpoint()
        finally:
            bar.close()
            self.logger.close()
        return self._finish()

    def _step(self, obs, metrics: dict):
        """One agent step: act, store the transition, learn. Returns (StepResult, latest metrics)."""
        tick = time.perf_counter()
        state, agent, t = self.state, self.agent, self.config.train
        if state.env_steps < t.learning_starts:
            action = self.rng.uniform(-1.0, 1.0, self.env.spec.action_dim).astype(np.float32)
        else:
            action = agent.act(obs, explore=True)
        result = self.env.step(action)
        agent.observe(result.obs)
        for transition in self.accumulator.add(obs, action, result.reward, result.obs, result.terminated,
                                               result.truncated):
            self.replay.add(transition)
        repeat = self.config.env.action_repeat
        state.env_steps += repeat
        state.agent_steps += 1
        if state.env_steps >= t.learning_starts and len(self.replay) >= self.config.agent.batch_size:
            for _ in range(t.updates_per_step):
                batch = self.replay.sample(self.config.agent.batch_size)
                metrics = agent.update(batch)
                if self.config.replay.prioritized:
                    self.replay.update_priorities(batch.indices, metrics["priority"])
        elapsed = time.perf_counter() - tick
        state.train_seconds += elapsed
        self.session_seconds += elapsed
        self.session_steps += repeat
        return result, metrics

    def _log_training(self, metrics: dict, bar) -> None:
        now = time.perf_counter()
        sps = self.last_sps = (self.state.env_steps - self._log_steps) / max(now - self._log_clock, 1e-9)
        self._log_clock, self._log_steps = now, self.state.env_steps
        scalars = {f"losses/{k}": v.item() for k, v in metrics.items() if k != "priority"}
        self.logger.log(self.state.env_steps, scalars | {"charts/SPS": sps})
        self.state.next_log_at += self.config.train.log_every
        bar.set_postfix_str(_postfix(sps, self.state), refresh=False)

    def _end_episode(self, episode_return: float) -> None:
        """Log the episode; evaluate and checkpoint when due (always on an episode boundary)."""
        state, t = self.state, self.config.train
        state.episodes += 1
        state.recent_returns = (state.recent_returns + [episode_return])[-10:]
        self.logger.log(state.env_steps, {"charts/episodic_return": episode_return})
        if state.next_eval_at <= state.env_steps < t.total_env_steps:
            self.evaluate()
            state.next_eval_at += t.eval_every
        if state.env_steps >= state.next_checkpoint_at:
            periods = math.ceil((state.env_steps - state.next_checkpoint_at + 1) / t.checkpoint_every)
            state.next_checkpoint_at += t.checkpoint_every * periods
            self.checkpoint()

    def _finish(self) -> dict:
        config, state = self.config, self.state
        summary = {
            "run_dir": str(self.run_dir),
            "algo": config.algo,
            "env": config.env.id,
            "seed": config.seed,
            "env_steps": state.env_steps,
            "episodes": state.episodes,
            "env_steps_per_s": round(self.session_steps / max(self.session_seconds, 1e-9), 2),
            "eval_return": state.last_eval_return,
            "recent_train_return": float(np.mean(state.recent_returns)) if state.recent_returns else None,
        }
        plot_learning_curve(self.run_dir, title=f"{config.algo.upper()} on {config.env.id} (seed {config.seed})")
        summary["curve"] = str(self.run_dir / "curve.png")
        if config.train.video_frames > 0:
            try:
                record_video(self.eval_env, self.policy, self.run_dir / "video.mp4", config.seed,
                             config.train.video_frames, config.train.video_size)
                summary["video"] = str(self.run_dir / "video.mp4")
            except Exception as exc:  # noqa: BLE001 - rendering is optional (no GL, env without render)
                print(f"rlcontrol: warning: no video ({type(exc).__name__}: {exc})", file=sys.stderr)
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.env.close()
        self.eval_env.close()
        return summary


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, evaluate, checkpoint; write curve.png, video.mp4, summary.json. Returns the summary."""
    return Trainer(config, run_dir, resume=resume, progress=progress).run()


def write_policy(agent, run_dir: Path, env_steps: int) -> None:
    """policy.pt: what acting needs (normalizer + actor); read with weights_only=True by eval and export."""
    payload = {"policy": agent.policy_state_dict(), "env_steps": torch.tensor(env_steps)}
    # atomic_write fsyncs the temp file itself; save_torch's own fsync would be a second one.
    atomic_write(run_dir / POLICY_FILE, lambda tmp: torch.save(payload, tmp))


def _start_episode(env, agent, seed: int, episode: int):
    obs = env.reset(seed=episode_seed(seed, 0, episode))
    agent.reset_noise()
    agent.observe(obs)
    return obs


def _postfix(sps: float | None, state: LoopState) -> str:
    parts = []
    if sps is not None:
        parts.append(f"{sps:.0f} env steps/s")
    if state.recent_returns:
        parts.append(f"return {np.mean(state.recent_returns):.1f}")
    if state.last_eval_return is not None:
        parts.append(f"eval {state.last_eval_return:.1f}")
    return ", ".join(parts)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    # tqdm's own rate is left out: the postfix shows the loop's measured env steps/s, and two
    # differently smoothed rates side by side only confuse.
    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled, mininterval=0.5 if tty else 15.0, smoothing=0.05, desc="train",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} env steps "
                           "[{elapsed} elapsed, ETA {remaining}{postfix}]")
