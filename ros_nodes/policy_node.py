"""The policy node: a managed (lifecycle) ROS 2 node that runs an exported ONNX policy at a
fixed rate and never sends the robot something unsafe.

    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive
      configure:   load and validate the policy (metadata, optional sha256), the parameters and
                   the observation mapping (float32 inputs from array/joint/IMU/twist topics,
                   uint8 (C, H, W) inputs from sensor_msgs/Image topics, converted and resized by
                   ros_nodes.image_conversion; uint8 (H, W, 3) camera-layout inputs from Image
                   topics too, converted to RGB only, since their graph crops and resizes, and
                   refused at any other size); anything wrong -> FAILURE, stays unconfigured,
                   and the log line names the problem
      activate:    re-check the observation contract, start the control timer
      deactivate:  publish the safe command, stop the timer
    Nothing is published while unconfigured or inactive (lifecycle publisher + timer).

Each control tick (`_tick`): watchdog and e-stop first, then the policy on the freshest
observation, then the safety layer (clamp, rate limit, non-finite guard), then publish.

Hot-swapped weights (ros_nodes.policy_update). A learner asks for a new ONNX policy on
/policy/update; a worker thread loads and checks it (sha256, file, compatible inputs and
actions, finite weights, the learner's probe), one request at a time, a newer request replacing
a queued older one. An accepted policy is swapped in by one reference assignment
(`self.policy = new`), which the control thread reads once at the start of each tick: the new
OnnxPolicy brings its own preallocated input and output buffers and reads the node's same
observation buffers, so a tick never waits on a load and allocates nothing more. The worker
starts a load just after a tick has published, so that onnxruntime's session creation (which
holds the GIL for ~2 ms) falls into the idle part of the period. The policy it replaced is kept
for /policy/undo (one level); policies dropped altogether are released by the worker once a
later tick has started, never by the control thread. /policy/status (transient local) reports
version, counts, the last refusal and the exploration std at activate and after every update or undo. The safety
layer belongs to the node, not to a policy: it stands in front of every one. (The hot swap lives in
ros_nodes/policy_hot_swap.py, the e-stop and takeover path in ros_nodes/policy_safety_inputs.py:
mixins of this node, so this module stays about the control loop.)

Timing. The ticks come from a dedicated control thread that sleeps to absolute deadlines
(start + k * period), not from an rclpy timer: a timer fires only when the executor gets
round to it, so any callback (a log line, diagnostics, a burst of sensor messages) delays
it, and rclpy's executors add hundreds of microseconds of jitter on their own. The
callbacks (sensors, e-stop, lifecycle services, diagnostics) run on rclpy's C++
EventsExecutor in the main thread; they only copy data and set flags. The e-stop callback
publishes the safe command itself, at once, instead of waiting for the next tick. The
interpreter's thread switch interval is shortened so the control thread gets the GIL within
~0.2 ms of its deadline even while another thread runs Python. The garbage collector is
frozen while active and only collects when a tick leaves slack (safety.GcGuard).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, Imu, JointState
from std_msgs.msg import Empty, Float64MultiArray, String

from ros_nodes import policy_update, topics
from ros_nodes.exploration import ActionNoise
from ros_nodes.observation_map import (
    ImageSource,
    MappingError,
    RejectedMessage,
    build_image_source,
    build_sources,
    is_image_input,
)
from ros_nodes.policy_hot_swap import HotSwapMixin
from ros_nodes.policy_safety_inputs import SafetyInputsMixin
from ros_nodes.safety import GcGuard, LatencyStats, SafetyLayer, TickStats

MSG_CLASSES = {"Float64MultiArray": Float64MultiArray, "JointState": JointState, "Imu": Imu, "Twist": Twist,
               "Image": Image}
# Camera images: best effort, newest only. A retransmitted or queued frame is an old picture of
# the world, worse than the next one (which the camera sends anyway); the watchdog covers a camera
# that stops. Matches reliable publishers too.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# /policy/update and /policy/undo: every request counts; /policy/status: the last one, for late joiners.
REQUEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
TWIST_SLOTS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


class PolicyNode(SafetyInputsMixin, HotSwapMixin, LifecycleNode):
    def __init__(self, name: str = "policy_node", **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("model_path", "")
        self.declare_parameter("expected_sha256", "")
        self.declare_parameter("control_rate_hz", 100.0)
        self.declare_parameter("obs_timeout_s", 0.1)
        self.declare_parameter("max_delta", [0.0])  # largest change per tick, per action (0: off)
        self.declare_parameter("safe_command", [0.0])  # physical; default zeros clipped into bounds
        self.declare_parameter("observation_map", "{}")  # JSON: component -> {topic, type, field, joints}
        self.declare_parameter("command_topic", topics.COMMAND)
        self.declare_parameter("command_type", "Float64MultiArray")  # or Twist
        self.declare_parameter("twist_slots", [""])  # Twist output: slot per action, e.g. linear.x
        self.declare_parameter("estop_topic", topics.ESTOP)
        self.declare_parameter("estop_reset_topic", topics.ESTOP_RESET)
        self.declare_parameter("takeover_topic", topics.TAKEOVER)
        self.declare_parameter("diagnostics_period_s", 1.0)
        self.declare_parameter("update_topic", topics.POLICY_UPDATE)
        self.declare_parameter("undo_topic", topics.POLICY_UNDO)
        self.declare_parameter("status_topic", topics.POLICY_STATUS)
        # SCHED_FIFO priority for the control thread (1-99; 0: normal scheduling). Needs
        # CAP_SYS_NICE or an rtprio limit, as ros2_control's realtime threads do; if the OS
        # refuses, the node logs it once and runs with normal scheduling.
        self.declare_parameter("realtime_priority", 0)
        # "timer": tick at control_rate_hz. "observation": tick as soon as every input has a new
        # message (observation-to-command latency is then compute time, not up to one period
        # of waiting), and still at least every 1/control_rate_hz so the watchdog keeps running.
        self.declare_parameter("trigger", "timer")
        # Fault injection for tests: every diagnostics callback sleeps this long, standing in for
        # a slow callback (logging to a slow disk, loading weights) on the main executor.
        self.declare_parameter("debug_slow_callback_s", 0.0)
        # Gaussian noise on the command, std in normalized units (fraction of each action's half
        # range), for live fine-tuning (ros_nodes/exploration.py). 0: deterministic (deployment).
        self.declare_parameter("exploration_std", 0.0)
        self.declare_parameter("exploration_seed", 0)
        self.declare_parameter("precision", "fp32")  # fp16: runtime.load_for_control
        self.declare_parameter("fp16_tolerance", 0.01)
        self.policy = None
        self._loop: threading.Thread | None = None
        self._running = threading.Event()
        # The control thread and the e-stop callback both publish. Reentrant: a tick holds it from its
        # command decision through the publish, and so does the e-stop from trip through its safe command.
        self._publish_lock = threading.RLock()
        self._obs_lock = threading.Lock()  # a tick never sees a message half copied in
        self._estop_stop = threading.Event()
        self._io = []  # subscriptions, publishers and timers made in configure, destroyed in cleanup
        self._start_estop_path()
        self.rejected = 0
        self.gc = GcGuard()
        # Hot swap (see the module docstring). _swap_lock guards history, policy assignment, retired
        # and status publishing; the control thread never takes it. _epoch changes with every
        # configure/cleanup, so a request from an older configuration is never applied to a newer one.
        self.history: policy_update.PolicyHistory | None = None
        self.precision = "fp32"  # the running policy's (parameter precision, read at configure)
        self._configured_meta = None
        self._swap_lock = threading.Lock()
        self._requests = threading.Condition()
        self._pending: tuple[str, int] | None = None  # the newest update request not yet taken
        self._epoch = 0
        self._retired: list[tuple[float, object]] = []  # (when, policy) swapped out, released by the worker
        self.superseded = 0
        self._worker_stop = False
        self._worker = threading.Thread(target=self._update_worker, name="policy_update", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - any failure must leave the node unconfigured, with a reason
            self.get_logger().error(f"configure refused: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self.policy.metadata.algorithm} policy for {self.policy.metadata.env_id} "
                               f"on {self.policy.provider}, {self.rate_hz:g} Hz")
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from rlcontrol.deploy import runtime

        p = self._params()
        self.rejected = 0  # counts start afresh with each configuration, like the safety layer's
        self.superseded = 0
        with self._swap_lock:
            self._epoch += 1
        if not p["model_path"]:
            raise ValueError("parameter model_path is empty")
        self.precision = p["precision"]
        self.policy, parity = runtime.load_for_control(p["model_path"], p["expected_sha256"] or None, self.precision,
                                                       float(p["fp16_tolerance"]))
        if parity:
            self.get_logger().info(f"fp16 on {parity['provider']}: {parity['summary']}")
        meta = self.policy.metadata
        self.rate_hz = p["control_rate_hz"]
        if not 0 < self.rate_hz <= 2000:
            raise ValueError(f"control_rate_hz must be in (0, 2000], got {self.rate_hz}")
        self.period = 1.0 / self.rate_hz
        self._build_observation(json.loads(p["observation_map"] or "{}"))
        self._log_image_inputs()
        low, high = np.array(meta.action_low), np.array(meta.action_high)
        safe = np.array(p["safe_command"], dtype=np.float64)
        max_delta = np.array(p["max_delta"], dtype=np.float64)
        self.safety = SafetyLayer(low, high, safe_command=safe if safe.size == meta.action_dim else None,
                                  max_delta=max_delta if max_delta.size == meta.action_dim and max_delta.any() else None,
                                  obs_timeout_s=p["obs_timeout_s"], required=[s.topic for s in self.sources])
        self.safety.estop = self.estop  # one latch, alive since startup (see _start_estop_path)
        self.safety.takeover = self.takeover  # likewise the safety driver's control
        self.exploration = ActionNoise(low, high, float(p["exploration_std"]), int(p["exploration_seed"]))
        self._make_output(p, meta.action_dim)
        self._make_inputs(p)
        self.trigger = p["trigger"]
        if self.trigger not in ("timer", "observation"):
            raise ValueError(f"trigger must be 'timer' or 'observation', got {self.trigger!r}")
        # Windows of 10,000 samples: /diagnostics summarizes them once a second on the executor
        # thread while holding the GIL. Over 100,000 samples that took ~12 ms and stalled the
        # control thread for up to 8 ms (measured), which alone cost ticks at 500 Hz.
        self.latency = LatencyStats(10_000)  # tick start -> command published
        self.obs_latency = LatencyStats(10_000)  # newest sensor message received -> command published
        self._newest_obs = 0.0
        self._used_obs = 0.0
        self._updated: set[str] = set()
        self._all_topics = {s.topic for s in self.sources}
        self._obs_ready = threading.Event()
        self.ticks = TickStats(self.period, 2_000)  # recent loop rate
        self._last_tick = None  # cumulative missed ticks since activation, counted O(1) per tick
        self._ticks_total = 0
        self._missed_total = 0
        self._io.append(self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics))
        self._make_update_io(p)
        with self._swap_lock:  # last: nothing above can fail any more
            self._configured_meta = meta
            self.history = policy_update.PolicyHistory(self.policy)

    def on_activate(self, state) -> TransitionCallbackReturn:
        problem = self._contract_problem()
        if problem:
            self.get_logger().error(f"activate refused: {problem}")
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # activates the lifecycle publisher
        self._last_tick = None  # the pause while inactive is not a missed tick
        self.gc.enter_control()
        self._running.set()
        self._loop = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self._loop.start()
        with self._swap_lock:
            self._publish_status()
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_loop()
        self._publish(self.safety.safe_command)  # publisher still active inside this callback
        self.gc.exit_control()
        return super().on_deactivate(state)

    def _stop_loop(self) -> None:
        self._running.clear()
        if self._loop is not None:
            self._loop.join(timeout=1.0)
            self._loop = None

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_loop()
        self.gc.exit_control()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        with self._swap_lock:  # a request in flight now belongs to a configuration that is gone
            self._epoch += 1
            self.history = None
            self._configured_meta = None
            retired, self._retired = self._retired, []
        with self._requests:
            self._pending = None
        del retired  # the control thread is stopped (cleanup/shutdown/failed configure): safe here
        for entity in self._io:
            for destroy in (self.destroy_subscription, self.destroy_publisher, self.destroy_timer):
                try:
                    if destroy(entity):
                        break
                except Exception:  # noqa: BLE001,S112 - wrong kind for this destroy_*: try the next
                    continue
        self._io.clear()
        self.policy = None

    # ------------------------------------------------------------------ construction

    def _params(self) -> dict:
        names = ("model_path", "expected_sha256", "control_rate_hz", "obs_timeout_s", "max_delta", "safe_command",
                 "observation_map", "command_topic", "command_type", "twist_slots", "estop_topic",
                 "estop_reset_topic", "takeover_topic", "diagnostics_period_s", "realtime_priority", "trigger", "update_topic",
                 "undo_topic", "status_topic", "exploration_std", "exploration_seed", "precision", "fp16_tolerance")
        return {n: self.get_parameter(n).value for n in names}

    def _build_observation(self, mapping: dict) -> None:
        """One buffer per policy input; each source fills its slice (see observation_map), an
        image source its whole (C, H, W) input."""
        self.obs = {}
        self.sources = []
        for spec in self.policy.metadata.observations:
            if is_image_input(spec.dtype, spec.shape):
                source = build_image_source(spec.name, spec.shape, mapping.get(spec.name),
                                            layout="HWC" if spec.is_camera else "CHW")
                source.out = self.obs[spec.name] = np.zeros(spec.shape, dtype=np.uint8)
                self.sources.append(source)
                continue
            if spec.dtype != "float32":
                raise MappingError(f"input {spec.name!r} is {spec.dtype} {list(spec.shape)}: only float32 vectors "
                                   "and uint8 (C, H, W) images come from topics")
            buffer = np.zeros(spec.shape, dtype=np.float32)
            flat = buffer.reshape(-1)
            components = list(spec.components) or [(spec.name, spec.shape)]
            for source in build_sources(components, {k: v for k, v in mapping.items()
                                                     if k in {c for c, _ in components}}):
                source.out = flat[source.offset:source.offset + source.size]
                self.sources.append(source)
            self.obs[spec.name] = buffer
        mapped = {s.component for s in self.sources}
        unknown = sorted(set(mapping) - mapped)
        if unknown:
            raise MappingError(f"observation_map names {unknown}, which the policy does not use")
        self._obs_arg = next(iter(self.obs.values())) if len(self.obs) == 1 else self.obs
        for s in self.sources:
            s.scratch = s.new_scratch()

    def _log_image_inputs(self) -> None:
        for s in self.sources:
            if isinstance(s, ImageSource) and s.layout == "HWC":
                height, width, _ = s.shape
                spec = next(o for o in self.policy.metadata.observations if o.name == s.component)
                self.get_logger().info(
                    f"input {s.component!r}: sensor_msgs/Image on {s.topic} -> uint8 ({height}, {width}, 3) RGB "
                    f"camera frame (HWC), fed as is: the graph crops and resizes it to {spec.network_shape}; "
                    f"images of another size than {width}x{height} are rejected")
            elif isinstance(s, ImageSource):
                channels, height, width = s.shape
                self.get_logger().info(
                    f"input {s.component!r}: sensor_msgs/Image on {s.topic} -> uint8 ({channels}, {height}, {width}) "
                    f"{'RGB' if channels == 3 else 'grayscale'}; images of another size are resized to "
                    f"{width}x{height} with cv2.INTER_AREA")

    def _make_inputs(self, p: dict) -> None:
        by_topic: dict[tuple[str, str], list] = {}
        for s in self.sources:
            by_topic.setdefault((s.topic, s.type), []).append(s)
        for (topic, kind), sources in by_topic.items():
            qos = {"Float64MultiArray": QoSProfile(depth=1), "Image": IMAGE_QOS}.get(kind, qos_profile_sensor_data)
            self._io.append(self.create_subscription(
                MSG_CLASSES[kind], topic, lambda msg, ss=sources, t=topic: self._on_sensor(t, ss, msg), qos))


    def _make_output(self, p: dict, action_dim: int) -> None:
        self.command_type = p["command_type"]
        if self.command_type == "Twist":
            slots = [s for s in p["twist_slots"] if s]
            if len(slots) != action_dim or any(s not in TWIST_SLOTS for s in slots):
                raise ValueError(f"command_type Twist needs twist_slots with {action_dim} entries from {TWIST_SLOTS}")
            self.twist_slots = [tuple(s.split(".")) for s in slots]
            msg_type = Twist
        elif self.command_type == "Float64MultiArray":
            msg_type = Float64MultiArray
        else:
            raise ValueError(f"command_type must be Float64MultiArray or Twist, got {self.command_type!r}")
        # Reliable, shallow: every command should arrive, but a late one is worse than the next.
        self.command_pub = self.create_lifecycle_publisher(msg_type, p["command_topic"], QoSProfile(depth=1))
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, QoSProfile(depth=10))
        self._io += [self.command_pub, self.diag_pub]

    def _make_update_io(self, p: dict) -> None:
        self.status_pub = self.create_publisher(String, p["status_topic"], STATUS_QOS)
        self._io += [
            self.status_pub,
            self.create_subscription(String, p["update_topic"], self._on_update, REQUEST_QOS),
            self.create_subscription(Empty, p["undo_topic"], self._on_undo, REQUEST_QOS),
        ]

    def _contract_problem(self) -> str | None:
        if self.policy is None:
            return "no policy loaded"
        meta = self.policy.metadata
        for spec in meta.observations:
            if spec.history != 1:
                return f"input {spec.name!r} declares a history of {spec.history} frames; this node feeds 1"
        images = {s.component: s for s in self.sources if isinstance(s, ImageSource)}
        for spec in meta.observations:
            source = images.pop(spec.name, None)
            if is_image_input(spec.dtype, spec.shape) and (source is None or source.shape != tuple(spec.shape)):
                return f"image input {spec.name!r} {list(spec.shape)} is not fed by a sensor_msgs/Image source of its shape"
        if images:
            return f"sensor_msgs/Image source(s) {sorted(images)} feed no image input of the policy"
        sizes = sum(s.size for s in self.sources)
        needed = sum(int(np.prod(o.shape)) for o in meta.observations)
        if sizes != needed:
            return f"the mapped sources give {sizes} values, the policy needs {needed}"
        return None

    # ------------------------------------------------------------------ callbacks

    def _on_sensor(self, topic: str, sources, msg) -> None:
        now = time.monotonic()
        try:
            for s in sources:  # validate into scratch first: a bad message must not half-update
                s.extract(msg, s.scratch)
        except Exception as exc:  # noqa: BLE001 - RejectedMessage, or any surprise: never act on it
            self.rejected += 1
            reason = exc if isinstance(exc, RejectedMessage) else f"{topic}: {type(exc).__name__}: {exc}"
            self.get_logger().warning(f"rejected message: {reason}", throttle_duration_sec=1.0)
            return
        for s in sources:
            if isinstance(s, ImageSource) and s.last_size != s.logged_size:
                self._log_image_size(s)
        with self._obs_lock:
            for s in sources:
                s.out[:] = s.scratch
            self.safety.feed(topic, now)
            self._newest_obs = now
            self._updated.add(topic)
            if self._updated >= self._all_topics:
                self._updated.clear()
                self._obs_ready.set()

    def _log_image_size(self, s: ImageSource) -> None:
        """Once per incoming size: say whether this camera's images are resized."""
        s.logged_size = s.last_size
        height, width = s.last_size
        if s.layout == "HWC":
            self.get_logger().info(f"{width}x{height} images from {s.topic}: the policy's camera frames, "
                                   "cropped and resized in its graph")
        elif s.converter.needs_resize(height, width):
            self.get_logger().info(f"resizing {width}x{height} images from {s.topic} to {s.shape[2]}x{s.shape[1]} "
                                   "(cv2.INTER_AREA)")
        else:
            self.get_logger().info(f"{width}x{height} images from {s.topic}: the policy's size, not resized")

    # ------------------------------------------------------------------ hot swap

    def destroy_node(self):
        with self._requests:
            self._worker_stop = True
            self._requests.notify()
        self._worker.join(timeout=2.0)
        self._estop_stop.set()
        self._estop_thread.join(timeout=1.0)
        self._estop_executor.shutdown()
        self._estop_node.destroy_node()
        return super().destroy_node()

    def _control_loop(self) -> None:
        """Tick at absolute deadlines; a late tick runs at once and the schedule skips ahead
        (counted as missed ticks by TickStats) rather than bunching up to catch up."""
        self._set_realtime(self.get_parameter("realtime_priority").value)
        deadline = time.monotonic()
        on_observation = self.trigger == "observation"
        while self._running.is_set():
            now = time.monotonic()
            if on_observation:
                if self._obs_ready.wait(timeout=max(0.0, deadline - now)):
                    self._obs_ready.clear()
                    deadline = time.monotonic()
            elif deadline > now:
                time.sleep(deadline - now)
            self._tick()
            deadline += self.period
            now = time.monotonic()
            if now - deadline > self.period:
                deadline = now

    def _set_realtime(self, priority: int) -> None:
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(min(priority, 99)))
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(f"realtime_priority {priority} refused by the OS ({exc}); normal scheduling")

    def _tick(self) -> None:
        start = time.monotonic()
        self.ticks.add(start)
        if self._last_tick is not None:
            gap = start - self._last_tick
            if gap > 1.5 * self.period:  # same rule as safety.tick_summary
                self._missed_total += int(gap / self.period + 0.5) - 1
            self._ticks_total += 1
        self._last_tick = start
        # Read once per tick, after _last_tick: an update or undo swaps this reference between
        # ticks, and a tick that started after a swap holds the new policy (see _reap_retired).
        policy = self.policy
        action, obs_finite, obs_time = None, True, 0.0
        if not self.safety.estop.active and not self.safety.takeover.active and not self.safety.stale(start):
            try:
                with self._obs_lock:
                    obs_time = self._newest_obs
                    action = self.exploration.apply(policy.act(self._obs_arg))
            except ValueError:  # NonFiniteObservation / NonFiniteAction: the safety layer decides
                obs_finite = False
        with self._publish_lock:  # decide and publish with no e-stop in between (see _on_estop)
            command, _reason = self.safety.command(action, start, obs_finite)
            self._publish(command)
        done = time.monotonic()
        self.latency.add(done - start)
        if obs_time > self._used_obs:  # first command computed from this observation
            self._used_obs = obs_time
            self.obs_latency.add(done - obs_time)
        self.gc.collect_if_slack(self.period - (done - start))

    def _publish(self, command: np.ndarray) -> None:
        if self.command_type == "Twist":
            msg = Twist()
            for (group, axis), value in zip(self.twist_slots, command):
                setattr(getattr(msg, group), axis, float(value))
        else:
            msg = Float64MultiArray()
            msg.data = command.tolist()
        with self._publish_lock:
            self.command_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        if self.policy is None:
            return
        slow = self.get_parameter("debug_slow_callback_s").value
        if slow > 0:
            time.sleep(slow)
        c = self.safety.counters
        lat = self.latency.summary()
        status = DiagnosticStatus(name="rlcontrol policy_node", hardware_id=self.policy.sha256[:16])
        status.level = (DiagnosticStatus.ERROR if self.safety.estop.active else
                        DiagnosticStatus.WARN if c.get("stale", 0) else DiagnosticStatus.OK)
        status.message = ("e-stop latched" if self.safety.estop.active else
                          "safety driver in control" if self.safety.takeover.active else "running")
        missed = self._missed_total / max(1, self._ticks_total + self._missed_total)
        values = {"loop_rate_hz": self.ticks.rate_hz(), "missed_tick_fraction": missed,
                  "missed_ticks": self._missed_total,
                  **{f"latency_{k}": v for k, v in lat.items()},
                  **{f"obs_to_command_{k}": v for k, v in self.obs_latency.summary().items()}, **c, "rejected_messages": self.rejected,
                  **{f"gc_{k}": v for k, v in self.gc.stats().items()}, **self._update_diagnostics(),
                  "exploration_std": self.exploration.std, "driver_takeovers": self.safety.takeover.takeovers}
        status.values = [KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def main(argv: list[str] | None = None) -> int:
    """`policy_node --ros-args -p model_path:=policy.onnx ...`; `--autostart` configures and activates.

    SIGINT/SIGTERM only set a flag; the loop below then stops the control thread (which
    publishes the safe command on deactivation) before the ROS context goes away.
    """
    args = list(sys.argv if argv is None else argv)
    autostart = "--autostart" in args
    rclpy.init(args=[a for a in args if a != "--autostart"], signal_handler_options=SignalHandlerOptions.NO)
    stop: list[bool] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.append(True))
    sys.setswitchinterval(2e-4)  # the control thread waits at most ~0.2 ms for the GIL (default 5 ms)
    node = PolicyNode()
    executor = EventsExecutor()
    executor.add_node(node)
    code = 0
    try:
        if autostart and (node.trigger_configure() != TransitionCallbackReturn.SUCCESS
                          or node.trigger_activate() != TransitionCallbackReturn.SUCCESS):
            code = 2
        while code == 0 and not stop and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        if node._loop is not None:  # still active: stop ticking and leave the robot the safe command
            node._stop_loop()
            node._publish(node.safety.safe_command)
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
