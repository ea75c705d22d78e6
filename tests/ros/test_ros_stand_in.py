"""The lane-car stand-in over real DDS: a `python -m ros_nodes.sim_robot` process started with the
preset's JSON publishes a car the policy never saw (another camera pose, another look, a steering
offset and 2 steps of latency) through the nominal car's topics; and a bad stand-in is one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

import envs
from rlcontrol.errors import UserError
from ros_nodes import launch, topics
from sim2real.randomization import RandomizedEnv
from sim2real.stand_in import PRESETS, StandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0
SIZE = 64
COMMAND = [0.3, 5.0]  # steering rad, speed set-point m/s
CAMERA = {"pixels": True, "pixel_size": SIZE, "include_state": True}


def _reset_obs(stand_in: StandIn | None) -> dict:
    """Episode 0's first observation (seed 0) of the nominal car, or of the stand-in car."""
    hidden = stand_in.env_kwargs if stand_in else {}
    env = envs.make("rlc:lane-following", seed=0, obs_format="dict", **CAMERA, **hidden)
    if stand_in:
        env = RandomizedEnv(env, stand_in.randomization, seed=0)
    return env.reset(seed=0)


def test_sim_robot_drives_the_lane_car_stand_in(ros_env, tmp_path):
    stand_in = StandIn.from_dict(PRESETS["lane-car"])
    nominal, expected = _reset_obs(None), _reset_obs(stand_in)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("stand_in_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    images: list[Image] = []
    states: list[list[float]] = []
    applied: list[list[float]] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subscriptions = [
        node.create_subscription(Image, topics.obs_topic("pixels"), images.append, reliable),
        node.create_subscription(Float64MultiArray, topics.obs_topic("state"), lambda m: states.append(list(m.data)),
                                 reliable),
        node.create_subscription(Float64MultiArray, topics.APPLIED_COMMAND, lambda m: applied.append(list(m.data)),
                                 reliable)]
    command_pub = node.create_publisher(Float64MultiArray, topics.COMMAND, QoSProfile(depth=1))
    log = tmp_path / "sim_robot.log"
    proc = launch.spawn(["-m", "ros_nodes.sim_robot", "--env", "rlc:lane-following", "--pixels", "--pixel-size",
                         str(SIZE), "--include-state", "--randomization", json.dumps(PRESETS["lane-car"]),
                         "--real-time-factor", "2", "--no-autostart"], ros_env, log, cwd=REPO_ROOT)
    try:
        client = node.create_client(ChangeState, "/sim_robot/change_state")
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert client.wait_for_service(timeout_sec=WAIT_S), log.read_text()
            deadline = time.monotonic() + WAIT_S  # activate only once the robot hears us and we hear it
            while transition == Transition.TRANSITION_ACTIVATE and not (
                    all(sub.get_publisher_count() for sub in subscriptions) and command_pub.get_subscription_count()):
                assert time.monotonic() < deadline, log.read_text()
                executor.spin_once(timeout_sec=0.01)
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            executor.spin_until_future_complete(future, timeout_sec=WAIT_S)
            assert future.result() and future.result().success, log.read_text()
        deadline = time.monotonic() + WAIT_S
        while len(states) < 13 and time.monotonic() < deadline:
            command_pub.publish(Float64MultiArray(data=COMMAND))
            executor.spin_once(timeout_sec=0.01)
        assert len(states) >= 13 and images, log.read_text()
    finally:
        launch.stop_process(proc, timeout=5.0)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()

    # The camera: 64x64 rgb8 of the stand-in car, unlike the nominal car's on the same road and start.
    first = images[0]
    assert (first.encoding, first.height, first.width) == ("rgb8", SIZE, SIZE)
    seen = np.frombuffer(first.data, np.uint8).reshape(SIZE, SIZE, 3)
    np.testing.assert_array_equal(seen, expected["pixels"].transpose(1, 2, 0))
    assert np.abs(seen.astype(int) - nominal["pixels"].transpose(1, 2, 0)).mean() > 20
    sky = seen[:12].reshape(-1, 3).astype(float).mean(axis=0)
    assert sky[0] > sky[2] + 40  # the stand-in's evening sky; every training sky is bluer than red
    # The state is the nominal car's kind ([speed, commanded angle], never the wheels' angle); its start
    # is the stand-in's own (its looks take other draws from the episode's generator before the start).
    assert len(states[0]) == nominal["state"].size
    np.testing.assert_allclose(states[0], expected["state"], rtol=1e-6)
    # Latency 2: the angle observed after tick k is the command the robot received at tick k - 2
    # (the safe zero before the first two arrive); applied_command reports it on receipt.
    assert any(abs(a[0] - COMMAND[0]) < 1e-9 for a in applied[:10]), applied[:10]
    for k in range(1, 13):
        delayed = applied[k - 3][0] if k >= 3 else 0.0
        assert states[k][1] == pytest.approx(delayed, abs=1e-6), (k, states[:k + 1], applied[:k])


def test_bad_stand_in_is_one_line_from_the_robot_and_the_launcher(ros_env):
    proc = subprocess.run([sys.executable, "-m", "ros_nodes.sim_robot", "--env", "rlc:lane-following",
                           "--randomization", '{"env_kwargs": {"camera_pitch": 99}}'],
                          env=ros_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("sim_robot: error: randomization.env_kwargs: camera_pitch must be"), errors
    # `rlcontrol deploy` / `rlcontrol finetune` check it before starting anything (UserError: one line, exit 2).
    for stand_in, message in [({"env_kwargs": {"pixels": False}}, "--stand-in env_kwargs.pixels: sets what"),
                              ("lane-cab", "--stand-in: unknown preset 'lane-cab'"),
                              ({"env_kwargs": {"steering_offset": 1.0}}, "--stand-in env_kwargs: steering_offset")]:
        with pytest.raises(UserError) as raised:
            launch.check_stand_in(stand_in, "rlc:lane-following", {}, CAMERA)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert launch.check_stand_in("lane-car", "rlc:lane-following", {}, CAMERA) == PRESETS["lane-car"]
