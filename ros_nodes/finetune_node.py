"""The live fine-tuning node: the on-board learner that keeps training the deployed policy on the
robot's own experience, and pushes improved weights to the running policy node.

    python -m ros_nodes.finetune_node --ros-args -p run_dir:=RUN -p policy_path:=policy.onnx \\
        -p log_dir:=LOG -p out_dir:=OUT [-p autostart:=true]

    robot topics (ros_nodes.topics) --> reorder by send stamp --> transitions --> transition log (disk)
                                                                                      |
    /policy/update <-- export + probe <-- TD3/DDPG updates <-- replay <-- ReplayFeeder (learner thread)

What it does, and why:

* Transitions are rebuilt from the robot's own topics (/robot/applied_command, /robot/reward, the
  observation components, /robot/episode), exactly as a recording is (ros_nodes.bag_tools): the
  applied command is what the robot did, whatever the policy node asked for. DDS delivers each
  topic in order but not the topics relative to each other, so messages are held for
  ``reorder_window_s`` and released in the order of their publishers' send stamps (the robot
  publishes from one thread, so that is its publication order; the clocks of the robot and this
  node must agree to well within the window, as they do on one machine).
* Camera policies (a uint8 (C, H, W) input, e.g. the VAE-encoder lane policy): the camera topic is
  a sensor_msgs/Image, checked by ros_nodes.finetune_recording.ImageCheck (a frame of another size
  or encoding is counted in /finetune/status ``bad_images`` and skipped, never learned from), and
  the log stores each frame once (the observations-once layout of rlcontrol.replay.transition_log).
  The encoder is part of the run's actor, so every export is again camera frame in, command out.
* Every transition is appended to the crash-safe transition log (rlcontrol.replay.transition_log,
  fsync policy ``fsync``, ``interval`` by default: a kill -9 loses nothing appended, a power cut
  at most the last ~0.1 s). A failed append (disk full) is one error line, counted in the status,
  and every earlier record stays intact; the node keeps running and retries with the next one.
* Safety interventions: an e-stop (/estop true) ends the episode like the safety driver did in
  Learning to Drive in a Day. The last step the policy commanded is labelled ``terminated``
  (``intervention_label``; "truncated" to bootstrap through it instead, for stops that say
  nothing about the task), and every step until the e-stop is reset is stored with
  ``intervention`` set: the safety layer's command, which the learner never trains on.
* The learner (sim2real.finetune.LiveLearner) runs in its own thread and never touches the
  robot: the policy node's control loop is another process, so training cannot block it. Each
  export is announced on /policy/update with a probe for the policy node's parity check; the
  policy node validates, swaps between ticks and keeps the previous weights for /policy/undo.
* /finetune/status (std_msgs/String JSON, once a second): transitions logged, interventions,
  incomplete steps dropped, append failures, the learner's version, updates and errors, the
  policy version the policy node reports running, and the keep-best selection.
* Episodes and versions (ros_nodes.keep_best, the rule in sim2real.version_selection): every
  robot episode is logged to OUT/episodes.jsonl with the version that drove it; /policy/status
  goes through the same send-stamp reordering as the robot's topics, so an episode is attributed
  to the version that ran it. Each export is pushed once the previous push is answered.
  Keep-best mode (``keep_best``, off by default for now; ``rollback``, ``min_episodes``,
  ``confidence``) holds each export until the running version has been judged, rolls back a
  clearly worse version, and at the end of the session (deactivate, SIGINT/SIGTERM) leaves the
  robot on the best version. Without it the session ends on the version running, as before.
  This lives in the node, not in the launcher, because the node runs in every deployment (with
  ``--robot none`` the robot's own launch may start it without ``rlcontrol finetune``), owns the
  version numbers and the exported files, and sees the same topics.

A lifecycle node: configure loads the run, the policy contract and opens the log (anything wrong:
FAILURE with one line saying why), activate starts recording and the learner, deactivate stops the
learner and flushes, cleanup closes the log.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, Empty, Float64, Float64MultiArray, Int64, String

from ros_nodes import topics
from ros_nodes.finetune_recording import ImageCheck, RecordedInputs, ReorderBuffer, TransitionRecorder

__all__ = ["FinetuneNode", "ReorderBuffer", "TransitionRecorder"]  # the recording pieces live in finetune_recording

NODE_NAME = "finetune_node"
FINETUNE_STATUS = "/finetune/status"
POLICY_DIAGNOSTICS_NAME = "rlcontrol policy_node"  # the policy node's /diagnostics status (exploration_std)

# Every sample matters (a lost one costs a transition): reliable, deep, like the recorder.
INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
EPISODE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
UPDATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
STATUS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)

PARAMETERS: dict[str, tuple[object, str]] = {
    "run_dir": ("", "the sim training run to fine-tune (config.yaml and checkpoints/)"),
    "policy_path": ("", "the deployed ONNX policy: its metadata gives the observation components and action bounds"),
    "log_dir": ("", "transition log directory (created if missing; an existing log is recovered and extended)"),
    "out_dir": ("", "where exported policies, learner.pt, finetune.jsonl and episodes.jsonl go"),
    "fsync": ("interval", "transition log fsync policy: every | interval | none"),
    "intervention_label": ("terminated", "how the policy's last step before an e-stop is stored: terminated | truncated"),
    "updates_per_transition": (1.0, "learner updates per transition received"),
    "learning_starts": (500, "transitions received before the first update"),
    "export_every": (1000, "updates between exported policies"),
    "max_updates": (0, "stop updating after this many updates (0: never)"),
    "lr_scale": (1.0, "learning rates times this while fine-tuning"),
    "critic_warmup": (0, "first updates train the critic only"),
    "sim_replay_ratio": (0.0, "share of each batch drawn from the sim run's own replay (0: robot data only)"),
    "policy_averaging": (0.005, "export a Polyak average of the actor, this rate per update (0: the actor itself)"),
    "train_between_episodes": (False, "publish on /finetune/trained_through the last robot episode the learner has "
                                      "trained on (every update the replay ratio allows done, exported and running "
                                      "on the policy node), for a robot that waits between episodes as in Learning "
                                      "to Drive in a Day"),
    "reorder_window_s": (0.03, "hold messages this long to put the topics back in send order"),
    "threads": (1, "torch threads of the learner"),
    "seed": (0, "learner seed"),
    "keep_best": (False, "hold new versions until the running one has min_episodes episodes, roll back, and end "
                         "on the best (off until issue 17's repeatability measurements choose the default)"),
    "rollback": (True, "with keep_best: re-push the best version when the running one is clearly worse"),
    "min_episodes": (3, "whole episodes a version needs before it is compared (>= 2)"),
    "confidence": (0.9, "one-sided confidence level of the bounds on each version's mean return"),
    "stop_on_plateau": (False, "end the session once the robot's returns plateau (sim2real.plateau): no more pushes, "
                               "the robot stays on the version that drove the last episode"),
    "plateau_window": (10, "with stop_on_plateau: recent episodes that must agree"),
    "plateau_tolerance": (0.05, "with stop_on_plateau: their spread, as a share of their gain over the first policy"),
    "final_wait_s": (10.0, "on SIGINT/SIGTERM with keep_best: how long to wait for the policy node to run the "
                           "final version"),
    "autostart": (False, "configure and activate at startup instead of waiting for a lifecycle manager"),
}


class FinetuneNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.config_error = ""
        self.learner = None
        self.recorder = None
        self.log = None
        self.buffer = ReorderBuffer()
        self.image_checks: dict[str, ImageCheck] = {}
        self.learner_error = ""
        self.exported = 0
        self.keeper = None  # ros_nodes.keep_best.VersionKeeper, from configure on
        self._active = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # recorder state: fed by the release timer, read by status
        self._entities: list = []
        self._update_pub = self._status_pub = self._trained_pub = None
        self.trained_through: int | None = None  # train_between_episodes: the last robot episode published
        self._through_candidate: int | None = None  # trained on; published once its export runs on the robot
        self._exported_updates = 0
        if self.get_parameter("autostart").value:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from rlcontrol.errors import UserError

        self.config_error = ""
        try:
            self._configure()
        except (UserError, ValueError, OSError) as exc:
            self.config_error = str(exc).splitlines()[0]
            self.get_logger().error(f"configure failed: {self.config_error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        from rlcontrol.errors import UserError
        from rlcontrol.replay.transition_log import TransitionLog
        from ros_nodes.keep_best import VersionKeeper
        from sim2real.finetune import INTERVENTION_LABELS, FinetuneSettings, LiveLearner
        from sim2real.plateau import PlateauRule
        from sim2real.version_selection import SelectionSettings

        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name in ("run_dir", "policy_path", "log_dir", "out_dir"):
            if not p[name]:
                raise UserError(f"parameter {name} is required")
        if p["intervention_label"] not in INTERVENTION_LABELS:
            raise UserError(f"intervention_label {p['intervention_label']!r}: choose {' or '.join(INTERVENTION_LABELS)}")
        inputs = RecordedInputs.from_policy(p["policy_path"])
        low, high = inputs.low, inputs.high
        settings = FinetuneSettings(updates_per_transition=float(p["updates_per_transition"]),
                                    learning_starts=int(p["learning_starts"]), export_every=int(p["export_every"]),
                                    max_updates=int(p["max_updates"]), threads=int(p["threads"]), seed=int(p["seed"]),
                                    lr_scale=float(p["lr_scale"]), critic_warmup=int(p["critic_warmup"]),
                                    sim_replay_ratio=float(p["sim_replay_ratio"]),
                                    policy_averaging=float(p["policy_averaging"]))
        selection = SelectionSettings(min_episodes=int(p["min_episodes"]), confidence=float(p["confidence"]),
                                      keep_best=bool(p["keep_best"]), rollback=bool(p["rollback"]))
        self.final_wait_s = float(p["final_wait_s"])
        self.learner = LiveLearner(p["run_dir"], p["log_dir"], p["out_dir"], settings)
        self._exported_updates = self.learner.updates  # a resumed learner's last export
        rule = (PlateauRule(window=int(p["plateau_window"]), tolerance=float(p["plateau_tolerance"]))
                if p["stop_on_plateau"] else None)
        self.keeper = VersionKeeper(selection, self.learner, p["out_dir"], self._publish_update, self.get_logger(),
                                    plateau_rule=rule)
        spec = self.learner.spec
        if not inputs.fits(spec.observation) or len(low) != spec.action_dim:
            raise UserError(f"{p['policy_path']} (observation {_shapes(inputs.obs_spec())}, action {len(low)}) does "
                            f"not fit the run {p['run_dir']} (observation {_shapes(spec.observation)}, action "
                            f"{spec.action_dim})")
        self.log = TransitionLog.open(p["log_dir"], inputs.schema(spec.action_dim), fsync=p["fsync"])
        obs_names = inputs.topic_names
        self.image_checks = {name: ImageCheck(shape) for name, shape in inputs.images.items()}
        self.recorder = TransitionRecorder(self.log, obs_names, low, high, intervention_label=p["intervention_label"],
                                           logger=self.get_logger(), groups=inputs.groups if inputs.camera else None)
        self.out_dir = Path(p["out_dir"])
        self._window_ns = int(float(p["reorder_window_s"]) * 1e9)
        self._subscribe(obs_names)
        self._update_pub = self.create_publisher(String, topics.POLICY_UPDATE, UPDATE_QOS)
        self._status_pub = self.create_publisher(String, FINETUNE_STATUS, STATUS_QOS)
        self._entities += [("pub", self._update_pub), ("pub", self._status_pub)]
        self._between_episodes = bool(p["train_between_episodes"])
        if self._between_episodes:
            self._trained_pub = self.create_publisher(Int64, topics.TRAINED_THROUGH, STATUS_QOS)
            self._entities.append(("pub", self._trained_pub))
        self._release_timer = self.create_timer(0.005, self._release_ready)
        self._status_timer = self.create_timer(1.0, self._publish_status)
        self._versions_timer = self.create_timer(0.1, self._manage_versions)
        self.get_logger().info(f"fine-tuning {p['run_dir']} (version {self.learner.version}, {self.learner.updates} "
                               f"updates so far) on {', '.join(obs_names)} -> log {p['log_dir']} ({p['fsync']} fsync, "
                               f"{self.log.next_seq} records already), exports to {p['out_dir']}")

    def _subscribe(self, obs_names: list[str]) -> None:
        def stamped(kind, convert):
            def callback(msg, info) -> None:
                if not self._active:
                    return
                stamp = int(info.get("source_timestamp") or 0) or time.time_ns()
                payload = convert(msg)
                if payload is not None:  # None: a camera frame refused by its ImageCheck
                    self.buffer.push(stamp, kind, payload)
            return callback

        subs = [(Float64MultiArray, topics.APPLIED_COMMAND, stamped("applied_command", lambda m: list(m.data))),
                (Float64, topics.REWARD, stamped("reward", lambda m: m.data)),
                (String, topics.EPISODE, stamped("episode", lambda m: _event(m.data))),
                (Bool, topics.ESTOP, stamped("estop", lambda m: bool(m.data))),
                (Empty, topics.ESTOP_RESET, stamped("estop_reset", lambda m: False)),
                (Bool, topics.TAKEOVER, stamped("takeover", lambda m: bool(m.data))),
                (Empty, topics.UNDO_EPISODE, stamped("undo", lambda m: True))]
        for name in obs_names:
            if name in self.image_checks:
                from sensor_msgs.msg import Image

                subs.append((Image, topics.obs_topic(name), stamped("obs", lambda m, n=name: self._frame(n, m))))
            else:
                subs.append((Float64MultiArray, topics.obs_topic(name),
                             stamped("obs", lambda m, n=name: (n, list(m.data)))))
        for msg_type, topic, callback in subs:
            qos = EPISODE_QOS if topic == topics.EPISODE else INPUT_QOS
            self._entities.append(("sub", self.create_subscription(msg_type, topic, callback, qos)))
        self._entities.append(("sub", self.create_subscription(String, topics.POLICY_STATUS, self._on_policy_status,
                                                               STATUS_QOS)))
        from diagnostic_msgs.msg import DiagnosticArray

        self._entities.append(("sub", self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics,
                                                               10)))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.keeper.start()
        self._active = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._learn, name="learner", daemon=True)
        self._thread.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.finish_session()  # keep-best: the robot is left on the best version (not waited for: a callback)
        if self.log is not None:
            self.log.flush()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self.finish_session()
        self._active = False
        self._stop_learner()
        self._release_ready(everything=True)
        self._release()
        return super().on_shutdown(state)

    def _stop_learner(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None

    def _release(self) -> None:
        for kind, entity in self._entities:
            (self.destroy_subscription if kind == "sub" else self.destroy_publisher)(entity)
        self._entities = []
        self._update_pub = self._status_pub = self._trained_pub = None
        for timer in ("_release_timer", "_status_timer", "_versions_timer"):
            if getattr(self, timer, None) is not None:
                self.destroy_timer(getattr(self, timer))
                setattr(self, timer, None)
        if self.log is not None:
            self.log.close()
            self.log = None

    # ------------------------------------------------------------------ data path

    def _release_ready(self, everything: bool = False) -> None:
        if self.recorder is None:
            return
        ready = self.buffer.pop_ready(None if everything else time.time_ns() - self._window_ns)
        if not ready:
            return
        with self._lock:
            for kind, payload in ready:
                if not self.keeper.observe(kind, payload):  # the policy's status and std are the keeper's alone
                    self.recorder.feed(kind, payload)

    def _in_order(self, kind: str, payload, info) -> None:
        """While active, through the reorder buffer with the robot's topics; else at once."""
        if self._active:
            self.buffer.push(int(info.get("source_timestamp") or 0) or time.time_ns(), kind, payload)
        else:
            with self._lock:
                self.keeper.observe(kind, payload)

    def _on_policy_status(self, msg: String, info) -> None:
        status = _event(msg.data)
        if status:
            self.keeper.on_policy_status(status)
            self._in_order("policy_status", status, info)

    def _on_diagnostics(self, msg, info) -> None:
        """An older policy node's exploration std (newer ones put it in /policy/status)."""
        for entry in msg.status:
            if entry.name != POLICY_DIAGNOSTICS_NAME:
                continue
            for kv in entry.values:
                if kv.key == "exploration_std":
                    try:
                        std = float(kv.value)
                    except ValueError:
                        continue
                    self._in_order("exploration_std", std, info)

    # ------------------------------------------------------------------ keeping the best version

    def _manage_versions(self) -> None:
        if self._active and self.keeper is not None:
            self.keeper.tick()
        candidate = self._through_candidate
        if (self._trained_pub is not None and candidate is not None and candidate != self.trained_through
                and self.keeper.settled()):  # the policy node runs the newest export (or refused it)
            self._trained_pub.publish(Int64(data=candidate))
            self.trained_through = candidate

    def finish_session(self) -> dict | None:
        """End of the session: stop the learner, then the keeper's last decision (the robot left on
        the best version in keep-best mode, else on the one running). Returns its session_end record."""
        if self.keeper is None or self.keeper.final is not None:
            return self.keeper.final if self.keeper is not None else None
        self._active = False
        self._stop_learner()
        self._release_ready(everything=True)
        final = self.keeper.finish()
        if self._status_pub is not None:
            self._publish_status()
        return final

    def wait_for_final(self, executor, timeout: float) -> bool:
        """Spin until the policy node runs the final re-push, if there is one (or refuses it, or ``timeout``)."""
        ok = self.keeper.wait_for_final(lambda: executor.spin_once(timeout_sec=0.05), timeout)
        if self._status_pub is not None:
            self._publish_status()
        return ok

    # ------------------------------------------------------------------ learner thread

    def _learn(self) -> None:
        learner = self.learner
        while not self._stop.is_set():
            before = learner.session_updates
            with self._lock:  # read before the log is polled: that episode's steps are in the log by then
                ended = self.recorder.robot_episode_ended
            try:
                update = learner.run_once()
            except Exception as exc:  # noqa: BLE001 - a learner failure must not take the recorder down
                self.learner_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.get_logger().error(f"learner stopped: {self.learner_error}; still recording transitions")
                return
            if update is not None:
                self._offer(update)
            elif learner.session_updates == before:
                if self._between_episodes and ended is not None and ended != self._through_candidate \
                        and learner.allowed_updates() == 0:  # every update its transitions allow is done
                    if learner.updates > self._exported_updates:  # the next episode drives all of it
                        self._offer(learner.export())
                    self._through_candidate = ended
                self._stop.wait(0.02)

    def _offer(self, update: dict) -> None:
        self.keeper.offer(update)  # pushed by the keeper's tick when its turn comes
        self.exported += 1
        self._exported_updates = self.learner.updates
        self.get_logger().info(f"exported policy v{update['version']} after {self.learner.updates} updates "
                               f"({self.learner.transitions} transitions): {update['path']}")

    def _frame(self, name: str, msg):
        """(name, uint8 frame) of an Image message the policy learns from; None (counted) otherwise."""
        check = self.image_checks[name]
        frame = check(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
        if frame is None:
            self.get_logger().warning(f"{topics.obs_topic(name)}: frame skipped, not learned from ({check.rejected} "
                                      f"so far): {check.last_reason}", throttle_duration_sec=5.0)
            return None
        return name, frame

    def status(self) -> dict:
        with self._lock:
            r = self.recorder
            recorded = {"logged": r.logged, "interventions": r.interventions, "dropped_steps": r.dropped,
                        "append_failures": r.append_failures, "last_append_error": r.last_error,
                        "takeovers": r.takeovers, "undone_episodes": list(r.undone)} if r else {}
        checks = self.image_checks
        if checks:
            recorded["bad_images"] = sum(c.rejected for c in checks.values())
            recorded["last_bad_image"] = next((c.last_reason for c in checks.values() if c.last_reason), "")
        learner = self.learner.summary() if self.learner else {}
        learner.pop("settings", None)
        keeper = self.keeper
        if self._trained_pub is not None:
            learner["trained_through"] = self.trained_through
        return {**recorded, "learner": learner, "exported": self.exported, "learner_error": self.learner_error,
                "policy": keeper.policy_status if keeper else {}, "selection": keeper.status() if keeper else {}}

    def _publish_update(self, update: dict) -> None:
        self._update_pub.publish(String(data=json.dumps(update)))

    def _publish_status(self) -> None:
        self._status_pub.publish(String(data=json.dumps(self.status())))


def _shapes(spec) -> str:
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {list(getattr(v, 'shape', v))}" for k, v in spec.items()) + "}"
    return str(list(getattr(spec, "shape", spec)))


def _event(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=["finetune_node", *args], signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = FinetuneNode()
    if node.get_parameter("autostart").value and node.config_error:
        print(f"finetune_node: error: {node.config_error}", file=sys.stderr)
        node.destroy_node()
        rclpy.shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node._active and rclpy.ok():  # SIGINT/SIGTERM ends the session (keep-best: on the best version)
            try:
                node.finish_session()
                node.wait_for_final(executor, node.final_wait_s)
            except Exception as exc:  # noqa: BLE001 - the log must still be closed below
                node.get_logger().error(f"ending the session failed: {type(exc).__name__}: {exc}")
        node._active = False
        node._stop_learner()
        node._release_ready(everything=True)
        if node.log is not None:
            node.log.close()
            node.log = None
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
