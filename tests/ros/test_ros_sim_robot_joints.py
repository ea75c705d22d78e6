"""The simulated robot's /joint_states and its `randomization` stand-in, over real DDS (separate
`python -m ros_nodes.sim_robot` processes, an rclpy node in the test process)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from ros_nodes import topics

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0


class JointProbe:
    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("joint_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.joints: list[JointState] = []
        self.velocity: list[list[float]] = []
        self.applied: list[list[float]] = []
        self.node.create_subscription(JointState, topics.JOINT_STATES, self.joints.append, reliable)
        self.node.create_subscription(
            Float64MultiArray,
            topics.obs_topic("velocity"),
            lambda m: self.velocity.append(list(m.data)),
            reliable,
        )
        self.node.create_subscription(
            Float64MultiArray, topics.APPLIED_COMMAND, lambda m: self.applied.append(list(m.data)), reliable
        )
        self.command_pub = self.node.create_publisher(Float64MultiArray, topics.COMMAND, QoSProfile(depth=1))

    def spin_until(self, predicate, timeout: float = WAIT_S, command: list[float] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if command is not None:
                self.command_pub.publish(Float64MultiArray(data=command))
            self.executor.spin_once(timeout_sec=0.01)
            if predicate():
                return True
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def probe(ros_env):
    probe = JointProbe()
    try:
        yield probe
    finally:
        probe.close()


@contextlib.contextmanager
def robot(ros_env: dict, log_path: Path, *flags: str):
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ros_nodes.sim_robot", *flags],
            env=ros_env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_joint_states_are_the_simulator_joints(ros_env, probe, tmp_path):
    log = tmp_path / "robot.log"
    with robot(ros_env, log, "--env", "dmc:cartpole-swingup", "--real-time-factor", "2"):
        assert probe.spin_until(lambda: len(probe.joints) >= 30, command=[0.5]), log.read_text()
    msg = probe.joints[-1]
    assert list(msg.name) == ["slider", "hinge_1"]
    assert len(msg.position) == len(msg.velocity) == 2 and len(msg.effort) == 0
    assert msg.header.stamp.sec > 0
    # cartpole observes velocity = qvel: every velocity observation is a published joint velocity.
    joint_velocities = {tuple(np.float32(j.velocity)) for j in probe.joints}
    matched = [tuple(np.float32(v)) in joint_velocities for v in probe.velocity]
    assert probe.velocity and sum(matched) >= len(matched) - 2, (len(matched), sum(matched))


def test_randomization_stand_in_hides_its_physics(ros_env, probe, tmp_path):
    """Actuator gain 0: the cart ignores the command it reports as applied."""
    log = tmp_path / "robot.log"
    hidden = '{"physics": {"actuator_gain": [0.0, 0.0]}, "latency_steps": [2, 2]}'
    with robot(
        ros_env, log, "--env", "dmc:cartpole-swingup", "--real-time-factor", "2", "--randomization", hidden
    ):
        assert probe.spin_until(lambda: len(probe.joints) >= 50, command=[1.0]), log.read_text()
    assert probe.applied[-1] == [1.0]  # what the interface received
    slider_velocity = np.array([j.velocity[0] for j in probe.joints])
    assert np.abs(slider_velocity).max() < 0.05  # nominally 1.0 for 0.3 s moves the cart at > 1 m/s


def test_non_mujoco_task_publishes_no_joint_states(ros_env, probe, tmp_path):
    log = tmp_path / "robot.log"
    with robot(ros_env, log, "--env", "rlc:lane-following", "--real-time-factor", "4"):
        assert probe.spin_until(lambda: len(probe.applied) >= 5, command=[0.0, 0.0]), log.read_text()
        assert probe.node.count_publishers(topics.JOINT_STATES) == 0
    assert not probe.joints


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--randomization", "{not json"], "randomization must be a JSON object"),
        (["--randomization", "[1]"], "randomization must be a JSON object"),
        (
            ["--randomization", '{"physics": {"actuator_gian": [1, 1]}}'],
            "did you mean 'randomization.physics.actuator_gain'",
        ),
        (["--randomization", '{"latency_steps": [2, 1]}'], "randomization.latency_steps"),
        (
            ["--env", "rlc:lane-following", "--randomization", '{"physics": {"mass": [1, 2]}}'],
            "no physical parameter 'mass'",
        ),
    ],
)
def test_bad_randomization_is_one_line_error(ros_env, flags, message):
    proc = subprocess.run(
        [sys.executable, "-m", "ros_nodes.sim_robot", "--env", "dmc:cartpole-swingup", *flags],
        env=ros_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("sim_robot: error: ") and message in errors[0], (
        proc.stderr
    )
