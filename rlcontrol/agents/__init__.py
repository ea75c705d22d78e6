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


__all__ = ["ALGORITHMS", "DeterministicPolicyAgent", "QTOptAgent", "make_agent"]
