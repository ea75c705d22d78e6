"""Joint trajectories for system identification, read from a rosbag2 bag of the robot's topics.

    recording = read_recording("runs/sim2real/standin_bag")     # sim2real.sysid_recording.JointRecording
    summary = sim2real.sysid.run_sysid(recording, "configs/sysid_cartpole_balance.yaml", source=bag)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlcontrol.errors import UserError
from sim2real.sysid_recording import JointRecording, PieceAssembler


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
    pieces = PieceAssembler(str(bag_path))
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
