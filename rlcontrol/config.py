"""Typed, validated run configuration.

A run is described by one YAML file (`configs/<algo>_<task>.yaml`) plus `--set key=value`
overrides. Every field below has a type, a default and, where it matters, a range; a
config that does not validate raises `ConfigError` with one line that names the field
(and, for unknown keys, the nearest valid one).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlcontrol.errors import ConfigError
from sim2real.randomization import DomainRandomization, RandomizationError


def _f(default: Any, doc: str, *, min: float | None = None, max: float | None = None,
       choices: tuple | None = None, min_exclusive: bool = False, factory=None):
    """A dataclass field with a docstring and validation bounds in its metadata."""
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "min_exclusive": min_exclusive}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class EnvConfig:
    id: str = _f("dmc:cheetah-run", "environment id: dmc:DOMAIN-TASK, gym:ID, or a registered project task")
    action_repeat: int = _f(1, "repeat each action this many simulator control steps", min=1)
    obs_format: str = _f("flat", "observations as one flat vector or a dict of named arrays", choices=("flat", "dict"))
    pixels: bool = _f(False, "observe rendered camera images instead of state")
    pixel_size: int = _f(84, "rendered image height and width in pixels", min=16, max=512)
    max_episode_steps: int | None = _f(None, "truncate episodes after this many agent steps (None: the task's own limit)", min=1)
    kwargs: dict[str, Any] = _f(
        None, "task keyword arguments passed to envs.make, e.g. {object_set: test, max_steps: 10} for rlc:grasp "
              "(the task checks names and values)", factory=dict)
    randomization: DomainRandomization | None = _f(
        None, "domain randomization of the training env, drawn per episode from the episode's seed and logged as "
              "randomization/<name>: physics: {mass: [0.8, 1.2], ...} scales, obs_noise_std, obs_bias_std, "
              "action_noise_std, latency_steps: [min, max], jitter, visual (sim2real/randomization.py, "
              "docs/sim2real.md); None: off")
    randomize_eval: bool = _f(False, "randomize the evaluation env too (false: evaluate on the nominal task)")


@dataclass
class EncoderConfig:
    """How one named observation part enters the split networks (parkour networks, Heess et al. 2017).

    The part goes through its own encoder and joins the trunk at layer `join`: 0 is the
    trunk's input, i is the input of the trunk's hidden layer i+1 (after hidden layer i), up
    to len(hidden). Parts without an encoder enter the trunk at its input, with the action in
    the critic.
    """

    type: str = _f("mlp", "encoder for this part: an MLP, a 1-D convolution over a profile such as terrain heights, "
                          "a 2-D convolution over a camera image trained with the network (conv2d), or the encoder "
                          "of a pretrained VAE (vae: `rlcontrol pretrain-vae`); conv2d and vae need a uint8 "
                          "(C, H, W) image part", choices=("mlp", "conv1d", "conv2d", "vae"))
    hidden: list[int] = _f(None, "mlp: hidden widths (the last is the feature size); conv1d, conv2d: channels per "
                                 "conv layer", factory=lambda: [64, 64], min=1)
    kernel: int = _f(5, "conv1d, conv2d kernel size", min=1)
    stride: int = _f(2, "conv1d, conv2d stride", min=1)
    features: int = _f(64, "conv2d: size of the linear projection (ReLU) after the convolutions: the features "
                           "that join the trunk", min=1)
    vae_path: str | None = _f(None, "vae: the VAE file (safetensors, from `rlcontrol pretrain-vae`; a relative path "
                                    "is read from the working directory); its input shape must be the part's")
    trainable: bool = _f(False, "vae: fine-tune the encoder with the network (false: frozen, no gradients; its "
                                "weights still go into checkpoints and exports)")
    join: int = _f(1, "trunk layer at which this part's features join (0: the input)", min=0)


@dataclass
class DDPGConfig:
    """DDPG (Lillicrap et al. 2016): deterministic actor, one critic, soft target updates."""

    actor_hidden: list[int] = _f(None, "actor MLP hidden widths", factory=lambda: [256, 256])
    critic_hidden: list[int] = _f(None, "critic MLP hidden widths", factory=lambda: [256, 256])
    actor_lr: float = _f(3e-4, "actor Adam learning rate", min=0.0, min_exclusive=True)
    critic_lr: float = _f(3e-4, "critic Adam learning rate", min=0.0, min_exclusive=True)
    gamma: float = _f(0.99, "discount factor", min=0.0, max=1.0)
    tau: float = _f(0.005, "Polyak rate of the target networks: theta' <- tau*theta + (1-tau)*theta'", min=0.0, max=1.0, min_exclusive=True)
    batch_size: int = _f(256, "minibatch size", min=1)
    exploration: str = _f("gaussian", "behaviour noise added to mu(s)", choices=("gaussian", "ou"))
    exploration_sigma: float = _f(0.1, "std of the behaviour noise, in normalized action units", min=0.0)
    ou_theta: float = _f(0.15, "Ornstein-Uhlenbeck mean-reversion rate (exploration: ou)", min=0.0)
    ou_dt: float = _f(1e-2, "Ornstein-Uhlenbeck time step", min=0.0, min_exclusive=True)
    huber: bool = _f(False, "Huber instead of squared TD error in the critic loss")
    grad_clip_norm: float | None = _f(None, "clip each network's gradient norm to this value (None: no clipping)", min=0.0, min_exclusive=True)
    obs_norm: bool = _f(False, "normalize observations with running mean/std (stored with the agent, baked into exports)")
    obs_norm_clip: float = _f(10.0, "clip normalized observations to +-this", min=0.0, min_exclusive=True)
    policy_delay: int = _f(1, "update the actor and targets every d critic updates", min=1)
    n_critics: int = _f(1, "critics in the ensemble (all regress onto one target; REDQ uses 10)", min=1)
    target_critics: int | None = _f(None, "REDQ (Chen et al. 2021): each target is the minimum over a fresh random "
                                          "subset of this many critics (None: all of them)", min=1)
    actor_q: str = _f("first", "what the actor maximises: the first critic (DDPG, TD3), the ensemble's minimum "
                               "(SAC) or its mean (REDQ, DroQ)", choices=("first", "min", "mean"))
    critic_layer_norm: bool = _f(False, "LayerNorm after each hidden layer of the critics (Linear -> Dropout -> "
                                        "LayerNorm -> ReLU): stabilises high update-to-data training")
    actor_layer_norm: bool = _f(False, "LayerNorm after each hidden layer of the actor (in the exported graph too)")
    critic_dropout: float = _f(0.0, "dropout rate in the critics' hidden layers, targets included (DroQ, Hiraoka "
                                    "et al. 2022, uses 0.01 with LayerNorm); in [0, 1)", min=0.0, max=1.0)
    critic_residual_blocks: int = _f(0, "SimBa (Lee et al. 2024): this many pre-LayerNorm residual blocks of width "
                                        "critic_hidden[0] (inner 4x) instead of the plain MLP (0: plain); flat "
                                        "networks only, critic_hidden one width", min=0)
    encoders: dict[str, EncoderConfig] = _f(
        None, "split networks: observation part name -> its own encoder and join layer (empty: one flat MLP); "
              "needs env.obs_format: dict", factory=dict)


@dataclass
class TD3Config(DDPGConfig):
    """TD3 (Fujimoto et al. 2018): DDPG + twin critics, delayed actor updates, target policy smoothing."""

    policy_delay: int = _f(2, "update the actor and targets every d critic updates", min=1)
    n_critics: int = _f(2, "critics whose minimum forms the target (clipped double Q)", min=2)
    target_noise: float = _f(0.2, "std of the target policy smoothing noise", min=0.0)
    target_noise_clip: float = _f(0.5, "clip of the target policy smoothing noise", min=0.0)


@dataclass
class SACConfig(DDPGConfig):
    """SAC (Haarnoja et al. 2018): tanh-squashed Gaussian actor, twin soft critics, learned temperature.

    Acting samples the policy (exploration_sigma scales its std; distributed actors spread it);
    evaluation and exports use the deterministic tanh(mean)."""

    n_critics: int = _f(2, "soft Q critics; the target takes the minimum (over target_critics of them)", min=1)
    actor_q: str = _f("min", "what the actor maximises: the critics' minimum (the paper), their mean (REDQ, DroQ) "
                             "or the first critic", choices=("first", "min", "mean"))
    exploration_sigma: float = _f(1.0, "scale of the policy's own std when acting (1: sample the policy, as SAC "
                                       "does; 0: act deterministically)", min=0.0)
    init_alpha: float = _f(1.0, "initial entropy temperature alpha", min=0.0, min_exclusive=True)
    autotune_alpha: bool = _f(True, "learn alpha so the policy's entropy tracks target_entropy (false: alpha fixed)")
    alpha_lr: float = _f(3e-4, "Adam learning rate of log alpha", min=0.0, min_exclusive=True)
    target_entropy: float | None = _f(None, "entropy the temperature aims for (None: -action_dim, the paper's choice)")
    log_std_min: float = _f(-5.0, "lower bound of the policy's log-std (squashed smoothly)")
    log_std_max: float = _f(2.0, "upper bound of the policy's log-std")


@dataclass
class ReplayConfig:
    capacity: int = _f(1_000_000, "transitions kept", min=1)
    n_step: int = _f(1, "n-step returns (stop at episode ends; bootstrap through truncation only)", min=1)
    prioritized: bool = _f(False, "prioritized replay (Schaul et al. 2016)")
    alpha: float = _f(0.6, "priority exponent", min=0.0, max=1.0)
    beta0: float = _f(0.4, "initial importance-sampling exponent, annealed to 1", min=0.0, max=1.0)
    beta_steps: int | None = _f(None, "updates over which beta anneals to 1 (None: the whole run)", min=1)
    eps: float = _f(1e-6, "added to |TD error| so no transition has zero priority", min=0.0, min_exclusive=True)
    offline_replay: str | None = _f(None, "a replay file (ReplayBuffer.save, `rlcontrol bag-to-replay`) of offline "
                                          "transitions mixed into every batch (None: online data only)")
    offline_ratio: float = _f(0.5, "fraction of each batch drawn from offline_replay; the rest from the online replay",
                              min=0.0, max=1.0)
    offline_pretrain_updates: int = _f(0, "updates on offline_replay alone before collecting any experience", min=0)
    offline_replay_recipe: str | None = _f(None, "the command that makes offline_replay, shown when the file is "
                                                 "missing (None: a generic hint)")


@dataclass
class TrainConfig:
    total_env_steps: int = _f(100_000, "environment steps to train for (agent steps x action_repeat)", min=1)
    learning_starts: int = _f(5_000, "environment steps of uniform random actions before learning", min=0)
    updates_per_step: int = _f(1, "gradient updates per agent step", min=1)
    eval_every: int = _f(10_000, "environment steps between evaluations (0: only at the end)", min=0)
    eval_episodes: int = _f(5, "episodes per evaluation", min=1)
    checkpoint_every: int = _f(10_000, "environment steps between checkpoints; written at the next episode end", min=1)
    keep_checkpoints: int = _f(2, "most recent checkpoints kept", min=1)
    log_every: int = _f(1_000, "environment steps between training-metric logs", min=1)
    threads: int = _f(0, "torch intra-op threads (0: torch's default)", min=0)
    device: str = _f("cpu", "torch device for networks and replay", choices=("cpu", "cuda"))
    compile: bool = _f(False, "torch.compile the loss functions (~20 s to compile once; see docs/benchmarks.md for its measured effect)")
    cuda_graphs: bool = _f(False, "replay each update as a captured CUDA graph (train.device: cuda; DDPG, TD3, D4PG): "
                                  "one launch instead of ~60 per update (docs/benchmarks.md, GPU)")
    video_frames: int = _f(500, "frames in the final rollout video (0: no video)", min=0)
    video_size: int = _f(240, "rollout video height and width in pixels", min=32, max=1024)


@dataclass
class D4PGConfig(DDPGConfig):
    """D4PG (Barth-Maron et al. 2018): DDPG with a categorical distributional critic.

    Use it with replay.n_step > 1 and replay.prioritized: true (configs/d4pg_*.yaml), and with
    distributed.num_actors > 1 for the paper's parallel actors.
    """

    num_atoms: int = _f(51, "atoms of the categorical return distribution", min=2)
    v_min: float = _f(-150.0, "lowest atom of the return support")
    v_max: float = _f(150.0, "highest atom of the return support")


@dataclass
class DistributedConfig:
    """Parallel actors feeding one learner (rlcontrol/distributed). num_actors: 1 runs in process."""

    num_actors: int = _f(1, "actor workers, each with its own environment and exploration noise (1: in process, no Ray)", min=1)
    ray_address: str | None = _f(None, "join this Ray cluster (None: start a local one in-process)")
    weight_sync_every: int = _f(100, "learner updates between weight publications to the actors", min=1)
    chunk_steps: int = _f(50, "agent steps an actor collects before handing its transitions to the learner", min=1)
    noise_scales: list[float] | None = _f(None, "per-actor multipliers of exploration_sigma (None: spread from 0.5x to 2x)", min=0.0)


@dataclass
class QTOptConfig:
    """QT-Opt (Kalashnikov et al. 2018): Q-learning whose policy is the CEM argmax of Q(s, a) (no
    actor), clipped double Q with Polyak target networks. Image observations get a conv encoder."""

    q_hidden: list[int] = _f(None, "Q network MLP hidden widths (after the conv encoder for images)",
                             factory=lambda: [256, 256], min=1)
    conv_channels: list[int] = _f(None, "images: channels of each conv layer of the encoder",
                                  factory=lambda: [32, 32, 32], min=1)
    conv_kernel: int = _f(3, "images: conv kernel size", min=1)
    conv_stride: int = _f(2, "images: conv stride", min=1)
    conv_features: int = _f(64, "images: size of the image feature vector the state and action join", min=1)
    frozen_encoder: str | None = _f(None, "images: a pretrained encoder file (a VAE file) used frozen in place of the "
                                          "conv encoder; replay caches each frame's latents (vision/frozen_latents.py)")
    lr: float = _f(3e-4, "Q network Adam learning rate", min=0.0, min_exclusive=True)
    gamma: float = _f(0.99, "discount factor", min=0.0, max=1.0)
    tau: float = _f(0.005, "Polyak rate of the target networks: theta' <- tau*theta + (1-tau)*theta'", min=0.0, max=1.0, min_exclusive=True)
    batch_size: int = _f(256, "minibatch size", min=1)
    loss: str = _f("mse", "Bellman loss: squared error, or QT-Opt's log loss on Q = sigmoid(logit) for rewards in [0, 1]",
                   choices=("mse", "cross_entropy"))
    n_critics: int = _f(2, "Q estimates; the target takes their minimum (clipped double Q)", min=1)
    cem_samples: int = _f(64, "CEM samples per iteration (N)", min=1)
    cem_elites: int = _f(6, "CEM elites refitted per iteration (M <= N)", min=1)
    cem_iterations: int = _f(2, "CEM iterations (I)", min=1)
    cem_init_std: float = _f(1.0, "CEM's first std as a fraction of the half action range (mean at the centre)",
                             min=0.0, min_exclusive=True)
    epsilon: float = _f(0.1, "exploration: probability of a uniform random action instead of the CEM action", min=0.0, max=1.0)
    exploration_sigma: float = _f(0.0, "exploration: std of Gaussian noise on the CEM action (normalized units; "
                                       "distributed actors scale it)", min=0.0)
    grad_clip_norm: float | None = _f(None, "clip the gradient norm to this value (None: no clipping)", min=0.0, min_exclusive=True)
    obs_norm: bool = _f(False, "normalize observations (state parts) with running mean/std (stored with the agent, baked into exports)")
    obs_norm_clip: float = _f(10.0, "clip normalized observations to +-this", min=0.0, min_exclusive=True)


AGENT_CONFIGS: dict[str, type] = {"ddpg": DDPGConfig, "td3": TD3Config, "d4pg": D4PGConfig, "sac": SACConfig,
                                   "qtopt": QTOptConfig}


@dataclass
class Config:
    algo: str = "td3"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: DDPGConfig = field(default_factory=TD3Config)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON of the resolved config (recorded in exports)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


_SECTIONS = ("env", "agent", "replay", "train", "distributed")


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, merge `--set` overrides into, and validate a YAML config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    lines = _key_lines(text)
    for item in overrides or []:
        _apply_override(raw, item)
    return config_from_dict(raw, source=str(path), lines=lines)


def config_from_dict(raw: dict, source: str = "config", lines: dict[str, int] | None = None) -> Config:
    lines = lines or {}
    raw = dict(raw)
    algo = raw.get("algo", Config.algo)
    if algo not in AGENT_CONFIGS:
        raise ConfigError(f"{source}: unknown algo {algo!r}{_suggest(str(algo), AGENT_CONFIGS)}; valid: {', '.join(AGENT_CONFIGS)}")
    sections = {"env": EnvConfig, "agent": AGENT_CONFIGS[algo], "replay": ReplayConfig, "train": TrainConfig,
                "distributed": DistributedConfig}
    top_keys = ["algo", "seed", *_SECTIONS]
    for key in raw:
        if key not in top_keys:
            raise ConfigError(_unknown_key_message(source, str(key), top_keys, lines, sections))
    built = {}
    for name, cls in sections.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: '{name}' must be a mapping, got {type(section).__name__}")
        built[name] = _build_section(cls, section, f"{name}.", source, lines, sections)
    seed = _coerce(raw.get("seed", 0), int, "seed", source)
    if seed < 0:
        raise ConfigError(f"{source}: seed must be >= 0, got {seed}")
    config = Config(algo=algo, seed=seed, **built)
    from rlcontrol.config_checks import check_combinations  # (it imports the classes above)

    check_combinations(config, source)
    return config


def _build_section(cls, section: dict, prefix: str, source: str, lines: dict[str, int], sections: dict):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in section.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(source, prefix + str(key), list(fields), lines, sections, prefix))
        nested = _self_validating(hints[key])
        if nested is not None:
            values[key] = _build_self_validating(nested, value, prefix + key, source, lines)
        else:
            values[key] = _validate(prefix + key, value, hints[key], fields[key].metadata, source)
    return cls(**values)


def _self_validating(hint: Any) -> type | None:
    """The class behind a `Cls | None` hint whose class validates itself with `from_dict`
    (env.randomization: sim2real's DomainRandomization), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    cls = args[0]
    return cls if dataclasses.is_dataclass(cls) and hasattr(cls, "from_dict") else None


def _build_self_validating(cls: type, value: Any, name: str, source: str, lines: dict[str, int]) -> Any:
    if value is None:
        return None
    try:
        return cls.from_dict(value)
    except RandomizationError as exc:
        key = f"{name}.{exc.key}" if exc.key else name
        raise ConfigError(f"{source}: {exc.message(name + '.', lines.get(key))}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {name}: {exc}") from None


def _validate(name: str, value: Any, hint: Any, meta: dict, source: str) -> Any:
    value = _coerce(value, hint, name, source)
    if value is None:
        return None
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{source}: {name} must be one of {', '.join(map(str, choices))}; got {value!r}{_suggest(str(value), choices)}")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (item < lo or (meta.get("min_exclusive") and item == lo)):
            op = ">" if meta.get("min_exclusive") else ">="
            raise ConfigError(f"{source}: {name} must be {op} {lo}, got {item}")
        if hi is not None and item > hi:
            raise ConfigError(f"{source}: {name} must be <= {hi}, got {item}")
    return value


def _coerce(value: Any, hint: Any, name: str, source: str) -> Any:
    """Check `value` against a type hint; accept ints for floats and YAML's '3e-4' strings."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a mapping of name -> settings, got {value!r}")
        cls = args[1]
        if cls is Any:  # free-form keyword arguments (env.kwargs): whoever receives them validates them
            return {str(k): v for k, v in value.items()}
        return {str(k): _build_section(cls, v if v is not None else {}, f"{name}.{k}.", source, {}, {})
                if isinstance(v, dict) or v is None else _not_mapping(f"{name}.{k}", v, source)
                for k, v in value.items()}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{source}: {name} must be a non-empty list of {args[0].__name__}, got {value!r}")
        return [_coerce(v, args[0], f"{name}[{i}]", source) for i, v in enumerate(value)]
    coerced = _SCALAR_COERCERS[hint](value)
    if coerced is _INVALID:
        got = "null" if value is None else f"{value!r} ({type(value).__name__})"
        raise ConfigError(f"{source}: {name} must be {_type_name(hint)}, got {got}")
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise ConfigError(f"{source}: {name} must be a finite number, got {coerced}")
    return coerced


_INVALID = object()


def _not_mapping(name: str, value: Any, source: str):
    raise ConfigError(f"{source}: {name} must be a mapping of settings, got {value!r}")


def _as_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _INVALID


def _as_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _INVALID


def _as_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 3e-4 (no dot) as a string
        except ValueError:
            return _INVALID
    return _INVALID


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _INVALID


_SCALAR_COERCERS = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _suggest(word: str, options) -> str:
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _unknown_key_message(source, key, valid, lines, sections, prefix="") -> str:
    short = key[len(prefix):]
    near = difflib.get_close_matches(short, valid, n=1, cutoff=0.6)
    if near:
        hint = f"; did you mean '{prefix}{near[0]}'?"
    else:
        # The key may belong to another section (e.g. 'tau' written under train:).
        everywhere = [f"{s}.{f.name}" for s, cls in sections.items() for f in dataclasses.fields(cls)]
        near = difflib.get_close_matches(short, [p.split(".", 1)[1] for p in everywhere], n=1, cutoff=0.8)
        hint = f"; did you mean '{next(p for p in everywhere if p.endswith('.' + near[0]))}'?" if near else ""
    line = lines.get(key)
    where = f" (line {line})" if line else ""
    return f"{source}: unknown key '{key}'{where}{hint}"


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted keys to their 1-based line in the YAML text (best effort)."""
    out: dict[str, int] = {}
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return out

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                out[key] = k.start_mark.line + 1
                walk(v, key + ".")

    walk(node, "")
    return out


def _apply_override(raw: dict, item: str) -> None:
    """Apply one `--set section.key=value` (value parsed as YAML) to the raw mapping."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad --set {item!r}: expected KEY=VALUE, e.g. --set agent.actor_lr=1e-3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"bad --set {item!r}: the value is not valid YAML") from None
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"bad --set {item!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def save_config(config: Config, path: str | Path) -> None:
    from rlcontrol.training.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
