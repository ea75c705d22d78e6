"""A stand-in for the real robot: the world the simulated robot hides from the policy and the learner.

`--stand-in` of `rlcontrol deploy` and `rlcontrol finetune` (the simulated robot's `randomization`
parameter) takes one JSON object: the domain randomization schema (sim2real/randomization.py:
physics, latency, noise, visual) plus `env_kwargs`, task keywords only the simulated robot applies
(for rlc:lane-following: camera pose, steering offset, appearance family); or a preset's name.
The launchers hand it to the simulated robot alone, so neither the policy's metadata nor the
learner ever holds it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim2real.randomization import DomainRandomization, RandomizationError

PRESETS: dict[str, dict] = {
    # docs/sim2real.md, "A stand-in car for lane following": the camera 0.3 m lower and 6 degrees
    # further down, the wheels 0.05 rad (2.9 degrees) left of the command, commands 2 steps late,
    # roads that look like no training road. configs/ddpg_lane_following_vae_dr.yaml randomizes
    # inside ranges that exclude each of these.
    "lane-car": {
        "latency_steps": [2, 2],
        "env_kwargs": {"camera_height": 1.1, "camera_pitch": 18.0, "steering_offset": 0.05,
                       "appearance_family": "stand-in"},
    },
}

# What the policy observes and how it is stepped: its metadata and the launch decide these, so a
# hidden world may not change them.
INTERFACE_KEYWORDS = ("pixels", "pixel_size", "include_state", "obs_format", "seed", "action_repeat",
                      "max_episode_steps")
_KEYS = (*(f.name for f in dataclasses.fields(DomainRandomization)), "env_kwargs")


class StandInError(RandomizationError):
    """A bad stand-in setting: which key (dotted) and why, as one line (`message(prefix)`)."""


@dataclass(frozen=True)
class StandIn:
    """The hidden world: domain randomization (physics, latency, noise, visual) and task keywords."""

    randomization: DomainRandomization = field(default_factory=DomainRandomization)
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> StandIn:
        """From a JSON object or a preset's name; raises StandInError (or RandomizationError) naming the key."""
        data = resolve(data)
        for key in data:
            if key not in _KEYS:
                close = difflib.get_close_matches(str(key), _KEYS, n=1, cutoff=0.6)
                raise StandInError(str(key), "unknown key", close[0] if close else "")
        hidden = data.get("env_kwargs") or {}
        if not isinstance(hidden, Mapping):
            raise StandInError("env_kwargs", f"must be a mapping of task keywords, got {hidden!r}")
        for key in hidden:
            if key in INTERFACE_KEYWORDS:
                raise StandInError(f"env_kwargs.{key}", "sets what the policy observes or how it is stepped, "
                                                        "which the policy decides; a stand-in may not")
        randomization = DomainRandomization.from_dict({k: v for k, v in data.items() if k != "env_kwargs"})
        return cls(randomization, dict(hidden))

    def to_dict(self) -> dict:
        return {**self.randomization.to_dict(), "env_kwargs": dict(self.env_kwargs)}


def resolve(value: str | Mapping | None) -> dict:
    """A stand-in spec as a JSON object: a preset's name gives a copy of the preset; None gives {}."""
    if value is None:
        return {}
    if isinstance(value, str):
        if value not in PRESETS:
            raise StandInError("", f"unknown preset {value!r}; the presets are {', '.join(PRESETS)}")
        return copy.deepcopy(PRESETS[value])
    if not isinstance(value, Mapping):
        raise StandInError("", f"must be a JSON object or a preset's name, got {value!r}")
    return dict(value)


def check_on_task(stand_in: StandIn, env_id: str, env_kwargs: Mapping[str, Any] | None = None,
                  camera_kwargs: Mapping[str, Any] | None = None) -> None:
    """Refuses, with one StandInError line, what the simulated robot could not run or must not do.

    Builds `env_id` as the robot will (its own `env_kwargs`, the policy's `camera_kwargs`), with and
    without the hidden keywords: they must be keywords the task takes, with values it accepts, and
    leave its observation and action specs as they are (a policy could tell them apart otherwise);
    the randomization must be one the task supports. Nothing is built for an empty stand-in.
    """
    import envs
    from sim2real.randomization import RandomizedEnv

    env_kwargs, hidden = dict(env_kwargs or {}), stand_in.env_kwargs
    both = sorted(set(hidden) & set(env_kwargs))
    if both:
        raise StandInError(f"env_kwargs.{both[0]}", "is also given in the robot's own env_kwargs; give it once")
    if not hidden and not stand_in.randomization.enabled:
        return
    try:
        nominal = envs.make(env_id, obs_format="dict", **env_kwargs, **(camera_kwargs or {}))
    except (TypeError, ValueError):
        return  # the robot's own settings are at fault, and whoever builds the task reports them
    try:
        try:
            env = envs.make(env_id, obs_format="dict", **env_kwargs, **hidden, **(camera_kwargs or {}))
        except (TypeError, ValueError) as exc:
            raise StandInError("env_kwargs", str(exc).splitlines()[0]) from None
        a, b = nominal.spec, env.spec
        same = (a.observation == b.observation and a.obs_layout == b.obs_layout and a.action_names == b.action_names
                and a.control_period == b.control_period and np.array_equal(a.action_low, b.action_low)
                and np.array_equal(a.action_high, b.action_high))
        if not same:
            env.close()
            raise StandInError("env_kwargs", f"{sorted(hidden)} change what {env_id} observes or commands; a "
                                             "stand-in may only change the world behind them")
        try:
            env = RandomizedEnv(env, stand_in.randomization)
        except ValueError as exc:  # physics or observation entries the task does not have
            env.close()
            raise StandInError("", str(exc).splitlines()[0]) from None
        env.close()
    finally:
        nominal.close()


def one_line(exc: RandomizationError, flag: str = "--stand-in") -> str:
    """The error of a stand-in given as `flag`, as the one line a command prints."""
    if exc.suggestion is not None:
        return f"{flag}: {exc.message()}"
    return f"{flag} {exc.key}: {exc.problem}" if exc.key else f"{flag}: {exc.problem}"
