"""A ROS 2 node that wraps any `envs/` task and behaves like the robot.

With it the whole deploy path (policy node, safety layer, recorder) runs on one machine
against exactly the topics a real robot offers (see `ros_nodes.topics`): the policy cannot
tell it from hardware, and a recording of its topics holds exact transitions because the
node publishes, per step, applied_command, reward, the joint states, every observation
component, then an "end" event if the episode ended; after a reset, a "start" event, the joint
states and the first observation.

Joint states (MuJoCo tasks: dmc:*, rlc:grasp, rlc:obstacle-course, gym MuJoCo envs): a
sensor_msgs/JointState on `/joint_states` (parameter `joint_states_topic`) with the name,
position (qpos) and velocity (qvel) of every hinge and slide joint, stamped, what a robot's
encoders give and what system identification (`rlcontrol sysid`) fits to. Tasks without a
MuJoCo model (rlc:lane-following) do not publish it.

A stand-in for the real robot: parameter `randomization` (flag `--randomization`) takes a
stand-in spec as JSON (sim2real/stand_in.py): the schema of `env.randomization` in run configs (e.g.
`{"physics": {"actuator_gain": [0.6, 0.6]}, "latency_steps": [1, 1], "obs_noise_std": 0.01}`),
applied through `sim2real.randomization.RandomizedEnv` with the node's seed, plus `env_kwargs`,
hidden task keywords (e.g. a lane car's camera pose and steering offset), or a preset's name
("lane-car"): physics, latency, noise and looks the policy was not trained on, which may not
change what it observes or commands. Like a real robot it does not tell: applied_command
is the command its interface received (after its limits), not the delayed or noisy one the
actuators executed, and the joint states are the true ones (sensor noise goes on the
observation components).

Pixel tasks (parameters `pixels`, `pixel_size`, `include_state`, which `rlcontrol deploy` sets
from an image policy's metadata) publish their camera on `<obs_prefix>pixels` as a sensor_msgs/Image
(rgb8, what a camera driver sends) and the rest of the observation as before.

Like a robot it acts in physical units, clips commands into its own limits, refuses
malformed commands, and falls back to the safe zero command when commands stop arriving.

Run it with `python -m ros_nodes.sim_robot --env dmc:cartpole-swingup` (configures and
activates itself), or with `--no-autostart` to leave the lifecycle to a manager.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Sequence

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, Int64, MultiArrayDimension, String

from envs.core import scale_action, unscale_action
from ros_nodes import topics

NODE_NAME = "sim_robot"

# Observations: RELIABLE so a recorder on loopback sees every state of a transition
# (best-effort can drop one silently and break the (obs, action, next obs) chain), yet depth 1
# so a slow consumer is never handed a backlog of stale states: only the newest state matters
# to a policy. A best-effort (sensor-style) subscriber still matches a reliable publisher.
OBS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
# Reward and applied command feed evaluation and recordings: every sample must arrive.
EVAL_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
# Episode events are rare and define episode boundaries: transient_local keeps the last ten
# for subscribers that join late (a recorder started after the robot still learns the episode).
EPISODE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Commands: best-effort depth 1 matches both reliable and best-effort publishers (controllers
# differ), and only the newest command matters; a lost one is replaced by the next, and the
# command timeout covers a silent publisher.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)
# The learner's progress (wait_for_learner): the latest value is all that matters, including to a
# robot that subscribes after it was published.
LEARNER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# name: (default, description). Read in on_configure, so a lifecycle manager may set them first.
PARAMETERS: dict[str, tuple[object, str]] = {
    "env_id": ("dmc:cartpole-swingup", "envs.make id of the simulated task"),
    "env_kwargs": ("{}", "task keywords for envs.make as a JSON object, e.g. {\"object_set\": \"test\"} for rlc:grasp"),
    "seed": (0, "seed of episode 0; episode i is reset with seed + i"),
    "action_repeat": (1, "physics control steps per command"),
    "max_episode_steps": (0, "truncate episodes after this many steps; 0 = the task's own limit"),
    "real_time_factor": (1.0, "1.0 steps at the control period in wall time; larger runs faster"),
    "command_timeout_s": (0.5, "apply the safe zero command after this long without a good command; 0 = never"),
    "episodes": (0, "stop stepping after this many episodes; 0 = run forever"),
    "autostart": (False, "configure and activate at startup instead of waiting for a lifecycle manager"),
    "command_topic": (topics.COMMAND, "physical command in spec action order"),
    "applied_command_topic": (topics.APPLIED_COMMAND, "command applied on the last step"),
    "reward_topic": (topics.REWARD, "reward of the last step"),
    "episode_topic": (topics.EPISODE, "JSON start/end events"),
    "obs_prefix": (topics.OBS_PREFIX, "observation component <name> is published on <obs_prefix><name>"),
    "pixels": (False, "observe the task's camera: {pixels: uint8 (3, S, S)} published as sensor_msgs/Image rgb8"),
    "pixel_size": (84, "S: the camera image's height and width in pixels (with pixels)"),
    "include_state": (False, "with pixels, also observe the task's flat state vector as component 'state'"),
    "joint_states_topic": (topics.JOINT_STATES, "sensor_msgs/JointState of the 1-DOF joints (MuJoCo tasks)"),
    "lockstep": (False, "step only once the policy node has answered the last observation (a command received after "
                        "it was published) or command_timeout_s passed: a loaded machine then slows the simulated "
                        "robot instead of delaying its commands, so the command latency is the stand-in's alone"),
    "wait_for_learner": (False, "between episodes, hold until the live learner has trained on the episode that "
                                "ended (its /finetune/trained_through), as Learning to Drive in a Day trained between "
                                "episodes; the robot does not step meanwhile"),
    "learner_wait_timeout_s": (600.0, "with wait_for_learner: start the next episode anyway after this long (a "
                                      "learner that is gone must not stop the robot forever); 0 = wait forever"),
    "randomization": ("{}", "hidden world as a stand-in JSON object (env.randomization schema plus env_kwargs, "
                            "hidden task keywords) or a preset name, e.g. {\"physics\": {\"actuator_gain\": "
                            "[0.6, 0.6]}, \"latency_steps\": [1, 1]}"),
}
PIXEL_KEYWORDS = ("pixels", "pixel_size", "include_state")


class ConfigError(ValueError):
    """A parameter value the robot cannot run with (reported as one line by main)."""


def check_command(values: Sequence[float], action_dim: int) -> tuple[np.ndarray | None, str]:
    """Returns (command, "") for a usable physical command or (None, reason) for a malformed one.

    Wrong lengths and NaN/inf are refused rather than repaired: they signal a broken sender,
    and guessing the missing joint or replacing NaN would move the robot on made-up data.
    """
    command = np.asarray(values, dtype=np.float64).reshape(-1)
    if command.shape != (action_dim,):
        return None, f"expected {action_dim} values, got {command.size}"
    if not np.all(np.isfinite(command)):
        return None, f"non-finite values {command.tolist()}"
    return command, ""


def physical_to_normalized(command: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps a physical command onto the env's [-1, 1] actions, clipped like a robot's limits.

    A degenerate actuator (low == high) has only one possible value, so it maps to 0.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = unscale_action(command, low, high)
    normalized = np.where(high > low, normalized, 0.0)
    return np.clip(normalized, -1.0, 1.0)


def is_image(spec) -> bool:
    """An observation part published as a camera image: uint8 (C, H, W)."""
    return np.dtype(spec.dtype) == np.uint8 and len(spec.shape) == 3


def image_message(chw: np.ndarray, frame_id: str = "") -> Image:
    """A uint8 RGB (3, H, W) observation as an rgb8 sensor_msgs/Image (rows of H x W x 3 bytes)."""
    channels, height, width = chw.shape
    if channels != 3 or chw.dtype != np.uint8:
        raise ValueError(f"image_message needs uint8 (3, H, W), got {chw.dtype} {chw.shape}")
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width)
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(chw.transpose(1, 2, 0)).tobytes()
    return msg


def array_message(values: np.ndarray, label: str = "") -> Float64MultiArray:
    """A flat Float64MultiArray whose single dimension carries `label` (the component name)."""
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=data.size, stride=data.size)]
    msg.data = data.tolist()
    return msg


class SimRobotNode(LifecycleNode):
    """Lifecycle node stepping a simulated task on a wall-clock timer, like a robot's control loop.

    configure builds the env, publishers and the command subscription; activate starts the
    physics timer (and the first episode); deactivate pauses it mid-episode; cleanup closes
    the env. One single-threaded executor runs everything: physics is cheap, commands only
    store a value, and rejected-command logging is throttled, so the timer is never starved.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.env = None
        self.spec = None
        self.config_error = ""  # why the last configure failed, for main's one-line error
        self.finished = False  # True once `episodes` episodes have ended
        self.rejected_commands = 0
        self._timer = None
        self._subscription = None
        self._publishers: list = []
        self._joint_pub = None
        self._randomized = False
        self._learner_sub = None
        self._trained_through = -1  # the last robot episode the live learner reports trained on
        self._reset_episode_state()
        if self.get_parameter("autostart").value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.config_error = ""
        try:
            self._configure()
        except (ValueError, TypeError) as err:  # envs raise UnknownEnvError (a ValueError) for bad ids
            self.config_error = str(err)
            if not self.get_parameter("autostart").value:  # with autostart, the caller reports it (main: one line)
                self.get_logger().error(f"configure failed: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if self._obs is None and not self.finished:
            self._start_episode(0)
        if not self.finished:
            # Lockstep polls at a quarter period for the answer; otherwise one tick per step.
            self._timer = self.create_timer(self._period / 4 if self._lockstep else self._period, self._on_tick)
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timer()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ setup

    def _configure(self) -> None:
        import envs  # deferred: simulator backends import slowly and main must parse args first

        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        _check_parameters(p)
        self._seed = int(p["seed"])
        self._episodes = int(p["episodes"])
        self._timeout = float(p["command_timeout_s"])
        stand_in = p["randomization"]
        if stand_in.env_kwargs:  # hidden task keywords: the task must take them and look the same to the policy
            from sim2real.stand_in import StandInError, check_on_task

            try:
                check_on_task(stand_in, p["env_id"], p["env_kwargs"], _pixel_keywords(p))
            except StandInError as exc:
                raise ConfigError(exc.message(prefix="randomization.")) from None
        try:
            self.env = envs.make(p["env_id"], seed=self._seed, action_repeat=int(p["action_repeat"]),
                                 obs_format="dict", max_episode_steps=int(p["max_episode_steps"]) or None,
                                 **p["env_kwargs"], **stand_in.env_kwargs, **_pixel_keywords(p))
        except TypeError as exc:  # a keyword the task does not take
            raise ConfigError(f"env_kwargs {p['env_kwargs']} rejected by {p['env_id']}: {exc}") from None
        self._randomized = stand_in.randomization.enabled
        if self._randomized:
            from sim2real.randomization import RandomizedEnv

            try:
                self.env = RandomizedEnv(self.env, stand_in.randomization, seed=self._seed)
            except ValueError as exc:  # a parameter or observation entry the task does not have
                raise ConfigError(f"randomization: {exc}") from None
        self.spec = self.env.spec
        self._period = self.spec.control_period / float(p["real_time_factor"])
        self._low = np.asarray(self.spec.action_low, dtype=np.float64)
        self._high = np.asarray(self.spec.action_high, dtype=np.float64)
        # What a robot does without orders: zero effort, moved into the limits if zero is outside.
        self._safe_command = np.clip(np.zeros(self.spec.action_dim), self._low, self._high)
        names = [name for name, _ in self.spec.obs_layout] or list(self.spec.observation)
        parts = self.spec.observation if isinstance(self.spec.observation, dict) else {}
        self._images = {name for name in names if name in parts and is_image(parts[name])}
        self._obs_pubs = {name: self._publisher(Image if name in self._images else Float64MultiArray,
                                                p["obs_prefix"] + name, OBS_QOS)
                          for name in names}
        self._applied_pub = self._publisher(Float64MultiArray, p["applied_command_topic"], EVAL_QOS)
        self._reward_pub = self._publisher(Float64, p["reward_topic"], EVAL_QOS)
        self._episode_pub = self._publisher(String, p["episode_topic"], EPISODE_QOS)
        self._setup_joint_states(p["joint_states_topic"])
        self._subscription = self.create_subscription(Float64MultiArray, p["command_topic"],
                                                      self._on_command, COMMAND_QOS)
        self._lockstep = bool(p["lockstep"])
        self._wait_for_learner = bool(p["wait_for_learner"])
        self._learner_wait_timeout = float(p["learner_wait_timeout_s"])
        if self._wait_for_learner:
            self._learner_sub = self.create_subscription(Int64, topics.TRAINED_THROUGH, self._on_trained_through,
                                                         LEARNER_QOS)
        self.get_logger().info(
            f"{self.spec.env_id}: actions {list(self.spec.action_names)} in [{self._low}, {self._high}], "
            f"obs {names}{self._describe_images(parts)}, step every {self._period * 1e3:.2f} ms")

    def _setup_joint_states(self, topic: str) -> None:
        """A JointState publisher for the hinge and slide joints of a MuJoCo task (none otherwise)."""
        from sim2real.sysid import mujoco_model_data, one_dof_joints

        self._joint_pub = None
        found = mujoco_model_data(self.env)
        joints = one_dof_joints(found[0]) if found is not None else []
        if not joints:
            return
        self._joint_names = [name for name, _, _ in joints]
        self._joint_qadr = np.asarray([q for _, q, _ in joints], dtype=np.intp)
        self._joint_dadr = np.asarray([d for _, _, d in joints], dtype=np.intp)
        self._joint_pub = self._publisher(JointState, topic, EVAL_QOS)

    def _publish_joint_states(self) -> None:
        if self._joint_pub is None:
            return
        from sim2real.sysid import mujoco_model_data

        data = mujoco_model_data(self.env)[1]  # looked up each time: a task may replace its MjData
        msg = JointState(name=self._joint_names)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.position = data.qpos[self._joint_qadr].tolist()
        msg.velocity = data.qvel[self._joint_dadr].tolist()
        self._joint_pub.publish(msg)

    def _describe_images(self, parts: dict) -> str:
        if not self._images:
            return ""
        shapes = ", ".join(f"{n} {parts[n].shape[2]}x{parts[n].shape[1]}" for n in sorted(self._images))
        return f" (sensor_msgs/Image rgb8: {shapes})"

    def _publisher(self, msg_type, topic: str, qos: QoSProfile):
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._publishers.append(pub)
        return pub

    def _release(self) -> None:
        """Stops stepping and frees everything configure made, so configure can run again."""
        self._stop_timer()
        for pub in self._publishers:
            self.destroy_lifecycle_publisher(pub)
        self._publishers = []
        self._joint_pub = None
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._learner_sub is not None:
            self.destroy_subscription(self._learner_sub)
            self._learner_sub = None
        if self.env is not None:
            self.env.close()
            self.env = None
        self._reset_episode_state()
        self.finished = False

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _reset_episode_state(self) -> None:
        self._obs = None
        self._waiting_since = None  # monotonic time the robot began holding for the learner
        self._obs_time = 0.0  # monotonic time the last observation was published
        self._step_due = 0.0  # lockstep: the earliest time of the next step (the real-time factor's pace)
        self._late = 0  # steps this episode whose observation had no answer yet (the previous command applied)
        self._episode = 0
        self._steps = 0
        self._return = 0.0
        self._command = None
        self._command_time = 0.0

    # ------------------------------------------------------------------ commands

    def _on_command(self, msg: Float64MultiArray) -> None:
        command, reason = check_command(msg.data, self.spec.action_dim)
        if command is None:
            self.rejected_commands += 1
            self.get_logger().warning(f"rejected command ({self.rejected_commands} so far): {reason}",
                                      throttle_duration_sec=1.0)
            return
        self._command = command
        self._command_time = time.monotonic()

    def _current_command(self) -> np.ndarray:
        """The last good command, or the safe one if none came or it is older than the timeout."""
        stale = self._timeout > 0 and time.monotonic() - self._command_time > self._timeout
        if self._command is None or stale:
            return self._safe_command
        return self._command

    # ------------------------------------------------------------------ stepping

    def _on_trained_through(self, msg: Int64) -> None:
        self._trained_through = int(msg.data)

    def _on_tick(self) -> None:
        if self._waiting_since is not None:
            self._hold_for_learner()
            return
        if self._obs is None:
            return
        now = time.monotonic()
        answered = self._command_time >= self._obs_time
        if self._lockstep:
            if now < self._step_due or (not answered and self._timeout > 0 and now - self._obs_time < self._timeout):
                return
            self._step_due = now + self._period
        self._late += int(not answered)
        normalized = physical_to_normalized(self._current_command(), self._low, self._high)
        try:
            result = self.env.step(normalized)
        except Exception as err:  # a diverged simulation ends the episode, not the robot process
            self.get_logger().error(f"episode {self._episode} failed at step {self._steps}: {err}")
            self._end_episode(terminated=True, truncated=False, error=str(err))
            return
        # A stand-in robot reports the command its interface received, not what its hidden delay and
        # noise made of it; otherwise the task's own report of what the simulator received.
        applied = None if self._randomized else result.info.get("applied_action")
        if applied is None:
            applied = scale_action(normalized, self._low, self._high)
        self._steps += 1
        self._return += float(result.reward)
        self._applied_pub.publish(array_message(applied))
        self._reward_pub.publish(Float64(data=float(result.reward)))
        self._publish_joint_states()
        self._publish_obs(result.obs)
        if result.terminated or result.truncated:
            self._end_episode(bool(result.terminated), bool(result.truncated))

    def _end_episode(self, terminated: bool, truncated: bool, error: str = "") -> None:
        self._publish_event("end", terminated=terminated, truncated=truncated, late_commands=self._late,
                            **({"error": error} if error else {}))
        if self._episodes and self._episode + 1 >= self._episodes:
            self._obs = None
            self.finished = True
            self._stop_timer()
            self.get_logger().info(f"finished {self._episodes} episode(s)")
        elif self._wait_for_learner:  # the car parked at the start while the learner trains
            self._obs = None
            self._waiting_since = time.monotonic()
        else:
            self._start_episode(self._episode + 1)

    def _hold_for_learner(self) -> None:
        """Start the next episode once the learner reports this one trained on (or the wait timed out)."""
        waited = time.monotonic() - self._waiting_since
        timed_out = self._learner_wait_timeout > 0 and waited > self._learner_wait_timeout
        if self._trained_through < self._episode and not timed_out:
            return
        if timed_out:
            self.get_logger().warning(f"no word from the learner on episode {self._episode} after {waited:.0f} s: "
                                      "starting the next episode anyway")
        self._waiting_since = None
        self._start_episode(self._episode + 1, waited_s=round(waited, 3))

    def _start_episode(self, episode: int, **extra) -> None:
        self._episode, self._steps, self._return, self._late = episode, 0, 0.0, 0
        seed = self._seed + episode  # reproducible yet different per episode
        self._obs = self.env.reset(seed=seed)
        self._publish_event("start", terminated=False, truncated=False, seed=seed, **extra)
        self._publish_joint_states()
        self._publish_obs(self._obs)

    def _publish_obs(self, obs: dict) -> None:
        self._obs_time = time.monotonic()
        stamp = self.get_clock().now().to_msg() if self._images else None
        for name, pub in self._obs_pubs.items():
            if name in self._images:
                msg = image_message(obs[name], frame_id=name)
                msg.header.stamp = stamp
                pub.publish(msg)
            else:
                pub.publish(array_message(obs[name], label=name))

    def _publish_event(self, event: str, **extra) -> None:
        body = {"event": event, "episode": self._episode, "steps": self._steps,
                "return": self._return, **extra}
        self._episode_pub.publish(String(data=json.dumps(body)))


def _check_parameters(p: dict) -> None:
    p["env_kwargs"] = parse_env_kwargs(p["env_kwargs"])
    p["randomization"] = parse_stand_in(p["randomization"])
    if not float(p["real_time_factor"]) > 0 or not math.isfinite(float(p["real_time_factor"])):
        raise ConfigError(f"real_time_factor must be a positive number, got {p['real_time_factor']}")
    if int(p["action_repeat"]) < 1:
        raise ConfigError(f"action_repeat must be >= 1, got {p['action_repeat']}")
    for name in ("episodes", "max_episode_steps"):
        if int(p[name]) < 0:
            raise ConfigError(f"{name} must be >= 0, got {p[name]}")
    if not float(p["learner_wait_timeout_s"]) >= 0:
        raise ConfigError(f"learner_wait_timeout_s must be >= 0, got {p['learner_wait_timeout_s']}")
    if float(p["command_timeout_s"]) < 0:
        raise ConfigError(f"command_timeout_s must be >= 0, got {p['command_timeout_s']}")
    if p["pixels"] and any(k in p["env_kwargs"] for k in PIXEL_KEYWORDS):
        raise ConfigError(f"pixels is set both as a parameter and in env_kwargs {p['env_kwargs']}; use one")
    if p["include_state"] and not p["pixels"]:
        raise ConfigError("include_state only applies with pixels")
    if int(p["pixel_size"]) < 1:
        raise ConfigError(f"pixel_size must be >= 1, got {p['pixel_size']}")


def _pixel_keywords(p: dict) -> dict:
    """The envs.make keywords of the pixel parameters (none without pixels)."""
    if not p["pixels"]:
        return {}
    return {"pixels": True, "pixel_size": int(p["pixel_size"]), "include_state": bool(p["include_state"])}


def parse_env_kwargs(text: str) -> dict:
    """The env_kwargs parameter: a JSON object of task keywords ("" or "{}": none)."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"env_kwargs must be a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"env_kwargs must be a JSON object, got {text!r}")
    return value


def parse_stand_in(text: str):
    """The randomization parameter: a sim2real StandIn from a JSON object or a preset's name ("" or "{}": none)."""
    from sim2real.randomization import RandomizationError
    from sim2real.stand_in import PRESETS, StandIn

    if text.strip() in PRESETS:
        value = text.strip()
    else:
        try:
            value = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"randomization must be a JSON object or a preset name ({', '.join(PRESETS)}), "
                              f"got {text!r} ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"randomization must be a JSON object, got {text!r}")
    try:
        return StandIn.from_dict(value)
    except RandomizationError as exc:
        raise ConfigError(exc.message(prefix="randomization.")) from None


# ---------------------------------------------------------------------- command line

# flag dest -> node parameter; only flags given on the command line override --ros-args / defaults.
_FLAG_PARAMETERS = {"env": "env_id", "env_kwargs": "env_kwargs", "seed": "seed", "action_repeat": "action_repeat",
                    "real_time_factor": "real_time_factor", "episodes": "episodes",
                    "command_timeout": "command_timeout_s", "max_episode_steps": "max_episode_steps",
                    "pixels": "pixels", "pixel_size": "pixel_size", "include_state": "include_state",
                    "randomization": "randomization", "wait_for_learner": "wait_for_learner", "lockstep": "lockstep"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=NODE_NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="environment id, e.g. dmc:cartpole-swingup")
    parser.add_argument("--env-kwargs", help='task keywords as a JSON object, e.g. \'{"object_set": "test"}\'')
    parser.add_argument("--seed", type=int, help="seed of episode 0 (default 0)")
    parser.add_argument("--action-repeat", type=int, help="physics steps per command (default 1)")
    parser.add_argument("--real-time-factor", type=float, help="1.0 = wall-clock control period (default)")
    parser.add_argument("--episodes", type=int, help="exit after this many episodes; 0 = forever (default)")
    parser.add_argument("--command-timeout", type=float, help="seconds until the safe command (default 0.5)")
    parser.add_argument("--max-episode-steps", type=int, help="time limit in steps; 0 = the task's own")
    parser.add_argument("--pixels", action="store_true", default=None,
                        help="observe the camera, published as sensor_msgs/Image on <obs_prefix>pixels")
    parser.add_argument("--pixel-size", type=int, help="camera image height and width with --pixels (default 84)")
    parser.add_argument("--include-state", action="store_true", default=None,
                        help="with --pixels, also publish the flat state vector as component 'state'")
    parser.add_argument("--randomization", metavar="JSON",
                        help='hidden physics, latency, noise and task keywords (env_kwargs) as a stand-in JSON object '
                             'or a preset name, e.g. \'{"physics": {"actuator_gain": [0.6, 0.6]}, "latency_steps": '
                             '[1, 1]}\' or lane-car')
    parser.add_argument("--lockstep", action="store_true", default=None,
                        help="step only once the policy node has answered the last observation (or the command "
                             "timeout passed): the command latency stays the stand-in's on a loaded machine")
    parser.add_argument("--wait-for-learner", action="store_true", default=None,
                        help="hold between episodes until the live learner has trained on the last one "
                             "(/finetune/trained_through)")
    parser.add_argument("--no-autostart", action="store_true",
                        help="stay unconfigured until a lifecycle manager drives the node")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the simulated robot until SIGINT/SIGTERM (exit 0) or until its episodes are done."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(remove_ros_args([NODE_NAME, *argv])[1:])
    overrides = [Parameter(param, value=getattr(args, dest)) for dest, param in _FLAG_PARAMETERS.items()
                 if getattr(args, dest) is not None]
    overrides.append(Parameter("autostart", value=not args.no_autostart))

    stop = []
    rclpy.init(args=[NODE_NAME, *argv], signal_handler_options=SignalHandlerOptions.NO)
    # Our own handlers only set a flag: the spin loop below then shuts down in order, with no
    # KeyboardInterrupt traceback from inside a callback.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.append(True))
    node = SimRobotNode(parameter_overrides=overrides)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.config_error:
            print(f"{NODE_NAME}: error: {node.config_error}", file=sys.stderr)
            return 2
        while not stop and not node.finished:
            executor.spin_once(timeout_sec=0.1)
        if node.finished:  # let subscribers acknowledge the last reliable messages before leaving
            deadline = time.monotonic() + 0.5
            while not stop and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
        return 0
    finally:
        node._release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
