"""Settings that are valid one by one but not together: checked once, at config load, so a
nonsensical combination is one error line (exit 2) before anything is built or written."""

from __future__ import annotations

from rlcontrol.config import Config, DDPGConfig, EncoderConfig, QTOptConfig, SACConfig
from rlcontrol.errors import ConfigError


def check_combinations(config: Config, source: str) -> None:
    """Settings that are valid one by one but not together."""
    agent, replay = config.agent, config.replay
    if isinstance(agent, QTOptConfig) and agent.cem_elites > agent.cem_samples:
        raise ConfigError(f"{source}: agent.cem_elites ({agent.cem_elites}) must be <= agent.cem_samples "
                          f"({agent.cem_samples})")
    if replay.offline_replay is None and replay.offline_pretrain_updates > 0:
        raise ConfigError(f"{source}: replay.offline_pretrain_updates needs replay.offline_replay (a replay file)")
    t = config.train
    if t.cuda_graphs and (t.device != "cuda" or t.compile or isinstance(agent, QTOptConfig)):
        raise ConfigError(f"{source}: train.cuda_graphs needs train.device: cuda, train.compile: false and a "
                          f"DDPG-family algorithm (ddpg, td3, d4pg; this config: {config.algo})")
    if isinstance(agent, DDPGConfig):
        _check_actor_critic(config, source)
    for name, enc in getattr(agent, "encoders", {}).items():
        _check_encoder(enc, f"agent.encoders.{name}", source)


def _check_actor_critic(config: Config, source: str) -> None:
    """The critic options of the DDPG family and SAC, against each other and the algorithm."""
    agent = config.agent
    problems = []
    if agent.target_critics is not None and agent.target_critics > agent.n_critics:
        problems.append(f"agent.target_critics ({agent.target_critics}) must be <= agent.n_critics "
                        f"({agent.n_critics}): REDQ's subset is drawn from the ensemble")
    if agent.critic_dropout >= 1.0:
        problems.append(f"agent.critic_dropout must be in [0, 1), got {agent.critic_dropout}")
    if agent.critic_residual_blocks and agent.encoders:
        problems.append("agent.critic_residual_blocks (SimBa) needs a flat critic; it cannot be combined with "
                        "agent.encoders (split networks)")
    if agent.critic_residual_blocks and len(agent.critic_hidden) != 1:
        problems.append(f"agent.critic_residual_blocks sets the critic's shape: give critic_hidden one width "
                        f"(the blocks' width), got {agent.critic_hidden}")
    if isinstance(agent, SACConfig):
        if agent.exploration != "gaussian":
            problems.append(f"agent.exploration: {agent.exploration} does not apply to SAC, which explores by "
                            "sampling its own Gaussian policy (exploration_sigma scales its std)")
        if not agent.log_std_min < agent.log_std_max:
            problems.append(f"agent.log_std_min ({agent.log_std_min}) must be < agent.log_std_max "
                            f"({agent.log_std_max})")
    if config.train.cuda_graphs and (isinstance(agent, SACConfig) or agent.critic_dropout > 0):
        problems.append("train.cuda_graphs supports DDPG, TD3 and D4PG without critic_dropout (not yet SAC or DroQ)")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


def _check_encoder(enc: EncoderConfig, prefix: str, source: str) -> None:
    """An encoder's fields that only make sense for some types (the file itself is read when the agent is built)."""
    if enc.type == "vae" and not enc.vae_path:
        raise ConfigError(f"{source}: {prefix}.vae_path is required for type: vae "
                          "(a file from `rlcontrol pretrain-vae --out FILE`)")
    if enc.type != "vae" and (enc.vae_path is not None or enc.trainable):
        field_name = "vae_path" if enc.vae_path is not None else "trainable"
        raise ConfigError(f"{source}: {prefix}.{field_name} is only used with type: vae (the type is {enc.type})")
