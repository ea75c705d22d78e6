"""Agents. `make_agent(config, env_spec)` builds the one the config names."""

from __future__ import annotations

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.agents.qtopt.agent import QTOptAgent
from rlcontrol.errors import ConfigError

ALGORITHMS = ("ddpg", "td3", "d4pg", "qtopt")


def make_agent(config, env_spec) -> DeterministicPolicyAgent | QTOptAgent:
    """Build the agent for `config.algo` on an environment with `env_spec`."""
    if config.algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {config.algo!r}")
    kwargs = {"seed": config.seed, "device": config.train.device, "prioritized": config.replay.prioritized,
              "compile": config.train.compile}
    if config.train.cuda_graphs and (config.train.device != "cuda" or config.train.compile):
        raise ConfigError("train.cuda_graphs needs train.device: cuda and train.compile: false")
    try:
        if config.algo == "qtopt":
            if config.train.cuda_graphs:
                raise ConfigError("train.cuda_graphs is implemented for ddpg, td3 and d4pg, not qtopt")
            return QTOptAgent(config.agent, env_spec.observation, env_spec.action_dim, **kwargs)
        return DeterministicPolicyAgent(config.algo, config.agent, env_spec.observation, env_spec.action_dim,
                                        cuda_graphs=config.train.cuda_graphs, **kwargs)
    except ValueError as exc:  # a network the config describes cannot be built for this task
        raise ConfigError(f"agent: {exc}") from None


__all__ = ["ALGORITHMS", "DeterministicPolicyAgent", "QTOptAgent", "make_agent"]
