"""The recording system identification fits to: a robot's joint trajectories, in pieces.

`PieceAssembler` turns a stream of applied commands, joint states and episode events into
`JointRecording` pieces; reading them from a rosbag2 bag is ros_nodes.joint_recording's job
(sim2real does not import ros_nodes: the dependency goes the other way).
"""

from __future__ import annotations

from dataclasses import dataclass

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


class PieceAssembler:
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
