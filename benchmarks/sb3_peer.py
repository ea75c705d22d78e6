"""The Stable-Baselines3 SAC peer used by benchmarks/sample_efficiency.py.

`RlcGymEnv`, a gymnasium view of rlcontrol's own environment (`envs.make`), and `train_sb3`: one
SB3 SAC run built from an rlcontrol config, evaluated with rlcontrol's protocol, checkpointed and
resumable. sample_efficiency.py runs it in a subprocess (`--_sb3-worker`); its module docstring
describes what the SB3 arm takes from the config and how it is compared.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

EVAL_EPISODES = 10  # episodes per evaluation, both arms of the benchmark


class BenchError(Exception):
    """Bad input or an unusable run dir: one line on stderr, exit code 2."""


def has_state_observations(config) -> bool:
    """Whether the config's env gives flat state observations (the SB3 arm needs them)."""
    return not (config.env.pixels or config.env.obs_format != "flat")


def _rlc_gym_env_class():
    import gymnasium as gym
    import numpy as np

    from rlcontrol.training.evaluate import episode_seed

    class RlcGymEnv(gym.Env):
        """A gymnasium view of an rlcontrol `envs.make` environment (flat observations).

        Actions are rlcontrol's normalized actions (Box [-1, 1]^action_dim, mapped onto the
        physical bounds by the env itself); observations, rewards (summed over the action repeat),
        `terminated` and `truncated` are exactly the env's. `reset(seed=None)` starts episode k
        (k = episodes completed so far) with `episode_seed(episode_seed_base, 0, k)`, the seed
        rlcontrol's training loop gives its k-th episode, so both libraries see the same initial
        states; an explicit `reset(seed=s)` uses s.
        """

        metadata = {"render_modes": []}

        def __init__(self, env_id: str, seed: int, action_repeat: int = 1, episode_seed_base: int | None = None,
                     max_episode_steps: int | None = None):
            import envs

            self.env = envs.make(env_id, seed=seed, action_repeat=action_repeat, max_episode_steps=max_episode_steps)
            spec = self.env.spec
            if isinstance(spec.observation, dict):
                raise ValueError(f"{env_id}: RlcGymEnv needs flat observations")
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=spec.observation.shape, dtype=np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(spec.action_dim,), dtype=np.float32)
            self.spec_rlc = spec
            self.episode_seed_base = seed if episode_seed_base is None else episode_seed_base
            self.episodes_completed = 0

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            if seed is None:
                seed = episode_seed(self.episode_seed_base, 0, self.episodes_completed)
            return self.env.reset(seed=seed), {}

        def step(self, action):
            result = self.env.step(np.asarray(action, dtype=np.float32))
            if result.terminated or result.truncated:
                self.episodes_completed += 1
            return result.obs, float(result.reward), bool(result.terminated), bool(result.truncated), dict(result.info)

        def close(self):
            self.env.close()

    return RlcGymEnv


def make_gym_env(env_id: str, seed: int, action_repeat: int = 1, episode_seed_base: int | None = None,
                 max_episode_steps: int | None = None):
    """`RlcGymEnv` (see _rlc_gym_env_class): imported lazily, so the CLI's input checks stay fast."""
    return _rlc_gym_env_class()(env_id, seed, action_repeat, episode_seed_base, max_episode_steps)


SB3_DEFAULT_LR = 3e-4


def sb3_hyperparameters(config, total_agent_steps: int, learning_starts: int | None = None) -> dict:
    """SAC keyword arguments from an rlcontrol config (see benchmarks/sample_efficiency.py's docstring)."""
    agent, repeat = config.agent, config.env.action_repeat
    starts_env = config.train.learning_starts if learning_starts is None else learning_starts
    return {
        # SB3's own default (3e-4): the peer is SB3 SAC as users run it, with only the network sizes,
        # batch, action repeat, gamma, tau and learning_starts matched to the config.
        "learning_rate": SB3_DEFAULT_LR,
        "buffer_size": int(min(config.replay.capacity, max(total_agent_steps, 1))),
        "learning_starts": int(starts_env // repeat),
        "batch_size": int(agent.batch_size),
        "tau": float(agent.tau),
        "gamma": float(agent.gamma),
        "train_freq": 1,
        "gradient_steps": 1,
        "ent_coef": "auto",
        "policy_kwargs": {"net_arch": {"pi": [int(w) for w in agent.actor_hidden],
                                       "qf": [int(w) for w in agent.critic_hidden]}},
    }


def _evaluate_sb3(model, eval_env, episodes: int, seed: int, round_index: int) -> list[float]:
    """rlcontrol's protocol (training/evaluate.py): deterministic actions, evaluation episode seeds."""
    from rlcontrol.training.evaluate import episode_seed

    returns = []
    for i in range(episodes):
        obs, _ = eval_env.reset(seed=episode_seed(seed, 1, round_index * 1000 + i))
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return returns


def _latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = sorted(p for p in ckpt_root.glob("[0-9]*") if p.is_dir() and (p / "state.json").exists())
    return done[-1] if done else None


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _save_sb3_checkpoint(ckpt_root: Path, model, state: dict, keep: int = 2) -> Path:
    """model.zip + replay.pkl + state.json into a temp folder, fsynced, then renamed into place
    (a rename is atomic: a reader sees the whole checkpoint or none of it); older ones are pruned."""
    from rlcontrol.training.atomic import fsync_dir

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{state['env_steps']:012d}"
    tmp = ckpt_root / f".tmp-{state['env_steps']}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.zip")
    model.save_replay_buffer(tmp / "replay.pkl")
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    for name in ("model.zip", "replay.pkl", "state.json"):
        _fsync_file(tmp / name)
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(ckpt_root)
    for old in sorted(p for p in ckpt_root.glob("[0-9]*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _due_points(start: int, end: int, every: int) -> set[int]:
    if every <= 0:
        return set()
    return set(range((start // every + 1) * every, end + 1, every))


def _open_sb3_run(run_dir: Path, train_env, hyper: dict, identity: dict, steps: int, seed: int):
    """(model, state): continued from run_dir's last checkpoint, or new."""
    from stable_baselines3.common.logger import Logger

    latest = _latest_checkpoint(run_dir / "checkpoints")
    model, state = _new_or_loaded(run_dir, latest, train_env, hyper, identity, steps, seed)
    # No SB3 log output (its default makes an empty /tmp/SB3-<date> folder on every learn()).
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model, state


def _new_or_loaded(run_dir: Path, latest, train_env, hyper: dict, identity: dict, steps: int, seed: int):
    from stable_baselines3 import SAC
    from stable_baselines3.common.utils import set_random_seed

    if latest is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        # SAC(seed=...) would also seed the env's first reset; episode seeds come from RlcGymEnv instead.
        set_random_seed(seed)
        # (a deep copy: SAC adds keys to policy_kwargs, and `hyper` is part of the run's identity)
        model = SAC("MlpPolicy", train_env, device="cpu", verbose=0, **copy.deepcopy(hyper))
        model.action_space.seed(seed)
        state = {"identity": identity, "env_steps": 0, "episodes_completed": 0, "train_seconds": 0.0,
                 "evals_done": 0, "curve": [], "eval_returns": []}
        return model, state
    state = json.loads((latest / "state.json").read_text())
    if state["identity"] != identity:
        raise BenchError(f"{run_dir} holds an SB3 run with other settings ({state['identity']}); "
                         "use another --out or delete it")
    if state["env_steps"] > steps:
        raise BenchError(f"{run_dir} holds an SB3 run of {state['env_steps']} env steps, more than {steps}")
    # Pickle (inside SB3's model zip and replay file) is acceptable here: these are the benchmark's
    # own checkpoints, written by train_sb3 into its own run dir, never files received from users.
    model = SAC.load(latest / "model.zip", env=train_env, device="cpu")
    model.load_replay_buffer(latest / "replay.pkl")
    if model.replay_buffer.buffer_size < hyper["buffer_size"]:
        raise BenchError(f"{run_dir}: its replay buffer holds {model.replay_buffer.buffer_size} transitions, "
                         f"a run of {steps} env steps needs {hyper['buffer_size']}; use another --out")
    # Continue at the checkpoint's episode boundary: learn() starts a fresh episode with the seed of
    # the episode that followed it (episodes_completed), as the uninterrupted run did.
    model._last_obs = None
    train_env.episodes_completed = state["episodes_completed"]
    return model, state


def train_sb3(config_path: str | Path, run_dir: str | Path, seed: int, steps: int, eval_every: int,
              threads: int = 1, eval_episodes: int = EVAL_EPISODES, overrides: list[str] | None = None,
              learning_starts: int | None = None, stop_after: int | None = None) -> dict:
    """Train SB3 SAC on the config's task to `steps` env steps (resuming run_dir's last checkpoint).

    Evaluates every `eval_every` env steps (< steps) and at `steps`; checkpoints every
    train.checkpoint_every env steps. `learning_starts` (env steps) overrides the config's;
    `stop_after` (env steps, for tests) checkpoints there and returns early, as an interruption
    would. Returns the run's summary (also written to run_dir/summary.json at the end).
    """
    import numpy as np
    import torch

    from rlcontrol.config import load_config
    from rlcontrol.training.atomic import atomic_write_text

    if threads:
        torch.set_num_threads(threads)
    config = load_config(config_path, overrides)
    if not has_state_observations(config):
        raise BenchError(f"{config_path}: the SB3 arm needs state observations (env.pixels false, obs_format flat)")
    repeat = config.env.action_repeat
    total_agent = math.ceil(steps / repeat)
    steps = total_agent * repeat
    hyper = sb3_hyperparameters(config, total_agent, learning_starts)
    run_dir = Path(run_dir)
    # What must match for a run dir to be continued or read back (its length may grow).
    identity = {"config": Path(config_path).name, "env": config.env.id, "action_repeat": repeat, "seed": seed,
                "eval_every": eval_every, "eval_episodes": eval_episodes,
                "hyperparameters": {k: v for k, v in hyper.items() if k != "buffer_size"}}
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        if done.get("identity") == identity and done.get("env_steps") == steps:
            return done  # finished before: read back, not retrained

    train_env = make_gym_env(config.env.id, seed, repeat, episode_seed_base=seed,
                             max_episode_steps=config.env.max_episode_steps)
    eval_env = make_gym_env(config.env.id, seed + 1, repeat, max_episode_steps=config.env.max_episode_steps)
    model, state = _open_sb3_run(run_dir, train_env, hyper, identity, steps, seed)
    env_steps = int(model.num_timesteps) * repeat
    session_start_steps, session_seconds = env_steps, 0.0
    evals = _due_points(env_steps, steps - 1, eval_every)
    ckpts = _due_points(env_steps, steps, config.train.checkpoint_every)
    stops = {s for s in (stop_after,) if s is not None and env_steps < s < steps}

    for boundary in sorted(evals | ckpts | stops | {steps}):
        agent_steps = math.ceil(boundary / repeat) - model.num_timesteps
        if agent_steps > 0:
            tick = time.perf_counter()
            model.learn(total_timesteps=agent_steps, reset_num_timesteps=False, progress_bar=False)
            elapsed = time.perf_counter() - tick
            state["train_seconds"] += elapsed
            session_seconds += elapsed
        env_steps = state["env_steps"] = int(model.num_timesteps) * repeat
        state["episodes_completed"] = train_env.episodes_completed
        # (The final evaluation may already be in a checkpoint written just before an interruption.)
        if boundary in evals or (boundary == steps and not (state["curve"] and state["curve"][-1][0] == steps)):
            returns = _evaluate_sb3(model, eval_env, eval_episodes, seed, state["evals_done"])
            state["evals_done"] += 1
            state["curve"].append([env_steps, round(state["train_seconds"], 3), float(np.mean(returns))])
            state["eval_returns"].append(returns)
            atomic_write_text(run_dir / "evals.json", json.dumps(state["curve"]) + "\n")
        if boundary in ckpts or boundary in stops or boundary == steps:
            _save_sb3_checkpoint(run_dir / "checkpoints", model, state)
        if boundary in stops:
            return {"status": "stopped", "env_steps": env_steps, "curve": state["curve"]}

    summary = {
        "run_dir": str(run_dir), "algo": "sb3-sac", "env": config.env.id, "seed": seed, "env_steps": env_steps,
        "episodes": train_env.episodes_completed,
        "env_steps_per_s": round((env_steps - session_start_steps) / max(session_seconds, 1e-9), 2),
        "eval_return": state["curve"][-1][2], "train_seconds": round(state["train_seconds"], 3),
        "curve": state["curve"], "identity": identity, "sb3_hyperparameters": hyper,
    }
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    train_env.close()
    eval_env.close()
    return summary
