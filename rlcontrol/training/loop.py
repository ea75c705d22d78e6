"""The one off-policy training loop every agent (DDPG, TD3, D4PG, QT-Opt) shares.

    collect: act (uniform random until learning_starts, then mu(s) + noise)
             -> env.step -> n-step accumulator -> replay
    -> `updates_per_step` x agent steps collected x (sample -> agent.update -> priorities)
    -> at episode ends: log, evaluate when due, checkpoint when due.

Where the experience comes from is the collector's business (rlcontrol/distributed):
in process, one agent step at a time in the trainer's own environment (the default,
distributed.num_actors: 1), or in chunks from K Ray actor workers (num_actors > 1 or a
ray_address), each with its own environment and exploration noise, which the learner sends
its policy every distributed.weight_sync_every updates. Either way the loop, the replay ratio,
evaluation (the learner's own eval env), checkpoints and logs are this module's.

Offline data (replay.offline_replay, rlcontrol/replay/mixed.py): batches then mix a fixed
share (replay.offline_ratio) of transitions from a replay file with the online replay, after an
optional replay.offline_pretrain_updates updates on the offline data alone before collecting.
Without it, batches come from the online replay exactly as before.

Evaluations and checkpoints happen at the first episode end after their period, and every
episode's randomness is derived from (seed, episode index): together with the RNG states in
the checkpoint this makes `--resume` continue exactly as if the run had never stopped.
Distributed runs are not bit-reproducible (the order in which chunks arrive depends on timing);
their `--resume` restores the learner, replay and counters and starts fresh actor workers (their
unfinished episodes and open n-step windows are not in the checkpoint).
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

from rlcontrol.agents import make_agent, replay_observation_spec
from rlcontrol.config import Config, save_config
from rlcontrol.distributed.collector import make_collector, uses_ray
from rlcontrol.errors import UserError
from rlcontrol.replay import NStepAccumulator
from rlcontrol.training import builders
from rlcontrol.training.atomic import atomic_write, atomic_write_text
from rlcontrol.training.checkpoint import CheckpointManager
from rlcontrol.training.evaluate import evaluate, record_video
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
    offline_pretrain_updates: int = 0  # done so far (replay.offline_pretrain_updates in all)


def _check_resumable(config: Config, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    from rlcontrol.config import load_config

    old = load_config(saved).to_dict()
    new = config.to_dict()
    # Extending the run is allowed, and so is joining another Ray cluster; anything else would
    # silently change the experiment.
    old["train"].pop("total_env_steps"), new["train"].pop("total_env_steps")
    old.get("distributed", {}).pop("ray_address", None), new["distributed"].pop("ray_address", None)
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
        if t.device == "cuda" and not torch.cuda.is_available():
            raise UserError("train.device is cuda but this torch build sees no CUDA GPU (torch "
                            f"{torch.__version__}); set train.device: cpu or install a CUDA build of torch")
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
        self.eval_env = builders.make_env(config.env, config.seed + 1, evaluation=True)
        self._ray_started = False
        if uses_ray(config):
            # Also before anything is written: a bad --ray-address or noise_scales is one error line.
            from rlcontrol.distributed import noise_scales
            from rlcontrol.distributed.ray_collector import connect

            noise_scales(config)
            self._ray_started = connect(config)
        self._offline_rng = None
        # What replay stores: the env's observations, or (QT-Opt with a frozen image encoder) the
        # encoder's latents in place of images. Before anything is written: a missing or
        # mismatched encoder file is one error line.
        self.replay_obs_spec = replay_observation_spec(config, self.env.spec.observation)
        if self.replay_obs_spec is not self.env.spec.observation and uses_ray(config):
            self._disconnect()
            raise UserError("agent.frozen_encoder caches latents in the learner's replay: it runs with in-process "
                            "acting only (distributed.num_actors 1, no ray_address)")
        try:
            # Also before anything is written: a missing or damaged offline file is one error line.
            self.offline = self._load_offline()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.yaml")
            self.agent = make_agent(config, self.env.spec)
            self.replay = builders.make_replay(config, self.env.spec, obs_spec=self.replay_obs_spec)
            # In-process acting (distributed workers have their own accumulators and RNGs).
            self.accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
            self.rng = np.random.default_rng(config.seed)  # uniform actions before learning starts
            self.state = LoopState(next_eval_at=t.eval_every or t.total_env_steps,
                                   next_checkpoint_at=t.checkpoint_every, next_log_at=t.log_every)
            offsets = None
            if resume and latest is not None:
                offsets = self._restore(latest)
            self.sampler = self._make_sampler(fresh=offsets is None)
            self.logger = MetricsLogger(self.run_dir, resume_offsets=offsets,
                                        resume_step=self.state.env_steps if offsets else None)
        except BaseException:
            self._disconnect()
            raise
        self.logger.log_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```")
        self.collector = None  # made by run(): in process, or Ray actor workers
        # Throughput of this process's acting + learning (evaluation and checkpoints excluded).
        self.session_steps, self.session_seconds, self.last_sps = 0, 0.0, None
        self.session_updates = 0

    # ------------------------------------------------------------------ state

    def _restore(self, folder: Path) -> dict:
        agent_state, replay_path, saved = self.ckpts.load(folder)
        self.agent.load_state_dict(agent_state)
        from rlcontrol.replay.mixed import load_replay_file
        from rlcontrol.replay.prioritized import PrioritizedReplayBuffer

        try:
            # The class the checkpoint names: a pixel run saved before frame-pool replay existed
            # continues with the plain buffer it had (same transitions, same sampling).
            replay = load_replay_file(replay_path, device=self.config.train.device)
        except (OSError, ValueError) as exc:
            raise UserError(f"damaged checkpoint {folder.name}: replay buffer: {exc}") from None
        if isinstance(replay, PrioritizedReplayBuffer) != isinstance(self.replay, PrioritizedReplayBuffer):
            raise UserError(f"damaged checkpoint {folder.name}: replay buffer is a {type(replay).__name__}, "
                            f"the config needs a {type(self.replay).__name__}")
        self.replay = replay
        self.rng.bit_generator.state = saved["rng"]
        self.agent.noise_rng.bit_generator.state = saved["noise_rng"]
        self.state = LoopState(**saved["loop"])
        self._offline_rng = saved.get("offline_rng")
        return saved["log_sizes"]

    def _load_offline(self):
        """The replay.offline_replay buffer (None without one), checked against the task."""
        from rlcontrol.replay.mixed import check_compatible, check_normalized_actions, load_replay_file
        from rlcontrol.replay.obs_layout import ObsLayout
        from rlcontrol.vision.frozen_latents import check_latent_digest

        path = self.config.replay.offline_replay
        if path is None:
            return None
        try:
            offline = load_replay_file(path, device=self.config.train.device)
        except FileNotFoundError:
            recipe = self.config.replay.offline_replay_recipe
            how = (f"make it first: {recipe}" if recipe else
                   "make it first, e.g. from a ROS 2 recording with `rlcontrol bag-to-replay`")
            raise UserError(f"replay.offline_replay: file not found: {path}; {how}") from None
        except ValueError as exc:
            # (the message names the file)
            raise UserError(f"replay.offline_replay: {str(exc).splitlines()[0]}") from None
        try:
            layout = ObsLayout.from_spec(self.replay_obs_spec)
            check_latent_digest(list(offline.obs_layout.parts), list(layout.parts), path)
            check_compatible(offline, layout, self.env.spec.action_dim)
            check_normalized_actions(offline)
        except ValueError as exc:
            raise UserError(f"replay.offline_replay {path} does not fit {self.config.env.id}: {exc}") from None
        return offline

    def _make_sampler(self, fresh: bool):
        """What _learn samples from: the online replay, or a MixedSampler over it and the offline data."""
        if self.offline is None:
            return self.replay
        from rlcontrol.agents.learner import flatten_obs
        from rlcontrol.replay.mixed import MixedSampler

        sampler = MixedSampler(self.replay, self.offline, self.config.replay.offline_ratio)
        if self._offline_rng is not None:
            sampler.set_rng_state(self._offline_rng)
        normalizer = self.agent.normalizer
        if fresh and normalizer.enabled:
            # The running statistics start from the offline observations (a resumed run has them
            # in its checkpoint), so offline-only pretraining sees normalized inputs too.
            for obs in sampler.offline_observations():
                normalizer.update(flatten_obs(obs, 1).to(self.agent.device))
        return sampler

    def checkpoint(self) -> None:
        state_json = {"loop": self.state.__dict__, "rng": self.rng.bit_generator.state,
                      "noise_rng": self.agent.noise_rng.bit_generator.state, "log_sizes": self.logger.flush()}
        if self.offline is not None:
            state_json["offline_rng"] = self.sampler.rng_state()
        self.ckpts.save(self.state.env_steps, self.agent.state_dict(), self.replay, state_json)
        write_policy(self.agent, self.run_dir, self.state.env_steps)

    def policy(self, obs):
        return self.agent.act(obs, explore=False)

    def evaluate(self) -> None:
        returns = evaluate(self.eval_env, self.policy, self.config.train.eval_episodes, self.config.seed,
                           self.state.evals_done)
        self.state.evals_done += 1
        self.state.last_eval_return = float(np.mean(returns))
        # Training wall-clock so far (acting + learning, evaluations and checkpoints excluded): what
        # benchmarks compare as "minutes to reach a return".
        self.logger.log_eval(self.state.env_steps, returns, train_seconds=self.state.train_seconds)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        """Train to train.total_env_steps, then evaluate, checkpoint and write the artifacts."""
        t = self.config.train
        bar = _progress_bar(t.total_env_steps, self.state.env_steps, enabled=self.progress)
        metrics = {}
        try:
            if self.state.offline_pretrain_updates < self.config.replay.offline_pretrain_updates:
                metrics = self._pretrain_offline()
            self.collector = make_collector(self)
            self.collector.start()
            self._log_clock, self._log_steps = time.perf_counter(), self.state.env_steps
            while self.state.env_steps < t.total_env_steps:
                harvest, metrics = self._step(metrics)
                if self.state.env_steps >= self.state.next_log_at:
                    self._log_training(metrics, bar)
                if self.state.agent_steps % 50 < harvest.agent_steps:
                    bar.update(self.state.env_steps - bar.n)
                if harvest.episode_returns:
                    drawn = harvest.episode_randomization
                    for i, episode_return in enumerate(harvest.episode_returns):
                        self._end_episode(episode_return, drawn[i] if i < len(drawn) else None)
                    self.collector.episodes_handled()
                    bar.set_postfix_str(_postfix(self.last_sps, self.state), refresh=False)
            bar.update(self.state.env_steps - bar.n)
            bar.close()
            self.collector.close()  # actor workers stop before the final evaluation
            self.evaluate()
            self.checkpoint()
        finally:
            bar.close()
            self.logger.close()
            self.close()
        return self._finish()

    def close(self) -> None:
        """Stop actor workers and a Ray session this trainer started (run() does it itself)."""
        if self.collector is not None:
            self.collector.close()
        self._disconnect()

    def _disconnect(self) -> None:
        if self._ray_started:
            from rlcontrol.distributed.ray_collector import disconnect

            self._ray_started = False
            disconnect(True)

    def _step(self, metrics: dict):
        """Collect (one agent step in process, one chunk from an actor worker), learn. Returns
        (Harvest, latest metrics)."""
        tick = time.perf_counter()
        state = self.state
        harvest = self.collector.collect()
        before = state.env_steps
        state.env_steps += harvest.env_steps
        state.agent_steps += harvest.agent_steps
        if state.env_steps >= self.config.train.learning_starts:
            metrics = self._learn(self._learning_steps(before, harvest.agent_steps), metrics)
        elapsed = time.perf_counter() - tick
        state.train_seconds += elapsed
        self.session_seconds += elapsed
        self.session_steps += harvest.env_steps
        return harvest, metrics

    def _learning_steps(self, before: int, agent_steps: int) -> int:
        """Agent steps of a harvest that ended at or after learning_starts (env steps counted after
        each step, as the single-process loop does): all of them, except in the harvest that
        crosses learning_starts. In process (one step per harvest) this is always 1."""
        starts, repeat = self.config.train.learning_starts, self.config.env.action_repeat
        if before >= starts:
            return agent_steps
        early = -(-(starts - before) // repeat) - 1  # steps still short of learning_starts
        return max(0, agent_steps - early)

    def _learn(self, agent_steps: int, metrics: dict) -> dict:
        """`updates_per_step` updates per agent step collected since learning started."""
        agent, sampler, batch_size = self.agent, self.sampler, self.config.agent.batch_size
        # The online replay alone (the default), or a MixedSampler with offline data (its share
        # of online rows must be there).
        ready = len(self.replay) >= batch_size if self.offline is None else sampler.ready(batch_size)
        if ready:
            updates = self.config.train.updates_per_step * agent_steps
            for _ in range(updates):
                batch = sampler.sample(batch_size)
                metrics = agent.update(batch)
                if self.config.replay.prioritized:
                    sampler.update_priorities(batch.indices, metrics["priority"])
            self.session_updates += updates
        return metrics

    def _pretrain_offline(self) -> dict:
        """replay.offline_pretrain_updates updates on offline data alone, before any collection
        (QT-Opt's offline phase). Not checkpointed midway: an interrupted run starts it again.
        Not counted in the run's throughput figures (updates_per_s, env_steps_per_s)."""
        total, batch_size = self.config.replay.offline_pretrain_updates, self.config.agent.batch_size
        metrics = {}
        while self.state.offline_pretrain_updates < total:
            batch = self.sampler.sample_offline(batch_size)
            metrics = self.agent.update(batch)
            if self.config.replay.prioritized and hasattr(self.offline, "update_priorities"):
                self.offline.update_priorities(batch.indices, metrics["priority"])
            self.state.offline_pretrain_updates += 1
        scalars = {f"offline_pretrain/{k}": v.item() for k, v in metrics.items() if k != "priority"}
        self.logger.log(self.state.env_steps, scalars | {"offline_pretrain/updates": total})
        return metrics

    def _log_training(self, metrics: dict, bar) -> None:
        now = time.perf_counter()
        sps = self.last_sps = (self.state.env_steps - self._log_steps) / max(now - self._log_clock, 1e-9)
        self._log_clock, self._log_steps = now, self.state.env_steps
        scalars = {f"losses/{k}": v.item() for k, v in metrics.items() if k != "priority"}
        self.logger.log(self.state.env_steps, scalars | {"charts/SPS": sps})
        # One period on; more when a whole actor chunk crossed several (in process: always one).
        every = self.config.train.log_every
        self.state.next_log_at += every * (1 + max(0, self.state.env_steps - self.state.next_log_at) // every)
        bar.set_postfix_str(_postfix(sps, self.state), refresh=False)

    def _end_episode(self, episode_return: float, randomization: dict | None = None) -> None:
        """Log the episode (and the world env.randomization drew for it, as randomization/<name>);
        evaluate and checkpoint when due (always on an episode boundary)."""
        state, t = self.state, self.config.train
        state.episodes += 1
        state.recent_returns = (state.recent_returns + [episode_return])[-10:]
        drawn = {f"randomization/{k}": v for k, v in (randomization or {}).items()}
        self.logger.log(state.env_steps, {"charts/episodic_return": episode_return} | drawn)
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
            "updates_per_s": round(self.session_updates / max(self.session_seconds, 1e-9), 2),
            "eval_return": state.last_eval_return,
            "recent_train_return": float(np.mean(state.recent_returns)) if state.recent_returns else None,
            **(self.collector.stats() if self.collector is not None else {"num_actors": 1, "restarts": 0}),
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
