"""The recording system identification fits to: joint trajectories read from a rosbag2 bag.

Part of sim2real/sysid.py's pipeline (`rlcontrol sysid`), kept in its own module: the bag is read
with the project's bag tools (ros_nodes.bag_tools, imported when a bag is read, never at import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlcontrol.errors import UserError


@dataclass
class JointRecording:
    """Joint trajectories of a robot, one entry per unbroken piece of an episode.

    joints: names of the 1-DOF joints, in the order of the arrays' last axis.
    pieces: list of (positions (T+1, J), velocities (T+1, J), commands (T, A)): state t, the
    command applied from state t, state t+1.
    dropped: steps that could not be used (a command without the joint state before or after it).
    """

    joints: list[str]
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    dropped: int = 0

    @property
    def steps(self) -> int:
        return sum(len(u) for _, _, u in self.pieces)


def read_recording(bag_path: str | Path) -> JointRecording:
    """The joint trajectories of a bag: the /joint_states after each /robot/applied_command.

    Messages come in timestamp order (the recorder stamps each with its send time, so this is
    the robot's publication order). A command whose joint state is missing (a lost message, a
    recording that starts mid-step) ends that piece of the episode; the pieces before and after
    are kept and the step counted as dropped. Raises UserError for an unreadable bag, one
    without /joint_states, or joint states without a position and velocity per joint.
    """
    from ros_nodes import topics
    from ros_nodes.bag_tools import read_bag
    from ros_nodes.recorder import typestore

    wanted = {topics.APPLIED_COMMAND, topics.JOINT_STATES, topics.EPISODE}
    bag = read_bag(bag_path, lambda topic: topic in wanted)  # UserError for a missing or unreadable bag
    if topics.JOINT_STATES not in bag.topics:
        raise UserError(
            f"bag {bag_path} has no {topics.JOINT_STATES}: system identification needs the joint "
            "encoders (record them with python -m ros_nodes.recorder --topics /joint_states)"
        )
    if topics.APPLIED_COMMAND not in bag.topics:
        raise UserError(f"bag {bag_path} has no {topics.APPLIED_COMMAND}: the commands the robot applied")
    store = typestore()
    pieces = _PieceAssembler(str(bag_path))
    for topic, type_name, raw in bag.messages:
        try:
            msg = store.deserialize_cdr(raw, type_name)
        except Exception as error:  # noqa: BLE001 - a corrupt message: the bag's problem, one line
            raise UserError(
                f"bag {bag_path}: cannot decode a {topic} message: {' '.join(str(error).split())}"
            ) from None
        if topic == topics.EPISODE:
            pieces.episode_event()
        elif topic == topics.APPLIED_COMMAND:
            pieces.command(np.asarray(msg.data, dtype=np.float64))
        else:
            pieces.joint_state(
                list(msg.name), np.asarray(msg.position, np.float64), np.asarray(msg.velocity, np.float64)
            )
    pieces.episode_event()
    if not pieces.pieces:
        raise UserError(
            f"bag {bag_path} holds no step with a joint state before and after its applied command"
        )
    widths = {piece[2].shape[1] for piece in pieces.pieces}
    if len(widths) != 1:
        raise UserError(f"bag {bag_path}: the applied commands change size ({sorted(widths)})")
    return JointRecording(pieces.joints or [], pieces.pieces, pieces.dropped)


class _PieceAssembler:
    """Unbroken runs of (state, command, next state) from messages in publication order."""

    def __init__(self, bag: str):
        self.bag = bag
        self.joints: list[str] | None = None
        self.pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.dropped = 0
        self._q: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._u: list[np.ndarray] = []
        self._pending: np.ndarray | None = None  # a command awaiting the joint state it led to

    def _close(self) -> None:
        if self._u:
            self.pieces.append((np.asarray(self._q), np.asarray(self._v), np.asarray(self._u)))
        self._q, self._v, self._u = [], [], []

    def episode_event(self) -> None:
        self.dropped += self._pending is not None
        self._pending = None
        self._close()

    def command(self, command: np.ndarray) -> None:
        if self._pending is not None:  # the joint state after the previous command is missing
            self.dropped += 1
            self._close()
        self._pending = command

    def joint_state(self, names: list[str], position: np.ndarray, velocity: np.ndarray) -> None:
        if self.joints is None:
            self.joints = names
        elif names != self.joints:
            raise UserError(f"bag {self.bag}: /joint_states changed its joints from {self.joints} to {names}")
        if not names or position.shape != (len(names),) or velocity.shape != (len(names),):
            raise UserError(
                f"bag {self.bag}: /joint_states needs a name, a position and a velocity for every "
                f"joint (got {len(names)} names, {position.size} positions, {velocity.size} velocities)"
            )
        if self._pending is not None and self._q:
            self._u.append(self._pending)
        else:
            if self._pending is not None:  # a command with no joint state before it cannot be predicted
                self.dropped += 1
            self._close()  # a new piece starts from this state
        self._pending = None
        self._q.append(position)
        self._v.append(velocity)
