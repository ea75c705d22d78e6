"""Agents. `make_agent(config, env_spec)` builds the one the config names."""

from __future__ import annotations

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.errors import ConfigError

ALGORITHMS = ("ddpg", "td3", "d4pg")


def make_agent(config, env_spec) -> DeterministicPolicyAgent:
    """Build the agent for `config.algo` on an environment with `env_spec`."""
    if config.algo in ALGORITHMS:
        try:
            return DeterministicPolicyAgent(
                config.algo, config.agent, env_spec.observation, env_spec.action_dim,
                seed=config.seed, device=config.train.device, prioritized=config.replay.prioritized,
                compile=config.train.compile,
            )
        except ValueError as exc:  # a network the config describes cannot be built for this task
            raise ConfigError(f"agent: {exc}") from None
    raise ValueError(f"unknown algo {config.algo!r}")


__all__ = ["ALGORITHMS", "DeterministicPolicyAgent", "make_agent"]
