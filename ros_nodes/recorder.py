"""Record the robot's topics into a rosbag2 bag (MCAP storage), for offline training data.

    python -m ros_nodes.recorder --out BAG --obs-names position,velocity [--topics /estop,/diagnostics]
                                 [--flush-interval 1.0] [--ros-args -r /robot/reward:=/arm/reward ...]

Records /robot/obs/<name> for every --obs-names entry, /robot/command, /robot/applied_command,
/robot/reward and /robot/episode (see :mod:`ros_nodes.topics`), plus any --topics among
/estop, /estop/reset, /diagnostics and /joint_states. `ros_nodes.bag_tools.bag_to_replay` turns
the bag into a replay file.

How the bag is written, and why:

* rosbags' Writer (no ROS install needed), rosbag2 version 9, MCAP storage. Messages are
  converted field by field from the received rclpy message into rosbags' ROS 2 Kilted dataclass
  and serialized with its typestore (:func:`to_rosbags`; rclpy's own deserializer reads the result
  back as an equal message, which the tests check; only padding bytes may differ).
* The bag timestamp of a message is the time its publisher's DDS stamped it when it was sent
  (``MessageInfo.source_timestamp``, ns since the epoch on the sender's clock), not the time it was
  received: receive order is not publication order across topics. DDS keeps each topic in order,
  but reliable repair (a sample sent before the subscriber had matched, or resent after a loss)
  delivers a topic's backlog in one burst, so the receive times of different topics interleave
  wrongly (seen here: applied_commands received 80 ms before the observations published ahead of
  them). rclpy's
  executor adds to that: it serves ready subscriptions in creation order, not arrival order. The
  robot publishes from one thread, so its send stamps increase in exactly its publication order
  (see :mod:`ros_nodes.topics`), and readers, which return messages in timestamp order, give back
  that order; transition reconstruction relies on it. Without a source stamp from the middleware
  the receive stamp is used, then the node clock.
* Subscriptions are reliable with a deep queue (1000), so the recorder's side never drops a sample
  (the publisher's own history depth still bounds what a slow recorder can get: sim_robot keeps one
  observation; bag_to_replay drops a step with a part missing). A best-effort publisher does not
  match them (DDS QoS rules).
* The file is append-only: an existing path is refused (one line on stderr, exit 2) and nothing
  already written is ever rewritten. rosbags keeps the current MCAP chunk in memory (up to 1 MiB);
  every --flush-interval seconds the recorder closes the chunk and flushes it to the file, so a
  crash loses at most that much.
* SIGINT or SIGTERM: take what is already queued, close the writer (MCAP summary and footer, then
  metadata.yaml), exit 0.

What ``kill -9`` (or an OOM kill) leaves: BAG/BAG.mcap holding the MCAP header and
every chunk flushed so far (the last one possibly cut short), but no summary section, no footer and
no metadata.yaml. Messages received after the last flush are lost. rosbags cannot open such a bag
(no metadata.yaml; and its MCAP reader requires the footer: "File end magic is invalid"), but
:func:`ros_nodes.bag_tools.read_bag` recovers every complete chunk from it, read-only, and
bag_to_replay reports ``"recovered": true``. (A power cut may lose more: nothing is fsynced.)
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ros_nodes import topics

TOPIC_TYPES_CORE = {
    topics.APPLIED_COMMAND: "std_msgs/msg/Float64MultiArray",
    topics.REWARD: "std_msgs/msg/Float64",
    topics.EPISODE: "std_msgs/msg/String",
    topics.COMMAND: "std_msgs/msg/Float64MultiArray",
}
OBS_TYPE = "std_msgs/msg/Float64MultiArray"
OPTIONAL_TOPIC_TYPES = {
    topics.ESTOP: "std_msgs/msg/Bool",
    topics.ESTOP_RESET: "std_msgs/msg/Empty",
    topics.DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
    topics.JOINT_STATES: "sensor_msgs/msg/JointState",
}
QUEUE_DEPTH = 1000
EXIT_USAGE = 2
# numpy dtype of each ROS 2 primitive inside an array or sequence, as rosbags' serializer wants it.
_NUMPY_TYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8, "uint8": np.uint8,
    "int8": np.int8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


def typestore():
    """rosbags' typestore for ROS 2 Kilted (the wheels here), or the newest older one it knows."""
    from rosbags.typesys import Stores, get_typestore

    for name in ("ROS2_KILTED", "ROS2_JAZZY", "LATEST"):
        if hasattr(Stores, name):
            return get_typestore(getattr(Stores, name))
    raise RuntimeError("rosbags knows no ROS 2 typestore")  # pragma: no cover


def topic_types(obs_names: Sequence[str], extra: Sequence[str] = ()) -> dict[str, str]:
    """Topic -> ROS 2 type name, in the robot's publication order (applied command, reward, obs
    components, episode), so that even the executor's creation-order service matches it."""
    ordered = {topics.APPLIED_COMMAND: TOPIC_TYPES_CORE[topics.APPLIED_COMMAND],
               topics.REWARD: TOPIC_TYPES_CORE[topics.REWARD]}
    ordered.update({topics.obs_topic(name): OBS_TYPE for name in obs_names})
    ordered.update({topics.EPISODE: TOPIC_TYPES_CORE[topics.EPISODE],
                    topics.COMMAND: TOPIC_TYPES_CORE[topics.COMMAND]})
    for topic in extra:
        if topic not in OPTIONAL_TOPIC_TYPES:
            raise ValueError(f"--topics: unknown topic {topic!r} (choose from {', '.join(OPTIONAL_TOPIC_TYPES)})")
        ordered[topic] = OPTIONAL_TOPIC_TYPES[topic]
    return ordered


def message_class(type_name: str):
    """The rclpy message class of 'pkg/msg/Type'."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


# ---------------------------------------------------------------------- rclpy -> rosbags
def to_rosbags(msg: Any, type_name: str, store) -> Any:
    """The rosbags dataclass of ROS 2 type ``type_name`` with the field values of rclpy ``msg``.

    Driven by the typestore's field definitions, so nested messages, fixed arrays and sequences
    of any message type convert alike. A field rclpy does not have (the placeholder member of
    an empty message) gets 0."""
    from rosbags.interfaces import Nodetype

    _, fields = store.fielddefs[type_name]
    values = {}
    for name, (node_type, detail) in fields:
        raw = getattr(msg, name, None)
        if node_type == Nodetype.NAME:
            values[name] = to_rosbags(raw, detail, store)
        elif node_type == Nodetype.BASE:
            values[name] = _base_value(raw, detail[0])
        else:  # ARRAY or SEQUENCE: detail is ((element node type, element detail), length)
            values[name] = _array_value(raw, detail[0], store)
    return store.types[type_name](**values)


def _base_value(raw: Any, ros_type: str) -> Any:
    """One primitive: rclpy gives `byte`/`octet` as 1-byte bytes, rosbags wants an int."""
    if raw is None:
        return 0
    if isinstance(raw, (bytes, bytearray)):
        return raw[0]
    if ros_type in ("string", "wstring"):
        return str(raw)
    if ros_type == "bool":
        return bool(raw)
    return float(raw) if ros_type.startswith("float") else int(raw)


def _array_value(raw: Any, element: tuple, store) -> Any:
    """An array or sequence: numpy for numbers (what rosbags serializes), a list otherwise."""
    from rosbags.interfaces import Nodetype

    node_type, detail = element
    if node_type == Nodetype.NAME:
        return [to_rosbags(item, detail, store) for item in raw]
    ros_type = detail[0]
    if ros_type in ("string", "wstring"):
        return [str(item) for item in raw]
    if isinstance(raw, (bytes, bytearray)) or (len(raw) and isinstance(raw[0], bytes)):
        raw = b"".join(raw) if not isinstance(raw, (bytes, bytearray)) else raw
        return np.frombuffer(raw, dtype=np.uint8).copy()
    return np.asarray(raw, dtype=_NUMPY_TYPES[ros_type])


# ---------------------------------------------------------------------- writing
def flush_to_disk(writer) -> None:
    """Move the in-memory MCAP chunk to the file and flush it to the OS, so a kill loses at most
    what arrived since. Reaches into rosbags' MCAP storage writer (``storage.chunk``,
    ``close_chunk``, ``bio``); does nothing if a rosbags version lacks them."""
    storage = getattr(writer, "storage", None)
    chunk = getattr(storage, "chunk", None)
    if chunk is None or not hasattr(storage, "close_chunk"):
        return
    if chunk.msgs:  # an empty chunk would only add an index entry without messages
        storage.close_chunk()
    storage.bio.flush()


def open_writer(path: Path, types: dict[str, str], store, obs_names: list[str]):
    """Open a new MCAP bag at ``path`` with one connection per topic (in ``types`` order, which
    bag_tools uses as the default observation order). rosbags refuses an existing path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_custom_data("rlcontrol.obs_names", ",".join(obs_names))
    writer.open()
    connections = {topic: writer.add_connection(topic, type_name, typestore=store)
                   for topic, type_name in types.items()}
    return writer, connections


class BagRecorder:
    """Subscribes to every topic of ``types`` on ``node`` and appends each message to ``writer``.

    Not a Node subclass: the node is plain rclpy, this object owns the bag side and counts."""

    def __init__(self, node, writer, connections: dict, types: dict[str, str], store) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self._node, self._writer, self._store = node, writer, store
        self.counts = dict.fromkeys(types, 0)
        qos = QoSProfile(depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self._subscriptions = [
            node.create_subscription(message_class(type_name), topic,
                                     self._callback(topic, connections[topic], type_name), qos)
            for topic, type_name in types.items()
        ]

    @property
    def received(self) -> int:
        return sum(self.counts.values())

    def _callback(self, topic: str, connection, type_name: str):
        def on_message(msg, info) -> None:
            stamp = (int(info.get("source_timestamp") or 0) or int(info.get("received_timestamp") or 0)
                     or self._node.get_clock().now().nanoseconds)
            data = self._store.serialize_cdr(to_rosbags(msg, type_name, self._store), type_name)
            self._writer.write(connection, stamp, data)
            self.counts[topic] += 1

        return on_message

    def drain(self, executor, quiet_s: float = 0.05, limit_s: float = 2.0) -> None:
        """Take what is already queued (delivered before the stop signal) until quiet_s passes
        without a message, at most limit_s."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before = self.received
            executor.spin_once(timeout_sec=quiet_s)
            if self.received == before:
                return


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ros_nodes.recorder",
                                     description="Record the robot's topics into a rosbag2 MCAP bag.")
    parser.add_argument("--out", required=True, help="bag folder to create (refused if it exists)")
    parser.add_argument("--obs-names", required=True,
                        help="observation components, comma-separated, in the policy's order (position,velocity)")
    parser.add_argument("--topics", default="",
                        help=f"extra topics, comma-separated, from: {', '.join(OPTIONAL_TOPIC_TYPES)}")
    parser.add_argument("--flush-interval", type=float, default=1.0,
                        help="seconds between flushes to disk: the most a kill -9 loses (default 1.0)")
    return parser


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _fail(message: str) -> int:
    print(f"recorder: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _install_stop_handlers() -> tuple[threading.Event, dict]:
    """SIGINT and SIGTERM only set a flag: the main loop then closes the bag between callbacks,
    never in the middle of a write."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    return stop, previous


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["recorder", *argv])[1:])
    out = Path(args.out)
    if out.exists():
        return _fail(f"{out} exists already; not overwriting a recording (choose a new --out)")
    obs_names = _split(args.obs_names)
    if not obs_names:
        return _fail("--obs-names is empty")
    try:
        types = topic_types(obs_names, _split(args.topics))
    except ValueError as exc:
        return _fail(str(exc))
    store = typestore()
    stop, previous = _install_stop_handlers()
    writer, connections = open_writer(out, types, store, obs_names)
    try:
        rclpy.init(args=["recorder", *argv], signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("rlcontrol_recorder")
        recorder = BagRecorder(node, writer, connections, types, store)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.get_logger().info(f"recording {len(types)} topics to {out}")
        last_flush = time.monotonic()
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() - last_flush >= args.flush_interval:
                flush_to_disk(writer)
                last_flush = time.monotonic()
        recorder.drain(executor)
    finally:
        writer.close()  # summary, footer, then metadata.yaml: the bag is complete from here on
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"recorder: wrote {recorder.received} messages to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
