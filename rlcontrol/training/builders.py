"""Build the environment and replay a config describes, turning bad names into UserErrors."""

from __future__ import annotations

from rlcontrol.config import Config, EnvConfig
from rlcontrol.errors import UserError

# EnvConfig fields that make_env passes itself: env.kwargs may not set them a second time.
_MAKE_ARGS = ("seed", "action_repeat", "obs_format", "pixels", "pixel_size", "max_episode_steps")


def make_env(env_cfg: EnvConfig, seed: int, *, evaluation: bool = False):
    """The env of `env_cfg`, randomized (env.randomization) unless it is for `evaluation` and
    env.randomize_eval is off."""
    env = _make_task(env_cfg, seed)
    randomization = env_cfg.randomization
    if randomization is None or not randomization.enabled or (evaluation and not env_cfg.randomize_eval):
        return env
    from sim2real.randomization import RandomizedEnv

    try:
        return RandomizedEnv(env, randomization, seed=seed)
    except ValueError as exc:
        # A parameter, observation entry or image the task does not have (the message names the env).
        env.close()
        raise UserError(f"env.randomization: {exc}") from None


def _make_task(env_cfg: EnvConfig, seed: int):
    import envs

    kwargs = dict(env_cfg.kwargs)
    clash = sorted(set(kwargs) & set(_MAKE_ARGS))
    if clash:
        raise UserError(f"env.kwargs sets {', '.join(clash)}: set "
                        f"{', '.join('the run seed' if k == 'seed' else 'env.' + k for k in clash)} instead")
    try:
        return envs.make(env_cfg.id, seed=seed, action_repeat=env_cfg.action_repeat, obs_format=env_cfg.obs_format,
                         pixels=env_cfg.pixels, pixel_size=env_cfg.pixel_size,
                         max_episode_steps=env_cfg.max_episode_steps, **kwargs)
    except (envs.UnknownEnvError, ValueError) as exc:
        # Unknown ids, discrete action spaces, unbounded actions: the user's choice of task.
        raise UserError(f"env {env_cfg.id!r}: {exc}" if env_cfg.id not in str(exc) else str(exc)) from None
    except TypeError as exc:
        if not kwargs:
            raise
        # An unknown or mistyped keyword in env.kwargs: the task's constructor says which.
        raise UserError(f"env {env_cfg.id!r}: env.kwargs {kwargs!r} rejected: {exc}") from None


def total_updates(config: Config) -> int:
    t = config.train
    learning_steps = max(0, t.total_env_steps - t.learning_starts) // config.env.action_repeat
    return max(1, learning_steps * t.updates_per_step)


def make_replay(config: Config, env_spec, obs_spec=None):
    """The run's replay; obs_spec what it stores when not the env's observations (cached latents)."""
    from rlcontrol.replay import make_replay as _make

    r = config.replay
    stored = env_spec.observation if obs_spec is None else obs_spec
    return _make(r.capacity, stored, env_spec.action_dim, prioritized=r.prioritized, alpha=r.alpha,
                 beta0=r.beta0, beta_steps=r.beta_steps or total_updates(config), eps=r.eps, seed=config.seed,
                 device=config.train.device)
