"""The simulated robot over real DDS: a separate `python -m ros_nodes.sim_robot` process, driven
and observed from an rclpy node in the test process, exactly as the policy node would see it.

Waits poll `spin_once` with a deadline instead of sleeping, so the tests are as fast as the
machine allows and only slow down, never fail, on a busy CI runner.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64, Float64MultiArray, String

from ros_nodes import topics

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_ID = "dmc:cartpole-swingup"  # obs position(3), velocity(2); one actuator "slide" in [-1, 1]
OBS_SIZES = {"position": 3, "velocity": 2}
WAIT_S = 20.0  # generous: the robot imports dm_control and discovers peers on a shared 2-core machine


class Probe:
    """Test-side node in a private rclpy context: sends commands, records what the robot publishes."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_robot_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.obs: dict[str, list[Float64MultiArray]] = {name: [] for name in OBS_SIZES}
        self.applied: list[list[float]] = []
        self.rewards: list[float] = []
        self.events: list[dict] = []
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for name, received in self.obs.items():
            self.node.create_subscription(Float64MultiArray, topics.obs_topic(name), received.append, reliable)
        self.node.create_subscription(Float64MultiArray, topics.APPLIED_COMMAND,
                                      lambda m: self.applied.append(list(m.data)), reliable)
        self.node.create_subscription(Float64, topics.REWARD, lambda m: self.rewards.append(m.data), reliable)
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, topics.EPISODE, lambda m: self.events.append(json.loads(m.data)),
                                      latched)
        self.command_pub = self.node.create_publisher(Float64MultiArray, topics.COMMAND, QoSProfile(depth=1))

    def spin_until(self, predicate, timeout: float = WAIT_S, command: list[float] | None = None) -> bool:
        """Spins until predicate() holds, re-sending `command` every turn like a control loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if command is not None:
                self.command_pub.publish(Float64MultiArray(data=command))
            self.executor.spin_once(timeout_sec=0.01)
            if predicate():
                return True
        return False

    def change_state(self, transition_id: int) -> bool:
        client = self.node.create_client(ChangeState, "/sim_robot/change_state")
        try:
            assert client.wait_for_service(timeout_sec=WAIT_S), "lifecycle service never appeared"
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
            self.executor.spin_until_future_complete(future, timeout_sec=WAIT_S)
            return bool(future.result() and future.result().success)
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@contextlib.contextmanager
def running_robot(ros_env: dict, log_path: Path, *flags: str):
    """Starts the sim robot process; always stops it (SIGTERM, then SIGKILL) on the way out."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ros_nodes.sim_robot", "--env", ENV_ID, *flags],
                                env=ros_env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
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


@pytest.fixture
def probe(ros_env):
    probe = Probe()
    try:
        yield probe
    finally:
        probe.close()


def _robot_log(path: Path) -> str:
    return "robot output:\n" + path.read_text()


def test_obs_commands_and_episodes(ros_env, probe, tmp_path):
    log = tmp_path / "robot.log"
    # A long command timeout, so the last good command stays in force while malformed ones arrive.
    with running_robot(ros_env, log, "--max-episode-steps", "25", "--real-time-factor", "2",
                       "--command-timeout", "30", "--seed", "3"):
        assert probe.spin_until(lambda: all(probe.obs.values())), _robot_log(log)
        for name, size in OBS_SIZES.items():
            msg = probe.obs[name][-1]
            assert msg.layout.dim[0].label == name
            assert len(msg.data) == size == msg.layout.dim[0].size

        # Time limit of 25 steps: an "end" event, then the next episode's "start" event.
        def ended_and_restarted() -> bool:
            ends = [e for e in probe.events if e["event"] == "end"]
            return bool(ends) and any(e["event"] == "start" and e["episode"] == ends[0]["episode"] + 1
                                      for e in probe.events)

        assert probe.spin_until(ended_and_restarted), (probe.events, _robot_log(log))
        end = next(e for e in probe.events if e["event"] == "end")
        assert (end["steps"], end["truncated"], end["terminated"]) == (25, True, False)
        assert math.isfinite(end["return"])
        assert probe.rewards

        # A constant command is applied as sent; one beyond the limit is clipped to it.
        assert probe.spin_until(lambda: probe.applied[-1:] == [pytest.approx([0.3])], command=[0.3]), \
            probe.applied[-5:]
        assert probe.spin_until(lambda: probe.applied[-1:] == [[1.0]], command=[5.0]), probe.applied[-5:]

        # Malformed commands are refused: the robot keeps applying the last good one.
        seen = len(probe.applied)
        for bad in ([0.1, 0.2], [math.nan], [-math.inf]):
            assert probe.spin_until(lambda: len(probe.applied) >= seen + 10, command=bad)  # noqa: B023
            seen = len(probe.applied)
        assert probe.applied[-30:] == [[1.0]] * 30


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_timeout_then_clean_exit_on_signal(ros_env, probe, tmp_path, signum):
    log = tmp_path / "robot.log"
    with running_robot(ros_env, log, "--command-timeout", "0.3") as proc:
        assert probe.spin_until(lambda: probe.applied[-1:] == [[-0.5]], command=[-0.5]), _robot_log(log)
        # Commands stop: after the timeout the robot applies the safe zero command by itself.
        assert probe.spin_until(lambda: probe.applied[-1:] == [[0.0]], timeout=5.0), probe.applied[-5:]
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0, _robot_log(log)
    assert "Traceback" not in log.read_text()


def test_lifecycle_driven_from_outside(ros_env, probe, tmp_path):
    log = tmp_path / "robot.log"
    with running_robot(ros_env, log, "--no-autostart"):
        assert probe.change_state(Transition.TRANSITION_CONFIGURE), _robot_log(log)
        probe.spin_until(lambda: False, timeout=0.3)
        assert not any(probe.obs.values()), "an inactive robot must not step"
        assert probe.change_state(Transition.TRANSITION_ACTIVATE)
        assert probe.spin_until(lambda: len(probe.obs["position"]) > 5), _robot_log(log)
        assert probe.change_state(Transition.TRANSITION_DEACTIVATE)
        probe.spin_until(lambda: False, timeout=0.3)  # drain what was in flight
        paused_at = len(probe.obs["position"])
        probe.spin_until(lambda: False, timeout=0.5)
        assert len(probe.obs["position"]) == paused_at, "a deactivated robot must not step"
        assert probe.change_state(Transition.TRANSITION_CLEANUP)
    assert [e["event"] for e in probe.events] == ["start"]


def test_unknown_env_is_one_line_error(ros_env):
    proc = subprocess.run([sys.executable, "-m", "ros_nodes.sim_robot", "--env", "nosuch:env"],
                          env=ros_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("sim_robot: error: "), proc.stderr
    assert "nosuch:env" in errors[0]


@pytest.mark.parametrize("kwargs, message", [
    ("[1, 2]", "env_kwargs must be a JSON object"),
    ("{not json", "env_kwargs must be a JSON object"),
    ('{"no_such_keyword": 1}', "no_such_keyword"),
    ('{"object_set": "nope"}', "object_set"),
])
def test_bad_env_kwargs_are_one_line_errors(ros_env, kwargs, message):
    proc = subprocess.run([sys.executable, "-m", "ros_nodes.sim_robot", "--env", "rlc:grasp", "--env-kwargs", kwargs],
                          env=ros_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("sim_robot: error: ") and message in errors[0], proc.stderr


def test_env_kwargs_reach_the_task(ros_env, probe, tmp_path):
    """Task keywords go to envs.make: rlc:grasp with max_steps 3 ends its episodes after 3 steps."""
    log = tmp_path / "robot.log"
    with running_robot(ros_env, log, "--env", "rlc:grasp", "--env-kwargs", '{"max_steps": 3, "object_set": "test"}',
                       "--real-time-factor", "4"):
        assert probe.spin_until(lambda: any(e["event"] == "end" for e in probe.events)), _robot_log(log)
    end = next(e for e in probe.events if e["event"] == "end")
    assert (end["steps"], end["terminated"]) == (3, True)


def test_lockstep_steps_once_each_observation_is_answered(ros_env, probe, tmp_path):
    """--lockstep: the robot steps when its last observation was answered (or the command timeout
    passed), so a slow controller slows the robot instead of adding latency; every episode end
    reports the steps whose observation had no answer (late_commands)."""
    log = tmp_path / "robot.log"
    with running_robot(ros_env, log, "--lockstep", "--command-timeout", "1.0", "--max-episode-steps", "10",
                       "--real-time-factor", "10"):
        answered = [0]

        def answer_each_observation() -> bool:
            seen = len(probe.obs["velocity"])  # the last component the robot publishes per step
            if seen > answered[0]:
                answered[0] = seen
                probe.command_pub.publish(Float64MultiArray(data=[0.2]))
            return len([e for e in probe.events if e["event"] == "end"]) >= 3

        assert probe.spin_until(answer_each_observation), (probe.events, _robot_log(log))
        ends = [e for e in probe.events if e["event"] == "end"]
        # (The first episode may start before this node is discovered: its first step times out.)
        assert [e["late_commands"] for e in ends[1:3]] == [0, 0], ends
        # No more answers: one step per command timeout, not the 1,000 per second of this real-time factor.
        steps = len(probe.applied)
        probe.spin_until(lambda: False, timeout=2.5)
        assert 1 <= len(probe.applied) - steps <= 3, len(probe.applied) - steps
