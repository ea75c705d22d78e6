"""Domain randomization: every training episode runs on a slightly different world.

`DomainRandomization` declares what varies and by how much (a JSON/YAML-able dataclass, the
`env.randomization` section of a run config); `RandomizedEnv` wraps any `Env` and, at every
`reset(seed)`, draws that episode's world from the seed and applies it:

  physics         scale factors of the named physical parameters (sim2real/physics.py), each
                  drawn uniformly (or log-uniformly) from its [low, high] once per episode.
  obs_bias_std    a constant offset per observation element, N(0, std^2), drawn per episode
                  (a miscalibrated sensor); in observation units.
  obs_noise_std   fresh N(0, std^2) noise on every element at every step (sensor noise).
                  Both take one number for every float entry or a mapping from entry names
                  (dict keys, or the flat vector's `spec.obs_layout` names) to numbers; entries
                  not named get none. uint8 image entries are never touched by them.
  action_noise_std  N(0, std^2) added to the action the actuators execute, every step, in
                  normalized action units (then clipped to [-1, 1] by the env).
  latency_steps   [min, max]: the episode's delay, in agent steps (env.spec.control_period,
                  action repeat included), between the policy's action and the actuators
                  receiving it; an integer drawn uniformly per episode.
  jitter          probability that an action arrives one step later than the latency says,
                  drawn per action: a command that misses its control tick. The actuators apply
                  the newest command that has arrived and hold it (zero-order hold) until a
                  newer one arrives; a late command overtaken by a newer one is never applied,
                  as a controller that checks sequence numbers would drop it.
  visual          per-episode camera appearance of uint8 image entries (pixel tasks):
                  brightness (offset in [-b, b] x 255), contrast (factor in [1 - c, 1 + c]
                  about the frame mean) and colour (a gain per RGB channel in [1 - k, 1 + k]),
                  with rlcontrol.vision.preprocess's conventions (round half up, clip to 0-255).

Until the first command arrives (the first `latency` steps of an episode) the actuators get a
safe action: zeros in normalized units unless `initial_action` says otherwise (for most tasks
the middle of each actuator's range: no force for dm_control's motors).

Reproducibility: everything an episode draws comes from `np.random.SeedSequence` streams keyed by
(the reset seed, what is drawn): the same seed always gives the same world, in any call order,
and each parameter's draw does not depend on which others are randomized. `reset()` without a
seed draws the episode seed from the wrapper's own generator (seeded at construction).
The draws are exposed as `env.sampled` (name -> float: physics scales, "latency_steps",
"visual_*") and in every step's `info["randomization"]`; `info["action_delay"]` is the age in
steps of the command the actuators executed (None for the safe action).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.core import ArraySpec, Env, StepResult
from envs.wrappers import Wrapper
from sim2real.physics import PARAMETER_NAMES, POSITIVE_SCALES, physical_parameters

_DR_STREAM = 0x51D2  # mixed into every seed, so these draws never repeat the task's own


class RandomizationError(ValueError):
    """A bad `DomainRandomization` setting: which key (dotted, inside the section) and why."""

    def __init__(self, key: str, problem: str, suggestion: str | None = None):
        self.key, self.problem, self.suggestion = key, problem, suggestion
        super().__init__(self.message())

    def message(self, prefix: str = "", line: int | None = None) -> str:
        """One line; `prefix` is prepended to keys (e.g. "env.randomization.")."""
        where = f" (line {line})" if line else ""
        key = f"{prefix}{self.key}" if self.key else prefix.rstrip(".") or "randomization"
        if self.suggestion is not None:
            hint = f"; did you mean '{prefix}{self.suggestion}'?" if self.suggestion else ""
            return f"unknown key '{key}'{where}{hint}"
        return f"{key}{where}: {self.problem}"


def _unknown(key: str, options) -> RandomizationError:
    parent, _, last = key.rpartition(".")
    close = difflib.get_close_matches(last, list(options), n=1, cutoff=0.6)
    return RandomizationError(key, "unknown key", (f"{parent}." if parent else "") + close[0] if close else "")


def _number(key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)  # PyYAML reads 3e-4 (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RandomizationError(key, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise RandomizationError(key, f"must be a finite number, got {value}")
    return value


def _non_negative(key: str, value: Any, high: float | None = None) -> float:
    value = _number(key, value)
    if value < 0 or (high is not None and value > high):
        raise RandomizationError(key, f"must be in [0, {high}], got {value}" if high is not None
                                 else f"must be >= 0, got {value}")
    return value


def _std(key: str, value: Any) -> float | dict[str, float]:
    """One std for every entry, or observation entry name -> std."""
    if isinstance(value, Mapping):
        return {str(k): _non_negative(f"{key}.{k}", v) for k, v in value.items()}
    return _non_negative(key, value)


@dataclass(frozen=True)
class Range:
    """[low, high], sampled uniformly, or log-uniformly (equal odds for x0.5 and x2) with log_uniform."""

    low: float
    high: float
    log_uniform: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.low == self.high:
            return self.low
        if self.log_uniform:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


def _range(key: str, value: Any, minimum: float = -math.inf, positive: bool = False) -> Range:
    """A number (fixed), [low, high], or {low, high, log_uniform} -> a checked Range."""
    log = False
    if isinstance(value, Range):
        low, high, log = value.low, value.high, value.log_uniform
    elif isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "log_uniform"}
        if unknown:
            raise _unknown(f"{key}.{sorted(unknown)[0]}", ("low", "high", "log_uniform"))
        if "low" not in value or "high" not in value:
            raise RandomizationError(key, "needs both low and high")
        low, high = value["low"], value["high"]
        log = value.get("log_uniform", False)
        if not isinstance(log, bool):
            raise RandomizationError(f"{key}.log_uniform", f"must be true or false, got {log!r}")
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise RandomizationError(key, f"must be [low, high], got {list(value)!r}")
        low, high = value
    else:
        low = high = value
    low, high = _number(key, low), _number(key, high)
    if low > high:
        raise RandomizationError(key, f"low must be <= high, got [{low}, {high}]")
    if low < minimum or (positive and low <= 0):
        raise RandomizationError(key, f"must be {'> 0' if positive else f'>= {minimum}'}, got [{low}, {high}]")
    if log and low <= 0:
        raise RandomizationError(key, f"log_uniform needs low > 0, got [{low}, {high}]")
    return Range(low, high, log)


@dataclass(frozen=True)
class VisualRandomization:
    """Per-episode camera appearance (see the module docstring); all 0: off."""

    brightness: float = 0.0
    contrast: float = 0.0
    color: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _non_negative(f"visual.{f.name}", getattr(self, f.name), 1.0))

    @property
    def enabled(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.color > 0


@dataclass(frozen=True)
class DomainRandomization:
    """What varies between episodes, and how much (see the module docstring). All off by default."""

    physics: dict[str, Range] = field(default_factory=dict)
    obs_noise_std: float | dict[str, float] = 0.0
    obs_bias_std: float | dict[str, float] = 0.0
    action_noise_std: float = 0.0
    latency_steps: list[int] = field(default_factory=lambda: [0, 0])
    jitter: float = 0.0
    visual: VisualRandomization = field(default_factory=VisualRandomization)

    def __post_init__(self) -> None:
        if not isinstance(self.physics, Mapping):
            raise RandomizationError("physics", f"must be a mapping of parameter name -> [low, high], got {self.physics!r}")
        physics = {}
        for name, value in self.physics.items():
            if name not in PARAMETER_NAMES:
                raise _unknown(f"physics.{name}", PARAMETER_NAMES)
            physics[name] = _range(f"physics.{name}", value, minimum=0.0, positive=name in POSITIVE_SCALES)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("physics", physics)
        set_("obs_noise_std", _std("obs_noise_std", self.obs_noise_std))
        set_("obs_bias_std", _std("obs_bias_std", self.obs_bias_std))
        set_("action_noise_std", _non_negative("action_noise_std", self.action_noise_std))
        set_("latency_steps", _latency(self.latency_steps))
        set_("jitter", _non_negative("jitter", self.jitter, 1.0))
        if isinstance(self.visual, Mapping):
            set_("visual", _visual_from_dict(self.visual))
        elif not isinstance(self.visual, VisualRandomization):
            raise RandomizationError("visual", f"must be a mapping of brightness, contrast, color; got {self.visual!r}")

    @classmethod
    def from_dict(cls, data: Any) -> DomainRandomization:
        """From a plain mapping (YAML/JSON); raises RandomizationError naming the key."""
        if isinstance(data, DomainRandomization):
            return data
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise RandomizationError("", f"must be a mapping of settings, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise _unknown(str(key), names)
        return cls(**{str(k): v for k, v in data.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def enabled(self) -> bool:
        """True if anything is randomized at all."""
        return bool(self.physics or _any_positive(self.obs_noise_std) or _any_positive(self.obs_bias_std)
                    or self.action_noise_std > 0 or self.latency_steps[1] > 0 or self.jitter > 0
                    or self.visual.enabled)


def _any_positive(std: float | dict[str, float]) -> bool:
    return any(v > 0 for v in std.values()) if isinstance(std, dict) else std > 0


def _latency(value: Any) -> list[int]:
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise RandomizationError("latency_steps", f"must be [min, max] agent steps, got {value!r}")
    out = []
    for item in items:
        number = _number("latency_steps", item)
        if number != int(number) or number < 0:
            raise RandomizationError("latency_steps", f"must be whole numbers of steps >= 0, got {value!r}")
        out.append(int(number))
    if out[0] > out[1]:
        raise RandomizationError("latency_steps", f"min must be <= max, got {out}")
    return out


def _visual_from_dict(data: Mapping) -> VisualRandomization:
    names = [f.name for f in dataclasses.fields(VisualRandomization)]
    for key in data:
        if key not in names:
            raise _unknown(f"visual.{key}", names)
    return VisualRandomization(**{str(k): v for k, v in data.items() if v is not None})


# ------------------------------------------------------------------------------ sampling


def episode_stream(seed: int, what: str) -> np.random.Generator:
    """The generator of one kind of draw (`what`) for the episode reset with `seed`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _DR_STREAM, zlib.crc32(what.encode())]))


def sample_episode(randomization: DomainRandomization, seed: int) -> dict[str, float]:
    """The per-episode values for reset seed `seed`: physics scales (by parameter name),
    "latency_steps" (when latency is randomized) and "visual_brightness", "visual_contrast",
    "visual_color_r/g/b" (when visuals are). A pure function of its arguments."""
    sampled = {name: r.sample(episode_stream(seed, f"physics/{name}")) for name, r in randomization.physics.items()}
    low, high = randomization.latency_steps
    if high > 0:
        sampled["latency_steps"] = float(episode_stream(seed, "latency_steps").integers(low, high + 1))
    visual = randomization.visual
    if visual.enabled:
        rng = episode_stream(seed, "visual")
        b, c, k = visual.brightness, visual.contrast, visual.color
        sampled["visual_brightness"] = float(rng.uniform(-b, b))
        sampled["visual_contrast"] = float(rng.uniform(1.0 - c, 1.0 + c))
        for channel, gain in zip("rgb", rng.uniform(1.0 - k, 1.0 + k, size=3)):
            sampled[f"visual_color_{channel}"] = float(gain)
    return sampled


def apply_visual(frame: np.ndarray, sampled: Mapping[str, float]) -> np.ndarray:
    """One uint8 (C, H, W) frame under an episode's visual draws -> a new uint8 frame.

    Colour gains (3-channel frames only), then contrast about the frame's mean, then the
    brightness offset; rounded half up and clipped to [0, 255]."""
    values = frame.astype(np.float32)
    if frame.shape[0] == 3:
        gains = np.array([sampled[f"visual_color_{c}"] for c in "rgb"], dtype=np.float32)
        values *= gains[:, None, None]
    mean = values.mean()
    values = (values - mean) * np.float32(sampled["visual_contrast"]) + mean
    values += np.float32(sampled["visual_brightness"] * 255.0)
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ the wrapper


class RandomizedEnv(Wrapper):
    """`env` with the world of each episode drawn from `randomization` (see the module docstring).

    Args:
      env: any Env (usually the full stack `envs.make` returns, so latency counts agent steps).
      randomization: a DomainRandomization or the mapping it is made from.
      seed: seeds the episode seeds of `reset()` calls without one.
      initial_action: normalized action the actuators get before the first command arrives
        (default zeros).
    Raises ValueError (naming the env) for physics parameters the env does not have, noise for
    observation entries it does not have, or visual randomization without image observations.
    """

    def __init__(self, env: Env, randomization: DomainRandomization | Mapping, seed: int | None = None, *,
                 initial_action: np.ndarray | None = None):
        super().__init__(env)
        dr = self.randomization = DomainRandomization.from_dict(randomization)
        env_id = env.spec.env_id
        self._params = None
        if dr.physics:
            self._params = physical_parameters(env)
            missing = [name for name in dr.physics if name not in self._params.names]
            if missing:
                raise ValueError(f"{env_id} has no physical parameter {missing[0]!r}; it supports "
                                 f"{', '.join(self._params.names)}")
        self._noise_std = _entry_stds(self.spec, dr.obs_noise_std, "obs_noise_std")
        self._bias_std = _entry_stds(self.spec, dr.obs_bias_std, "obs_bias_std")
        # Entries that get bias and/or noise, in the observation's own order (the draw order).
        self._noisy = [k for k in _entries(self.spec) if k in self._noise_std or k in self._bias_std]
        self._images = [k for k, s in _entries(self.spec).items() if s.dtype == np.uint8 and len(s.shape) == 3]
        if dr.visual.enabled and not self._images:
            raise ValueError(f"visual randomization needs image observations (pixels: true); {env_id} observes "
                             "no uint8 image")
        dim = self.spec.action_dim
        safe = np.zeros(dim) if initial_action is None else np.asarray(initial_action, dtype=np.float64).reshape(-1)
        if safe.shape != (dim,) or not np.all(np.abs(safe) <= 1.0):
            raise ValueError(f"initial_action must be {dim} normalized values in [-1, 1], got {initial_action!r}")
        self._initial_action = safe
        self._seeds = np.random.default_rng(seed)
        self.sampled: dict[str, float] = {}
        self.obs_bias: dict[str | None, np.ndarray] = {}
        self._running = False
        self._closed = False

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None):
        episode_seed = int(self._seeds.integers(2**32)) if seed is None else int(seed)
        self.sampled = sample_episode(self.randomization, episode_seed)
        if self._params is not None:
            # Nominal first, so nothing of the last episode's draw survives, then this episode's.
            # Before the task's reset, so a task that settles its start (obstacle course, grasp)
            # settles under this episode's physics.
            self._params.restore()
            self._params.set({name: self.sampled[name] for name in self.randomization.physics})
        obs = self.inner.reset(seed)
        if self._params is not None:
            self._params.sync_after_reset()
        bias_rng = episode_stream(episode_seed, "obs_bias")
        self.obs_bias = {key: std * bias_rng.standard_normal(std.shape) for key, std in self._bias_std.items()}
        self._rng = episode_stream(episode_seed, "per_step")  # jitter, action noise, observation noise
        self._latency = int(self.sampled.get("latency_steps", self.randomization.latency_steps[0]))
        self._t = 0
        self._in_flight: list[tuple[int, int, np.ndarray]] = []  # (sent at, arrives at, command)
        self._held, self._held_sent = self._initial_action, -1
        self._running = True
        return self._observe(obs)

    def step(self, action: np.ndarray) -> StepResult:
        if not self._running:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        command = np.asarray(action, dtype=np.float64).reshape(-1)
        if command.shape != (self.spec.action_dim,):
            raise ValueError(f"expected an action with {self.spec.action_dim} elements, got shape {command.shape}")
        if not np.all(np.isfinite(command)):
            raise ValueError(f"action contains non-finite values: {command}")
        executed = self._deliver(np.clip(command, -1.0, 1.0))
        if self.randomization.action_noise_std > 0:
            executed = executed + self.randomization.action_noise_std * self._rng.standard_normal(executed.shape)
        result = self.inner.step(executed)
        age = self._t - self._held_sent if self._held_sent >= 0 else None
        self._t += 1
        result.obs = self._observe(result.obs)
        result.info["randomization"] = dict(self.sampled)
        result.info["action_delay"] = age
        if result.terminated or result.truncated:
            self._running = False
        return result

    def _deliver(self, command: np.ndarray) -> np.ndarray:
        """Send `command` at step t; return the command the actuators execute at step t."""
        t = self._t
        late = self.randomization.jitter > 0 and self._rng.random() < self.randomization.jitter
        self._in_flight.append((t, t + self._latency + int(late), command))
        arrived = [m for m in self._in_flight if m[1] <= t]
        if arrived:
            sent, _, newest = max(arrived, key=lambda m: m[0])
            if sent > self._held_sent:
                self._held, self._held_sent = newest, sent
            # Arrived ones are used or overtaken; in-flight ones older than the held command will be.
            self._in_flight = [m for m in self._in_flight if m[1] > t and m[0] > self._held_sent]
        return self._held

    def _observe(self, obs):
        """Bias and noise on float entries, visual draws on image entries; new arrays throughout."""
        if not (self._noisy or (self._images and self.randomization.visual.enabled)):
            return obs
        named = obs if isinstance(obs, dict) else {None: obs}
        out = dict(named)
        for key in self._noisy:
            value = named[key].astype(np.float64) + self.obs_bias.get(key, 0.0)
            std = self._noise_std.get(key)
            if std is not None:
                value += std * self._rng.standard_normal(value.shape)
            out[key] = value.astype(np.float32)
        if self.randomization.visual.enabled:
            for key in self._images:
                out[key] = apply_visual(named[key], self.sampled)
        return out if isinstance(obs, dict) else out[None]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._params is not None:
            self._params.restore()  # before the simulator is freed
        self.inner.close()


def _entries(spec) -> dict[str | None, ArraySpec]:
    """Observation entries by key (None: the flat vector)."""
    return dict(spec.observation) if isinstance(spec.observation, dict) else {None: spec.observation}


def _entry_stds(spec, std: float | dict[str, float], what: str) -> dict[str | None, np.ndarray]:
    """{observation key: std of each element, shaped like the entry} for the float entries with a
    std > 0 (key None: the flat vector, whose named parts come from spec.obs_layout)."""
    entries = {k: s for k, s in _entries(spec).items() if np.issubdtype(s.dtype, np.floating)}
    if not isinstance(std, dict):
        return {k: np.full(s.shape, float(std)) for k, s in entries.items()} if std > 0 else {}
    if None in entries:  # a flat vector: names are its layout parts
        layout = spec.obs_layout or (("observation", entries[None].shape),)
        names = [name for name, _ in layout]
        per_element = np.concatenate([np.full(int(np.prod(shape)), std.get(name, 0.0)) for name, shape in layout])
        result = {None: per_element} if per_element.any() else {}
    else:
        names = list(entries)
        result = {k: np.full(s.shape, std[k]) for k, s in entries.items() if std.get(k, 0.0) > 0}
    unknown = sorted(set(std) - set(names))
    if unknown:
        raise ValueError(f"{what}: {spec.env_id} has no float observation entry {unknown[0]!r}; "
                         f"its entries are {', '.join(names)}")
    return result
