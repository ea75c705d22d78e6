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
from rlcontrol.training.checkpoint import CheckpointManager, save_torch
from rlcontrol.training.evaluate import episode_seed, evaluate, record_video
from rlcontrol.training.logger import MetricsLogger
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


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, evaluate, checkpoint; write curve.png, video.mp4, summary.json. Returns the summary."""
    run_dir = Path(run_dir)
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    ckpts = CheckpointManager(run_dir / "checkpoints", keep=t.keep_checkpoints)
    latest = ckpts.latest()
    if latest is not None and not resume:
        raise UserError(f"{run_dir} already holds a run (checkpoint {latest.name}); pass --resume to continue it "
                        "or choose another --run-dir")
    if resume:
        _check_resumable(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")

    env = builders.make_env(config.env, config.seed)
    eval_env = builders.make_env(config.env, config.seed + 1)
    agent = make_agent(config, env.spec)
    replay = builders.make_replay(config, env.spec)
    accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
    rng = np.random.default_rng(config.seed)
    state = LoopState(next_eval_at=t.eval_every or t.total_env_steps, next_checkpoint_at=t.checkpoint_every,
                      next_log_at=t.log_every)

    offsets = None
    if resume and latest is not None:
        agent_state, replay_path, saved = ckpts.load(latest)
        agent.load_state_dict(agent_state)
        replay = type(replay).load(replay_path, device=config.train.device)
        rng.bit_generator.state = saved["rng"]
        agent.noise_rng.bit_generator.state = saved["noise_rng"]
        state = LoopState(**saved["loop"])
        offsets = saved["log_sizes"]
    logger = MetricsLogger(run_dir, resume_offsets=offsets, resume_step=state.env_steps if offsets else None)
    logger.log_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```")

    def policy(obs):
        return agent.act(obs, explore=False)

    def checkpoint() -> None:
        state_json = {"loop": state.__dict__, "rng": rng.bit_generator.state,
                      "noise_rng": agent.noise_rng.bit_generator.state, "log_sizes": logger.flush()}
        ckpts.save(state.env_steps, agent.state_dict(), replay, state_json)
        write_policy(agent, run_dir, state.env_steps)

    def run_evaluation() -> None:
        returns = evaluate(eval_env, policy, t.eval_episodes, config.seed, state.evals_done)
        state.evals_done += 1
        state.last_eval_return = float(np.mean(returns))
        logger.log_eval(state.env_steps, returns)

    bar = _progress_bar(t.total_env_steps, state.env_steps, enabled=progress)
    session_steps, session_seconds, last_sps = 0, 0.0, None
    obs = _start_episode(env, agent, config.seed, state.episodes)
    episode_return, metrics = 0.0, {}
    log_clock, log_steps = time.perf_counter(), state.env_steps
    repeat = config.env.action_repeat
    batch_size = config.agent.batch_size
    try:
        while state.env_steps < t.total_env_steps:
            tick = time.perf_counter()
            if state.env_steps < t.learning_starts:
                action = rng.uniform(-1.0, 1.0, env.spec.action_dim).astype(np.float32)
            else:
                action = agent.act(obs, explore=True)
            result = env.step(action)
            agent.observe(result.obs)
            for transition in accumulator.add(obs, action, result.reward, result.obs, result.terminated, result.truncated):
                replay.add(transition)
            obs = result.obs
            episode_return += result.reward
            state.env_steps += repeat
            state.agent_steps += 1
            session_steps += repeat
            if state.env_steps >= t.learning_starts and len(replay) >= batch_size:
                for _ in range(t.updates_per_step):
                    batch = replay.sample(batch_size)
                    metrics = agent.update(batch)
                    if config.replay.prioritized:
                        replay.update_priorities(batch.indices, metrics["td_abs"])
            elapsed = time.perf_counter() - tick
            state.train_seconds += elapsed
            session_seconds += elapsed

            if state.env_steps >= state.next_log_at:
                now = time.perf_counter()
                sps = last_sps = (state.env_steps - log_steps) / max(now - log_clock, 1e-9)
                log_clock, log_steps = now, state.env_steps
                logger.log(state.env_steps, {f"losses/{k}": v.item() for k, v in metrics.items() if k != "td_abs"}
                           | {"charts/SPS": sps})
                state.next_log_at += t.log_every
                bar.set_postfix_str(_postfix(sps, state), refresh=False)
            if state.agent_steps % 50 == 0:
                bar.update(state.env_steps - bar.n)

            if result.terminated or result.truncated:
                state.episodes += 1
                state.recent_returns = (state.recent_returns + [episode_return])[-10:]
                logger.log(state.env_steps, {"charts/episodic_return": episode_return})
                episode_return = 0.0
                if state.env_steps >= state.next_eval_at and state.env_steps < t.total_env_steps:
                    run_evaluation()
                    state.next_eval_at += t.eval_every
                if state.env_steps >= state.next_checkpoint_at:
                    state.next_checkpoint_at += t.checkpoint_every * math.ceil(
                        (state.env_steps - state.next_checkpoint_at + 1) / t.checkpoint_every)
                    checkpoint()
                obs = _start_episode(env, agent, config.seed, state.episodes)
                accumulator.reset()
                bar.set_postfix_str(_postfix(last_sps, state), refresh=False)
        bar.update(state.env_steps - bar.n)
        bar.close()
        run_evaluation()
        checkpoint()
    finally:
        bar.close()
        logger.close()

    summary = {
        "run_dir": str(run_dir),
        "algo": config.algo,
        "env": config.env.id,
        "seed": config.seed,
        "env_steps": state.env_steps,
        "episodes": state.episodes,
        # Throughput of acting + learning in this process (evaluation and checkpoint time excluded).
        "env_steps_per_s": round(session_steps / max(session_seconds, 1e-9), 2),
        "eval_return": state.last_eval_return,
        "recent_train_return": float(np.mean(state.recent_returns)) if state.recent_returns else None,
    }
    plot_learning_curve(run_dir, title=f"{config.algo.upper()} on {config.env.id} (seed {config.seed})")
    summary["curve"] = str(run_dir / "curve.png")
    if t.video_frames > 0:
        try:
            record_video(eval_env, policy, run_dir / "video.mp4", config.seed, t.video_frames, t.video_size)
            summary["video"] = str(run_dir / "video.mp4")
        except Exception as exc:  # noqa: BLE001 - rendering is optional (no GL, env without render)
            print(f"rlcontrol: warning: no video ({type(exc).__name__}: {exc})", file=sys.stderr)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    env.close()
    eval_env.close()
    return summary


def write_policy(agent, run_dir: Path, env_steps: int) -> None:
    """policy.pt: what acting needs (normalizer + actor); read with weights_only=True by eval and export."""
    payload = {"policy": agent.policy_state_dict(), "env_steps": torch.tensor(env_steps)}
    atomic_write(run_dir / POLICY_FILE, lambda tmp: save_torch(payload, tmp))


def _start_episode(env, agent, seed: int, episode: int):
    obs = env.reset(seed=episode_seed(seed, 0, episode))
    agent.reset_noise()
    agent.observe(obs)
    return obs


def _postfix(sps: float | None, state: LoopState) -> str:
    parts = []
    if sps is not None:
        parts.append(f"{sps:.0f} steps/s")
    if state.recent_returns:
        parts.append(f"return {np.mean(state.recent_returns):.1f}")
    if state.last_eval_return is not None:
        parts.append(f"eval {state.last_eval_return:.1f}")
    return ", ".join(parts)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled, mininterval=0.5 if tty else 15.0, smoothing=0.05, desc="train")
