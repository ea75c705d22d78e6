"""The stand-in spec (sim2real/stand_in.py): domain randomization plus hidden task keywords, its
presets, and its one-line refusals. The lane-car preset must lie outside the randomization of
configs/ddpg_lane_following_vae_dr.yaml, the config meant to be deployed on it.
"""

from pathlib import Path

import numpy as np
import pytest

import envs
from envs.lane_appearance import FAMILIES
from rlcontrol.config import load_config
from sim2real.randomization import RandomizationError, RandomizedEnv
from sim2real.stand_in import PRESETS, StandIn, check_on_task, one_line, resolve

ROOT = Path(__file__).resolve().parents[2]
LANE = "rlc:lane-following"


def test_lane_car_preset_parses_and_builds_the_car_it_describes() -> None:
    stand_in = StandIn.from_dict("lane-car")
    assert stand_in.randomization.latency_steps == [2, 2] and stand_in.randomization.enabled
    assert stand_in.env_kwargs == {"camera_height": 1.1, "camera_pitch": 18.0, "steering_offset": 0.05,
                                   "appearance_family": "stand-in"}
    check_on_task(stand_in, LANE, camera_kwargs={"pixels": True, "pixel_size": 64, "include_state": True})
    car = envs.make(LANE, seed=0, **stand_in.env_kwargs)
    car.reset()
    assert (car.camera.height, car.camera.pitch, car.vehicle.steering_offset) == (1.1, 18.0, 0.05)
    assert StandIn.from_dict(stand_in.to_dict()) == stand_in
    resolve("lane-car")["env_kwargs"]["camera_height"] = 9.0  # a copy: the preset stays as it is
    assert PRESETS["lane-car"]["env_kwargs"]["camera_height"] == 1.1


def test_lane_car_lies_outside_the_dr_configs_randomization() -> None:
    """Every hidden setting of the preset is outside what the domain-randomized config trains on."""
    config = load_config(ROOT / "configs/ddpg_lane_following_vae_dr.yaml")
    trained, preset = config.env.kwargs, PRESETS["lane-car"]
    for name in ("camera_height", "camera_pitch", "steering_offset"):
        low, high = trained[name]
        value = preset["env_kwargs"][name]
        assert not low <= value <= high, name
        margin = {"camera_height": 0.15, "camera_pitch": 3.0, "steering_offset": 0.03}[name]  # a clear gap
        assert min(abs(value - low), abs(value - high)) == pytest.approx(margin), name
    assert config.env.randomization.latency_steps[1] < preset["latency_steps"][0]
    assert trained["appearance_family"] == "training" != preset["env_kwargs"]["appearance_family"]
    assert not config.env.randomization.visual.enabled  # image gains would stretch the training looks
    assert set(FAMILIES) == {"training", "stand-in"}


def test_stand_in_latency_delays_the_lane_car() -> None:
    """The latency the simulated robot applies (RandomizedEnv over the task): 2 steps of the safe command."""
    stand_in = StandIn.from_dict("lane-car")
    env = RandomizedEnv(envs.make(LANE, obs_format="dict", **stand_in.env_kwargs), stand_in.randomization, seed=0)
    env.reset(seed=3)
    steer = np.array([0.6, 0.0])  # normalized: 0.3 rad left
    observed = [float(env.step(steer).obs["steering"][0]) for _ in range(4)]
    assert observed == [0.0, 0.0, pytest.approx(0.3), pytest.approx(0.3)]  # the commanded angle, 2 steps late


@pytest.mark.parametrize("spec, message", [
    ({"latency_step": [1, 1]}, "--stand-in: unknown key 'latency_step'; did you mean 'latency_steps'?"),
    ({"env_kwarg": {}}, "--stand-in: unknown key 'env_kwarg'; did you mean 'env_kwargs'?"),
    ({"env_kwargs": [1]}, "--stand-in env_kwargs: must be a mapping of task keywords"),
    ({"env_kwargs": {"pixel_size": 32}}, "--stand-in env_kwargs.pixel_size: sets what the policy observes"),
    ({"latency_steps": [2, 1]}, "--stand-in latency_steps: min must be <= max"),
    ("lane-cat", "--stand-in: unknown preset 'lane-cat'; the presets are lane-car"),
    ({"env_kwargs": {"camera_pitch": 99}}, "--stand-in env_kwargs: camera_pitch must be a number or [low, high]"),
    ({"env_kwargs": {"camera_hight": 1.0}},
     "--stand-in env_kwargs: rlc:lane-following: unknown keyword arguments ['camera_hight'] (did you mean"),
    ({"env_kwargs": {"observe_lane": True}}, "--stand-in env_kwargs: ['observe_lane'] change what rlc:lane-following observes or commands"),
    ({"env_kwargs": {"max_steering": 0.4}}, "--stand-in env_kwargs: ['max_steering'] change what rlc:lane-following observes or commands"),
    ({"env_kwargs": {"route_length": 50.0}}, "--stand-in env_kwargs.route_length: is also given in the robot's own"),
    ({"physics": {"mass": [1.0, 2.0]}}, "--stand-in: rlc:lane-following has no physical parameter 'mass'"),
    ({"visual": {"brightness": 0.1}}, "--stand-in: visual randomization needs image observations"),
])
def test_bad_stand_ins_are_one_line_errors(spec, message) -> None:
    with pytest.raises(RandomizationError) as raised:
        check_on_task(StandIn.from_dict(spec), LANE, env_kwargs={"route_length": 100.0})
    line = one_line(raised.value)
    assert line.startswith(message) and "\n" not in line, line


def test_an_empty_stand_in_builds_nothing_and_hides_nothing() -> None:
    empty = StandIn.from_dict(None)
    assert empty == StandIn.from_dict({}) and not empty.randomization.enabled and empty.env_kwargs == {}
    check_on_task(empty, "no-such:task")  # nothing to check: the robot's own make reports a bad id
