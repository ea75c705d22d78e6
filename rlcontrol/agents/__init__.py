"""Agents. `make_agent(config, env_spec)` builds the one the config names."""

from __future__ import annotations

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.agents.qtopt.agent import QTOptAgent
from rlcontrol.errors import ConfigError

ALGORITHMS = ("ddpg", "td3", "d4pg", "sac", "qtopt")


def make_agent(config, env_spec) -> DeterministicPolicyAgent | QTOptAgent:
    """Build the agent for `config.algo` on an environment with `env_spec`."""
    if config.algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {config.algo!r}")
    kwargs = {"seed": config.seed, "device": config.train.device, "prioritized": config.replay.prioritized,
              "compile": config.train.compile}
    try:
        if config.algo == "qtopt":
            return QTOptAgent(config.agent, env_spec.observation, env_spec.action_dim, **kwargs)
        return DeterministicPolicyAgent(config.algo, config.agent, env_spec.observation, env_spec.action_dim,
                                        cuda_graphs=config.train.cuda_graphs, **kwargs)
    except ValueError as exc:  # a network the config describes cannot be built for this task
        raise ConfigError(f"agent: {exc}") from None


def replay_observation_spec(config, obs_spec):
    """What replay stores for this config: `obs_spec` itself, or (QT-Opt with agent.frozen_encoder)
    the spec with the image replaced by the encoder's latents. ConfigError (one line) for a missing
    or mismatched encoder file."""
    if config.algo != "qtopt" or not config.agent.frozen_encoder:
        return obs_spec
    from rlcontrol.agents.qtopt.agent import replay_space

    try:
        return replay_space(config.agent, obs_spec)[0]
    except ValueError as exc:
        raise ConfigError(f"agent.{exc}" if str(exc).startswith("frozen_encoder") else f"agent.frozen_encoder: {exc}") \
            from None


__all__ = ["ALGORITHMS", "DeterministicPolicyAgent", "QTOptAgent", "make_agent", "replay_observation_spec"]
