"""Where the training loop's experience comes from: collectors.

The one off-policy loop (rlcontrol/training/loop.py) asks its collector for a `Harvest`,
counts its steps, learns `updates_per_step` x its agent steps, and handles the episodes that
ended in it. A collector owns acting and putting transitions into replay:

* `InProcessCollector` (distributed.num_actors: 1, the default): one agent step per harvest in
  the trainer's own environment with the trainer's own agent, exactly the classic loop
  (act, env.step, observe, n-step accumulate, replay.add).
* `RayCollector` (rlcontrol/distributed/ray_collector.py; num_actors > 1 or a ray_address):
  one chunk of `chunk_steps` agent steps from one of K Ray actor workers per harvest, added to
  replay as a whole.

Collector protocol: `start()`, `collect() -> Harvest`, `episodes_handled()` (called after the
trainer logged, evaluated and checkpointed the episodes that ended in the last harvest),
`stats() -> dict` (for summary.json) and `close()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlcontrol.training.evaluate import episode_seed


@dataclass(slots=True)
class Harvest:
    """What one `collect()` brought in (already stored in replay). Not frozen: one is made per
    agent step in process, and a frozen dataclass's __init__ costs twice as much."""

    agent_steps: int
    env_steps: int
    episode_returns: tuple[float, ...] = ()
    worker: int = 0
    transitions: int = 0
    # env.sampled of each ended episode (env.randomization), aligned with episode_returns; () without it.
    episode_randomization: tuple[dict, ...] = ()


def start_episode(env, agent, seed: int, episode: int):
    """Reset `env` for training episode `episode` of the run, reset the noise, observe obs_0."""
    obs = env.reset(seed=episode_seed(seed, 0, episode))
    agent.reset_noise()
    agent.observe(obs)
    return obs


def episode_randomization(env) -> tuple[dict, ...]:
    """(the values env.randomization drew for the episode that just ended,) or () for an env
    without randomization (sim2real.randomization.RandomizedEnv.sampled)."""
    sampled = getattr(env, "sampled", None)
    return (dict(sampled),) if sampled else ()


class InProcessCollector:
    """One agent step per `collect()` in the trainer's environment (no Ray, no extra process).

    Uses the trainer's agent, replay, n-step accumulator, uniform-action RNG and loop state, so
    a run and its checkpoints are exactly those of the classic single-process loop. A new episode starts in
    `episodes_handled()`, after the trainer has checkpointed the one that ended: a checkpoint
    never contains the next episode's first observation, which is what makes resume exact.
    """

    num_actors = 1

    def __init__(self, trainer):
        self.config, self.env, self.agent = trainer.config, trainer.env, trainer.agent
        self.replay, self.rng, self.state = trainer.replay, trainer.rng, trainer.state
        self.accumulator = trainer.accumulator
        self._obs = None
        self._return = 0.0
        self._repeat = self.config.env.action_repeat
        self._learning_starts = self.config.train.learning_starts
        self._action_dim = self.env.spec.action_dim

    def start(self) -> None:
        self._obs = start_episode(self.env, self.agent, self.config.seed, self.state.episodes)

    def collect(self) -> Harvest:
        obs, agent = self._obs, self.agent
        if self.state.env_steps < self._learning_starts:
            action = self.rng.uniform(-1.0, 1.0, self._action_dim).astype(np.float32)
        else:
            action = agent.act(obs, explore=True)
        result = self.env.step(action)
        agent.observe(result.obs)
        # Replay-space observations: what the env gave, or cached latents (QT-Opt, frozen encoder).
        to_replay = getattr(agent, "replay_observation", None) or (lambda o: o)
        emitted = self.accumulator.add(to_replay(obs), action, result.reward, to_replay(result.obs),
                                       result.terminated, result.truncated)
        for transition in emitted:
            self.replay.add(transition)
        self._return += result.reward
        returns, drawn = (), ()
        if result.terminated or result.truncated:
            returns, self._return = (self._return,), 0.0
            drawn = episode_randomization(self.env)
        self._obs = result.obs
        return Harvest(1, self._repeat, returns, 0, len(emitted), drawn)

    def episodes_handled(self) -> None:
        self._obs = start_episode(self.env, self.agent, self.config.seed, self.state.episodes)
        self.accumulator.reset()

    def stats(self) -> dict:
        return {"num_actors": 1, "restarts": 0}

    def close(self) -> None:
        pass


def uses_ray(config) -> bool:
    """Ray actors when more than one actor is asked for, or a Ray cluster is named."""
    d = config.distributed
    return d.num_actors > 1 or d.ray_address is not None


def make_collector(trainer):
    """The collector `trainer.config` asks for (Ray is imported only when it is needed)."""
    if uses_ray(trainer.config):
        from rlcontrol.distributed.ray_collector import RayCollector

        return RayCollector(trainer)
    return InProcessCollector(trainer)
