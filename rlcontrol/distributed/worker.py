"""One actor worker: its own environment, a copy of the policy for acting, its own exploration noise.

`ActorWorker` is a plain Python class (tested without Ray); `RayActorWorker` is the same
class as it runs inside a Ray actor process. A worker never learns: it acts with the weights
the learner last published, turns its steps into n-step transitions with its own
`NStepAccumulator` and hands them over in chunks:

    collect(n, learning_started) -> {
        "worker": int, "pid": int, "version": int (the weights version it acted with),
        "agent_steps": n, "env_steps": n * action_repeat,
        "episode_returns": [float, ...]   (episodes that ended inside this chunk),
        "episode_randomization": [dict, ...]  (env.randomization's draws for those episodes; [] without it),
        "transitions": {"obs", "action", "reward", "discount", "next_obs"} with a leading dim T
                       (dict observations stay dicts of stacked parts), or None when T == 0,
        "observed": every raw observation seen, stacked (episode starts included), for the
                    learner's running normalizer; None unless agent.obs_norm,
    }

Episodes run across chunk boundaries (the accumulator keeps its pending window), so a chunk's
T differs from n by the windows still open at its start and end.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from rlcontrol.config import Config
from rlcontrol.distributed.collector import episode_randomization
from rlcontrol.errors import UserError

DISTRIBUTED_STREAM = 2  # seed stream of actor workers (0: in-process training, 1: evaluation)


def noise_scales(config: Config, num_actors: int | None = None) -> list[float]:
    """Per-worker multipliers of agent.exploration_sigma.

    distributed.noise_scales when given (one per worker); otherwise spread geometrically from
    0.5x to 2x across the workers (Ape-X/D4PG use a spread of noise levels so the replay holds
    both near-greedy and broadly exploring data), and 1x for a single worker.
    """
    k = config.distributed.num_actors if num_actors is None else num_actors
    given = config.distributed.noise_scales
    if given is not None:
        if len(given) != k:
            raise UserError(f"distributed.noise_scales has {len(given)} entries for {k} actors; "
                            "give one per actor or leave it out (0.5x to 2x)")
        return [float(s) for s in given]
    if k == 1:
        return [1.0]
    return [0.5 * 4.0 ** (i / (k - 1)) for i in range(k)]


def worker_seed(seed: int, index: int, start_env_steps: int = 0, incarnation: int = 0) -> int:
    """Seed of worker `index` of a run: derived from the run seed, and from the env steps the
    learner had when it started the workers (so a resumed run's fresh workers play new episodes)."""
    entropy = [seed, DISTRIBUTED_STREAM, index, start_env_steps, incarnation]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)  # < 2**31: fits torch and gym


def _copy_obs(obs):
    if isinstance(obs, Mapping):
        return {k: np.array(v, copy=True) for k, v in obs.items()}
    return np.array(obs, copy=True)


def stack_obs(items: list):
    """A list of observations (arrays, or dicts of arrays) -> one stacked array / dict of them."""
    if isinstance(items[0], Mapping):
        return {k: np.stack([o[k] for o in items]) for k in items[0]}
    return np.stack(items)


def stack_transitions(transitions: list[dict]) -> dict | None:
    """NStepAccumulator outputs -> one dict for `ReplayBuffer.add_batch` (None for none).

    reward and discount stay float64 here: replay casts them to float32 exactly as `add` does."""
    if not transitions:
        return None
    return {
        "obs": stack_obs([t["obs"] for t in transitions]),
        "action": np.stack([t["action"] for t in transitions]).astype(np.float32, copy=False),
        "reward": np.array([t["reward"] for t in transitions], dtype=np.float64),
        "discount": np.array([t["discount"] for t in transitions], dtype=np.float64),
        "next_obs": stack_obs([t["next_obs"] for t in transitions]),
    }


class ActorWorker:
    """Acts in its own environment with the latest published policy; returns n-step chunks.

    Args:
        config: the run's config (the worker acts on the CPU and never compiles, whatever
            train.device and train.compile say; those are the learner's).
        index: this worker's number, 0..num_actors-1.
        noise_scale: multiplier of agent.exploration_sigma for this worker's behaviour noise.
        start_env_steps, incarnation: mixed into the worker's seed (see `worker_seed`).
    """

    def __init__(self, config: Config, index: int, noise_scale: float = 1.0, start_env_steps: int = 0,
                 incarnation: int = 0):
        from rlcontrol.agents import make_agent
        from rlcontrol.replay import NStepAccumulator
        from rlcontrol.training import builders

        self.index = index
        self.seed = worker_seed(config.seed, index, start_env_steps, incarnation)
        self.env = builders.make_env(config.env, self.seed)
        acting = dataclasses.replace(config, seed=self.seed,
                                     train=dataclasses.replace(config.train, device="cpu", compile=False,
                                                                 cuda_graphs=False))
        self.agent = make_agent(acting, self.env.spec)
        self.noise_scale = float(noise_scale)
        self.agent.noise.sigma = config.agent.exploration_sigma * self.noise_scale
        self.accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
        self.rng = np.random.default_rng(self.seed)  # uniform actions before learning starts
        self.action_repeat = config.env.action_repeat
        self.record_observed = bool(config.agent.obs_norm)
        self.version = -1  # no weights applied yet: acting with the initialisation
        self._pending: tuple[int, object] | None = None
        self.episodes = 0
        self._obs = None
        self._return = 0.0

    # ------------------------------------------------------------------ weights

    def set_weights(self, version: int, policy_state) -> None:
        """Store published weights; they take effect at the start of the next chunk, so acting
        never waits for them. A newer version replaces one not yet applied."""
        if self._pending is None or version > self._pending[0]:
            self._pending = (int(version), policy_state)

    def _resolve(self, policy_state):
        """The policy state dict itself (the Ray worker receives a reference and fetches it here)."""
        return policy_state

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        version, state = self._pending
        self._pending = None
        if version > self.version:
            self.agent.load_policy_state_dict(torch_policy_state(self._resolve(state)))
            self.version = version

    # ------------------------------------------------------------------ acting

    def _start_episode(self, observed: list) -> None:
        from rlcontrol.training.evaluate import episode_seed

        self._obs = self.env.reset(seed=episode_seed(self.seed, 0, self.episodes))
        self.agent.reset_noise()
        self.accumulator.reset()
        self._return = 0.0
        if self.record_observed:
            observed.append(_copy_obs(self._obs))

    def collect(self, n_agent_steps: int, learning_started: bool) -> dict:
        """Act for `n_agent_steps` agent steps (uniform random actions unless `learning_started`,
        which the learner decides from its global env step count) and return the chunk."""
        self._apply_pending()
        transitions: list[dict] = []
        observed: list = []
        returns: list[float] = []
        drawn: list[dict] = []
        action_dim = self.env.spec.action_dim
        for _ in range(int(n_agent_steps)):
            if self._obs is None:
                self._start_episode(observed)
            obs = self._obs
            if learning_started:
                action = self.agent.act(obs, explore=True)
            else:
                action = self.rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
            result = self.env.step(action)
            if self.record_observed:
                observed.append(_copy_obs(result.obs))
            transitions.extend(self.accumulator.add(obs, action, result.reward, result.obs, result.terminated,
                                                    result.truncated))
            self._return += result.reward
            if result.terminated or result.truncated:
                returns.append(float(self._return))
                drawn.extend(episode_randomization(self.env))
                self.episodes += 1
                self._obs = None
            else:
                self._obs = result.obs
        return {
            "worker": self.index,
            "pid": os.getpid(),
            "version": self.version,
            "agent_steps": int(n_agent_steps),
            "env_steps": int(n_agent_steps) * self.action_repeat,
            "episode_returns": returns,
            "episode_randomization": drawn,
            "transitions": stack_transitions(transitions),
            "observed": stack_obs(observed) if observed else None,
        }

    # ------------------------------------------------------------------ introspection

    def info(self) -> dict:
        return {"worker": self.index, "pid": os.getpid(), "seed": self.seed, "version": self.version,
                "noise_sigma": float(self.agent.noise.sigma), "episodes": self.episodes}

    def close(self) -> None:
        self.env.close()


class RayActorWorker(ActorWorker):
    """`ActorWorker` inside a Ray actor process: one torch thread, weights fetched by reference.

    The learner `ray.put`s each published policy state once and sends every worker the
    reference wrapped in a list (so Ray does not fetch it before `set_weights` runs); only the
    version a worker actually applies is fetched. A worker Ray restarts after a crash is built
    again from the same arguments; it mixes a fresh incarnation into its seed so it does not
    replay the episodes of its previous life, and waits for the learner to resend the weights.
    """

    def __init__(self, config: Config, index: int, noise_scale: float = 1.0, start_env_steps: int = 0):
        import ray
        import torch

        torch.set_num_threads(1)  # K workers on K cores: no oversubscription from intra-op threads
        incarnation = 0
        if ray.get_runtime_context().was_current_actor_reconstructed:
            incarnation = int(np.random.SeedSequence().entropy % (2**62)) + 1
        super().__init__(config, index, noise_scale, start_env_steps, incarnation)

    def _resolve(self, policy_state):
        import ray

        if isinstance(policy_state, list) and len(policy_state) == 1 and isinstance(policy_state[0], ray.ObjectRef):
            return ray.get(policy_state[0])
        return policy_state

    def ready(self) -> int:
        return os.getpid()


def numpy_policy_state(state: Mapping) -> dict:
    """A policy state dict with every tensor as a CPU numpy array (nested dicts kept)."""
    out = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out[key] = numpy_policy_state(value)
        elif hasattr(value, "detach"):
            out[key] = value.detach().cpu().numpy()
        else:
            out[key] = value
    return out


def torch_policy_state(state: Mapping) -> dict:
    """Inverse of `numpy_policy_state` (arrays copied: Ray's zero-copy arrays are read-only)."""
    import torch

    out = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out[key] = torch_policy_state(value)
        elif isinstance(value, np.ndarray):
            out[key] = torch.tensor(value)
        else:
            out[key] = value
    return out


__all__ = ["ActorWorker", "RayActorWorker", "noise_scales", "numpy_policy_state", "stack_transitions",
           "torch_policy_state", "worker_seed"]
