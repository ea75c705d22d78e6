"""What the fine-tuning node records, without ROS: the robot's messages back in send order, the
transitions rebuilt from them, and the camera frames checked before anything is learned from them.

* :class:`RecordedInputs`: the deployed policy's observation inputs (its ONNX metadata) as the
  robot publishes them: one topic per component (Float64MultiArray), one per camera image
  (sensor_msgs/Image), and the log schema and observation layout the learner's agent takes. A
  camera policy's log stores each frame once (``obs_once``, rlcontrol.replay.transition_log).
* :class:`ImageCheck`: a camera frame is learned from only as the policy's input shape and
  colour: an image of another size or encoding is counted and skipped, never resized into the
  replay (the policy node may resize what it acts on; what the learner learns from must be
  what the robot's own camera gives). A skipped frame leaves its step incomplete: dropped.
* :class:`ReorderBuffer`, :class:`TransitionRecorder`: see ros_nodes.finetune_node.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rlcontrol.errors import UserError

COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
MONO_ENCODINGS = ("mono8", "mono16")


@dataclass(frozen=True)
class RecordedInputs:
    """The policy's observation inputs as recorded: ``components`` [(topic component, size)] of
    float inputs, ``images`` {input name: (C, H, W)}, and ``groups`` {input name: its
    components} (a float input without named components is one component of its own name)."""

    components: tuple[tuple[str, int], ...]
    images: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    high: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_policy(cls, policy_path) -> RecordedInputs:
        from ros_nodes.bag_tools import policy_contract, policy_metadata

        meta = policy_metadata(policy_path)
        if not any(_is_image(o) for o in meta.observations):
            components, low, high = policy_contract(policy_path, meta)
            return cls(tuple(components), low=low, high=high)
        components, images, groups = [], {}, {}
        for obs in meta.observations:
            if obs.history != 1:
                raise UserError(f"{policy_path}: input {obs.name!r} stacks {obs.history} frames; live fine-tuning "
                                "records single frames")
            if _is_image(obs):
                if obs.layout != "CHW":
                    raise UserError(f"{policy_path}: input {obs.name!r} is a {obs.layout} camera frame; live "
                                    "fine-tuning learns from (C, H, W) image inputs")
                images[obs.name] = tuple(obs.shape)
                groups[obs.name] = (obs.name,)
            else:
                parts = obs.components or ((obs.name, obs.shape),)
                components += [(name, int(np.prod(shape))) for name, shape in parts]
                groups[obs.name] = tuple(name for name, _ in parts)
        return cls(tuple(components), images, groups, np.asarray(meta.action_low, np.float64),
                   np.asarray(meta.action_high, np.float64))

    @property
    def camera(self) -> bool:
        return bool(self.images)

    @property
    def topic_names(self) -> list[str]:
        """Every observation component the robot publishes, images included, in input order."""
        if not self.camera:
            return [name for name, _ in self.components]
        return [name for group in self.groups.values() for name in group]

    def obs_spec(self):
        """The learner's observation: a flat size, or {input: uint8 image | (size,)} for a camera policy."""
        if not self.camera:
            return (sum(size for _, size in self.components),)
        sizes = dict(self.components)
        return {name: np.zeros(self.images[name], np.uint8) if name in self.images else (sum(sizes[c] for c in group),)
                for name, group in self.groups.items()}

    def schema(self, action_dim: int):
        from rlcontrol.replay.log_format import TransitionSchema

        return TransitionSchema.for_transitions(self.obs_spec(), action_dim, intervention=True, obs_once=self.camera,
                                                undo=True)

    def fits(self, observation_spec) -> bool:
        """Whether the learner's env observation spec is this (shapes and image dtypes)."""
        mine = self.obs_spec()
        if not self.camera:
            return not isinstance(observation_spec, dict) and tuple(observation_spec.shape) == mine
        if not isinstance(observation_spec, dict) or observation_spec.keys() != mine.keys():
            return False
        return all(tuple(observation_spec[k].shape) == (v.shape if k in self.images else v) for k, v in mine.items())


def _is_image(obs) -> bool:
    return obs.dtype == "uint8" and len(obs.shape) == 3


class ImageCheck:
    """sensor_msgs/Image fields -> a new uint8 (C, H, W) frame, or None (counted in ``rejected``,
    the reason in ``last_reason``) for a frame of another size or colour encoding."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        from ros_nodes.image_conversion import ImageConverter

        self.shape = tuple(shape)
        self.converter = ImageConverter(*self.shape)
        self.encodings = COLOUR_ENCODINGS if self.shape[0] == 3 else MONO_ENCODINGS
        self.rejected = 0
        self.last_reason = ""

    def __call__(self, encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False):
        from ros_nodes.image_conversion import MalformedImage

        reason = ""
        if (int(height), int(width)) != self.shape[1:]:
            reason = f"image is {int(width)}x{int(height)}, the policy learns from {self.shape[2]}x{self.shape[1]}"
        elif encoding not in self.encodings:
            reason = f"encoding {encoding!r}: the policy learns from {' / '.join(self.encodings)} frames"
        else:
            try:
                return self.converter.convert(encoding, height, width, step, data, is_bigendian).copy()
            except MalformedImage as exc:
                reason = str(exc)
        self.rejected += 1
        self.last_reason = reason
        return None


class ReorderBuffer:
    """Messages of several topics, released in send-stamp order once older than the window."""

    def __init__(self) -> None:
        self._heap: list = []
        self._count = 0
        self._lock = threading.Lock()

    def push(self, stamp_ns: int, kind: str, payload) -> None:
        with self._lock:
            heapq.heappush(self._heap, (stamp_ns, self._count, kind, payload))
            self._count += 1

    def pop_ready(self, before_ns: int | None = None) -> list[tuple[str, object]]:
        """Everything stamped before ``before_ns`` (all of it with None), oldest first."""
        out = []
        with self._lock:
            while self._heap and (before_ns is None or self._heap[0][0] <= before_ns):
                _, _, kind, payload = heapq.heappop(self._heap)
                out.append((kind, payload))
        return out


class TransitionRecorder:
    """Rebuilds transitions from the robot's message stream and appends them to the log.

    ``feed(kind, payload)`` with kind one of applied_command, reward, obs (payload (name, values);
    an image component's values are its uint8 (C, H, W) frame), episode (event dict), estop (bool),
    estop_reset, takeover (bool), undo. ``groups`` ({input: components}) assembles dict
    observations (camera policies); an observations-once log gets a ``first`` record at the start
    of every segment.

    The safety driver, as in Learning to Drive in a Day: ``takeover`` true ends the episode where
    the driver took control (the policy's last step is labelled terminated, whatever
    ``intervention_label`` says for e-stops: the driver judged the state a failure), the steps
    while the driver drives are interventions, never learned from, and ``takeover`` false hands
    control back (a new episode starts). ``undo`` withdraws the last episode that ended: an undo
    record in the log (log_format.undo_record), which the learner's replay feeder acts on."""

    def __init__(self, log, obs_names: Sequence[str], action_low: np.ndarray, action_high: np.ndarray, *,
                 intervention_label: str = "terminated", logger=None,
                 groups: dict[str, Sequence[str]] | None = None) -> None:
        from ros_nodes.bag_tools import StepAssembler

        self.log, self.low, self.high = log, np.asarray(action_low), np.asarray(action_high)
        self.assembler = StepAssembler(obs_names, groups=groups)
        self.obs_once = bool(getattr(log.schema, "obs_once", False))
        self.terminal_interventions = intervention_label == "terminated"
        self.logger = logger
        # Episode ids unique across restarts of this node on the same log: microseconds at start
        # plus the assembler's segment (a segment is at least one step, i.e. far over a microsecond).
        self.episode_base = time.time_ns() // 1000
        self.intervening = False  # the safety layer, not the policy, commands the steps now
        self._estop_latched = False
        self._driver = False  # the safety driver has control (takeover)
        self.logged = self.interventions = self.append_failures = self.takeovers = 0
        self.undone: list[int] = []  # episodes withdrawn, in order
        self.last_ended: int | None = None  # the last episode whose end was logged (what undo withdraws)
        self.robot_episode_ended: int | None = None  # the robot's number of the last episode that ended, once logged
        self.last_error = ""
        self._segment, self._step = None, 0

    def feed(self, kind: str, payload) -> None:
        a = self.assembler
        if kind == "applied_command":
            a.applied_command(np.asarray(payload, np.float64))
        elif kind == "reward":
            a.reward(float(payload))
        elif kind == "obs":
            value = payload[1]
            a.observation(payload[0], value if isinstance(value, np.ndarray) and value.dtype == np.uint8
                          else np.asarray(value, np.float64))
        elif kind == "episode":
            a.episode(payload)
            if payload.get("event") == "start" and not self._estop_latched and not self._driver:
                self.intervening = False  # a new episode under the policy
        elif kind in ("estop", "estop_reset", "takeover"):
            self._safety(kind, payload)
        self._drain()
        if kind == "episode" and payload.get("event") == "end" and isinstance(payload.get("episode"), int):
            self.robot_episode_ended = payload["episode"]  # after _drain: its last step is in the log
        if kind == "undo":
            self.undo_last_episode()

    def _safety(self, kind: str, payload) -> None:
        """E-stops (latched until a reset) and the safety driver's takeovers (until released): the
        policy's last step ends its episode, the steps in between are interventions."""
        a = self.assembler
        if kind == "estop":
            if payload and not self.intervening:
                a.interrupt(terminated=self.terminal_interventions)
                self.intervening = True
            self._estop_latched = self._estop_latched or bool(payload)  # latched, as the policy node does
        elif kind == "estop_reset":
            self._estop_latched = False
        elif payload and not self._driver:  # takeover: the driver judged the state a failure
            self._driver = True
            self.takeovers += 1
            if not self.intervening:
                a.interrupt(terminated=True)
                self.intervening = True
        elif not payload:
            self._driver = False
        if kind != "estop" and self.intervening and not self._estop_latched and not self._driver:
            a.cut()  # the policy is back in control: its steps start a new segment
            self.intervening = False

    def undo_last_episode(self) -> int | None:
        """Append the undo record of the last episode that ended; its id, or None (nothing to undo,
        or the append failed: counted and logged as any failed append)."""
        from rlcontrol.replay.log_format import undo_record

        episode = self.last_ended
        if episode is None:
            if self.logger is not None:
                self.logger.warning("undo: no ended episode to withdraw (one undo per episode)")
            return None
        if not self.append(undo_record(self.log.schema, episode), counted=False):
            return None
        self.last_ended = None
        self.undone.append(episode)
        if self.logger is not None:
            self.logger.info(f"undo: episode {episode} withdrawn from the learner's replay")
        return episode

    def _drain(self) -> None:
        from ros_nodes.bag_tools import normalize_actions

        done, self.assembler.transitions = self.assembler.transitions, []
        for t in done:
            if t.segment != self._segment:
                self._segment, self._step = t.segment, 0
            else:
                self._step += 1
            episode = self.episode_base + t.segment
            action = normalize_actions(t.action[None], self.low, self.high)[0].astype(np.float32)
            # Steps completed while an intervention lasts are the safety layer's, not the policy's,
            # except the policy's own last step, which interrupt() labelled.
            intervention = self.intervening and not t.interrupted
            record = {"obs": t.obs, "action": action, "reward": t.reward, "next_obs": t.next_obs,
                      "terminated": t.terminated, "truncated": t.truncated, "intervention": intervention,
                      "episode": episode, "step": self._step, "time": time.time()}
            if self.obs_once:
                if self._step == 0:  # the segment's initial observation, stored once
                    self.append({"next_obs": t.obs, "action": np.zeros_like(action), "reward": 0.0,
                                 "terminated": False, "truncated": False, "intervention": False, "first": True,
                                 "episode": episode, "step": -1}, counted=False)
                del record["obs"]
            if self.append(record) and (t.terminated or t.truncated):
                self.last_ended = episode

    def append(self, record: dict, *, counted: bool = True) -> bool:
        from rlcontrol.replay.log_format import TransitionLogError

        try:
            self.log.append(record)
        except TransitionLogError as exc:
            self.append_failures += 1
            self.last_error = str(exc)
            if self.logger is not None:
                self.logger.error(f"transition log append failed ({self.append_failures} so far; earlier records "
                                  f"intact): {exc}", throttle_duration_sec=5.0)
            return False
        if counted:
            self.logged += 1
            self.interventions += int(record["intervention"])
        return True

    @property
    def dropped(self) -> int:
        return self.assembler.dropped
