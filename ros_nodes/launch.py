"""`rlcontrol deploy`: start, drive and supervise the deploy path on one machine.

    rlcontrol deploy --policy policy.onnx --robot sim [--env ENV] [--duration S] [--episodes N]
                     [--rate HZ] [--real-time-factor X] [--record BAG] [--json]

Starts the simulated robot and the policy node (and the recorder) as separate processes
talking over real DDS, drives the policy node's lifecycle through its services
(configure -> activate, and deactivate at the end, which publishes the safe command),
collects episode returns from /robot/episode and the node's latency figures from
/diagnostics, then stops everything. A child that dies early is reported, and the other
children are stopped. Nothing external is needed: the DDS discovery stays on this machine.

Image policies (a uint8 (C, H, W) input, as trained on `pixels=True` tasks): the simulated robot
is started with its camera on (`--pixels --pixel-size H`, plus `--include-state` when the policy
also takes the task's "state" vector), so it publishes the sensor_msgs/Image the policy node
subscribes to by default, at the policy's own size; for a camera-layout policy (an (H, W, 3)
input, `rlcontrol export --camera-size`) at its camera size, which must be square here.

`--stand-in` (a JSON object or a preset's name, sim2real/stand_in.py) goes to the simulated robot
alone: hidden physics, latency, noise and task keywords the policy's metadata never carries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlcontrol.deploy.rollout import pixel_keywords
from rlcontrol.errors import UserError

NODE = "policy_node"
ROBOT = "sim_robot"


@dataclass
class DeployResult:
    episodes: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> dict:
        returns = [e["return"] for e in self.episodes]
        return {"episodes": len(returns), "returns": returns,
                "mean_return": sum(returns) / len(returns) if returns else None,
                "diagnostics": self.diagnostics, "wall_s": self.wall_s}


def _action_repeat(env_id: str, control_period: float) -> int:
    """The policy was trained at control_period = base period x action repeat: recover the repeat."""
    import envs

    try:
        env = envs.make(env_id)
    except Exception as exc:  # noqa: BLE001 - unknown id, bad task: the user's input
        raise UserError(f"--env {env_id!r}: {str(exc).splitlines()[0]}") from None
    base = env.spec.control_period
    env.close()
    repeat = round(control_period / base)
    if repeat < 1 or abs(repeat * base - control_period) > 1e-6 * max(1.0, control_period):
        raise UserError(f"the policy's control period {control_period:g} s is not a multiple of {env_id}'s "
                        f"{base:g} s; is it the right --env?")
    return repeat


def robot_pixel_flags(meta, env_kwargs: dict | None = None) -> list[str]:
    """sim_robot flags that make it observe what an image policy takes (none for a vector policy).

    A pixel task observes {"pixels": uint8 (3, S, S)} and, with include_state, {"state": (n,)};
    the policy node subscribes to /robot/obs/<input name>, so the policy's inputs must be exactly
    those names. Anything else is refused here with the reason, not left to a robot that never
    sends what the node waits for.
    """
    from ros_nodes.observation_map import is_image_input

    images = [o for o in meta.observations if is_image_input(o.dtype, tuple(o.shape))]
    if not images:
        return []
    names = sorted(o.name for o in meta.observations)
    if [o.name for o in images] != ["pixels"] or not set(names) <= {"pixels", "state"}:
        raise UserError(f"the simulated robot observes 'pixels' (its camera) and optionally 'state'; this "
                        f"policy's inputs are {names}")
    image = images[0]
    # A camera-layout policy takes the camera's frames (H, W, 3) and resizes them in its graph.
    height, width = image.shape[:2] if image.is_camera else image.shape[1:]
    if height != width:
        what = f"camera frames of {height}x{width}" if image.is_camera else f"{height}x{width}"
        raise UserError(f"the simulated robot's camera renders square images; the policy takes {what}")
    clash = sorted(set(env_kwargs or {}) & {"pixels", "pixel_size", "include_state"})
    if clash:
        raise UserError(f"--env-kwargs sets {clash}: deploy sets the camera from the image policy; remove them")
    # The same camera the in-process reference (rlcontrol.deploy.rollout) observes for this policy.
    camera = pixel_keywords(meta)
    return ["--pixels", "--pixel-size", str(camera["pixel_size"])] + (["--include-state"] if camera["include_state"] else [])


def check_stand_in(stand_in: dict | str | None, env_id: str, env_kwargs: dict | None = None,
                   camera_kwargs: dict | None = None) -> dict:
    """The `--stand-in` (a JSON object or a preset's name) as the JSON object the simulated robot alone
    gets; a bad one is one UserError line here, before anything starts (sim2real/stand_in.py)."""
    from sim2real.randomization import RandomizationError
    from sim2real.stand_in import StandIn, check_on_task, one_line, resolve

    try:
        data = resolve(stand_in)
        check_on_task(StandIn.from_dict(data), env_id, env_kwargs, camera_kwargs)
    except RandomizationError as exc:
        raise UserError(one_line(exc)) from None
    return data


def spawn(args: list[str], env: dict, log: Path, cwd: str | Path | None = None,
          new_session: bool = False) -> subprocess.Popen:
    """`python *args` with stdout and stderr in `log` (the child keeps the file open; we do not).

    `new_session`: the terminal's Ctrl-C then reaches only the launcher, which stops the children in order.
    """
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=new_session)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, *, group: bool = False) -> int | None:
    """SIGINT (the nodes' clean shutdown), then SIGKILL (to its whole process group with ``group``, for
    a process started in a session of its own); no-op for a process that already ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    return proc.returncode


def deploy(policy_path: str, *, env_id: str | None = None, env_kwargs: dict | None = None, robot: str = "sim", duration: float | None = None,
           episodes: int | None = 2, rate_hz: float | None = None, real_time_factor: float = 1.0,
           record: str | None = None, seed: int = 0, log_dir: str | None = None, quiet: bool = False,
           realtime_priority: int = 0, trigger: str = "timer", stand_in: dict | str | None = None,
           record_topics: tuple[str, ...] = ()) -> dict:
    from rlcontrol.deploy import runtime

    if robot != "sim":
        raise UserError(f"--robot {robot!r}: only 'sim' is built in; on a real robot run the policy node "
                        "(ros_nodes/policy_node.py) in your ROS 2 launch instead")
    policy = runtime.load(policy_path, warmup=1)
    meta = policy.metadata
    env_id = env_id or meta.env_id
    repeat = _action_repeat(env_id, meta.control_period)
    # The robot steps every control_period / real_time_factor seconds; tick at least twice as fast
    # so that a timer-triggered node always has a command ready from the newest observation.
    rate_hz = rate_hz or max(100.0, 2.0 * real_time_factor / meta.control_period)
    pixel_flags = robot_pixel_flags(meta, env_kwargs)
    stand_in = check_stand_in(stand_in, env_id, env_kwargs, pixel_keywords(meta))
    if record and Path(record).exists():
        raise UserError(f"--record {record} already exists; choose a new bag path")
    if record and pixel_flags:
        raise UserError("--record: the recorder stores Float64MultiArray observations only, not this policy's images")
    logs = Path(log_dir or Path(policy_path).resolve().parent / "deploy-logs")
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

    import rclpy

    rclpy.init(args=["--ros-args", "--disable-rosout-logs"])
    children: dict[str, subprocess.Popen] = {}
    try:
        monitor = _Monitor()
        children["sim_robot"] = spawn(["-m", "ros_nodes.sim_robot", "--env", env_id,
                                        "--env-kwargs", json.dumps(env_kwargs or {}), "--seed", str(seed),
                                        "--action-repeat", str(repeat), "--real-time-factor", str(real_time_factor),
                                        *pixel_flags, *(["--randomization", json.dumps(stand_in)] if stand_in else []),
                                        "--no-autostart"],
                                       env, logs / "sim_robot.log", new_session=True)
        children[NODE] = spawn(["-m", "ros_nodes.policy_node", "--ros-args", "-p",
                                 f"model_path:={Path(policy_path).resolve()}", "-p", f"control_rate_hz:={float(rate_hz)!r}",
                                 "-p", f"obs_timeout_s:={float(max(0.25, 5 * meta.control_period / real_time_factor))!r}",
                                 "-p", f"realtime_priority:={int(realtime_priority)}", "-p", f"trigger:={trigger}"],
                                env, logs / "policy_node.log", new_session=True)
        if record:
            names = [c for o in meta.observations for c, _ in (o.components or ((o.name, o.shape),))]
            extra = ["--topics", ",".join(record_topics)] if record_topics else []
            children["recorder"] = spawn(["-m", "ros_nodes.recorder", "--out", record, "--obs-names", ",".join(names),
                                          *extra], env, logs / "recorder.log", new_session=True)
        result = monitor.run(children, episodes=episodes, duration=duration, quiet=quiet)
    finally:
        codes = {name: stop_process(proc) for name, proc in children.items()}
        if rclpy.ok():
            rclpy.shutdown()
    summary = {**result.summary(), "env_id": env_id, "env_kwargs": env_kwargs or {}, "stand_in": stand_in or {},
               "action_repeat": repeat, "rate_hz": rate_hz,
               "real_time_factor": real_time_factor, "exit_codes": codes, "logs": str(logs)}
    if record:
        summary["bag"] = record
    if pixel_flags:
        summary["pixel_size"] = int(pixel_flags[2])
    return summary


class _Monitor:
    """A small rclpy node in the launcher: drives the lifecycle and listens to results."""

    def __init__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import String

        from ros_nodes import topics

        self.node = Node("rlcontrol_deploy")
        self.change = {name: self.node.create_client(ChangeState, f"/{name}/change_state") for name in (NODE, ROBOT)}
        self.result = DeployResult()
        episode_qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, topics.EPISODE, self._on_episode, episode_qos)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)

    def _on_episode(self, msg) -> None:
        event = json.loads(msg.data)
        if event.get("event") == "end":
            self.result.episodes.append(event)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("rlcontrol policy"):
                self.result.diagnostics = {kv.key: _number(kv.value) for kv in status.values}

    def _transition(self, name: str, transition_id: int, label: str, timeout: float = 30.0) -> None:
        import rclpy
        from lifecycle_msgs.srv import ChangeState

        client = self.change[name]
        deadline = time.monotonic() + timeout
        while not client.wait_for_service(timeout_sec=0.2):
            self._check_children()
            if time.monotonic() > deadline:
                raise UserError(f"{name} did not come up within {timeout:.0f} s (see its log)")
        request = ChangeState.Request()
        request.transition.id = transition_id
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done() or not future.result().success:
            raise UserError(f"{name} refused to {label} (its log says why)")

    def _check_children(self) -> None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                raise UserError(f"{name} exited early with code {proc.returncode} (see its log)")

    def run(self, children: dict, *, episodes: int | None, duration: float | None, quiet: bool) -> DeployResult:
        import rclpy
        from lifecycle_msgs.msg import Transition

        self.children = children
        # The policy is in control before the robot's first episode starts: every episode counts.
        self._transition(NODE, Transition.TRANSITION_CONFIGURE, "configure")
        self._transition(ROBOT, Transition.TRANSITION_CONFIGURE, "configure")
        self._transition(NODE, Transition.TRANSITION_ACTIVATE, "activate")
        self._transition(ROBOT, Transition.TRANSITION_ACTIVATE, "activate")
        start = time.monotonic()
        while True:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            self._check_children()
            if episodes and len(self.result.episodes) >= episodes:
                break
            if duration and time.monotonic() - start >= duration:
                break
        self.result.wall_s = time.monotonic() - start
        self._transition(ROBOT, Transition.TRANSITION_DEACTIVATE, "deactivate")
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # one more diagnostics message with the final figures
            rclpy.spin_once(self.node, timeout_sec=0.05)
        self._transition(NODE, Transition.TRANSITION_DEACTIVATE, "deactivate")
        return self.result


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
