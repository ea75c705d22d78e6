"""Turn a recording of the robot's topics into a replay file for off-policy training.

    python -m ros_nodes.bag_tools bag-to-replay BAG --out replay.safetensors [--policy policy.onnx] [--json]

The bag (from :mod:`ros_nodes.recorder`, or any rosbag2 bag of the same topics) is read with
rosbags. Transitions are rebuilt from the robot's publication order (:mod:`ros_nodes.topics`),
which is the bag's timestamp order because the recorder stamps each message with its send time:
per step ``applied_command, reward, obs components...`` and, if the episode ended, an "end" event;
after a reset a "start" event and the first observation. So for each step:

    obs      = the last complete observation before the step's applied_command, its components
               concatenated in the policy's order (flat float32)
    action   = the applied command (the robot's own limits included), normalized to [-1, 1] with
               the policy's action bounds when they are known: agents train in [-1, 1]
    reward   = the step's reward
    next_obs = the first complete observation after it
    ending   = terminated / truncated from an "end" event right after it, else neither

A step is only kept once the next message proves how it ended: the next step's applied_command
(mid-episode) or an "end" event. Everything incomplete is dropped and counted, never guessed: a
recording that started mid-step or mid-observation, a step whose reward or next observation is
missing, and the last step of a bag that ends before its successor or its "end" event. n-step
windows (``n_step > 1``) never span such a gap or an episode boundary.

Torn bags: a recorder killed with ``kill -9`` leaves an MCAP file without summary and footer and no
metadata.yaml, which rosbags cannot open. :func:`read_bag` then scans the file itself (read-only),
keeps every complete chunk and deserializes with rosbags' typestore; the summary says
``"recovered": true`` and how many trailing bytes were unreadable.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlcontrol.errors import UserError
from ros_nodes import topics

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_FOOTER, _OP_DATA_END = 0x03, 0x04, 0x05, 0x06, 0x02, 0x0F


@dataclass
class BagMessages:
    """What :func:`read_bag` returns.

    messages:   (topic, type name, CDR bytes) in timestamp order; equal stamps keep write order.
    topics:     topic -> type name of every connection, in the bag's connection order.
    recovered:  True if the bag had no summary/metadata.yaml (a killed recorder) and was scanned.
    torn_bytes: bytes at the end of a recovered file that did not form a complete record.
    """

    messages: list[tuple[str, str, bytes]]
    topics: dict[str, str]
    recovered: bool = False
    torn_bytes: int = 0


# ---------------------------------------------------------------------- reading bags
def read_bag(bag_path: str | Path, wanted=lambda topic: True) -> BagMessages:
    """Raw messages of the topics ``wanted(topic)`` accepts. ``bag_path``: a rosbag2 folder, or an
    .mcap/.db3 file. Raises UserError for a missing path or anything that is not a readable bag."""
    path = Path(bag_path)
    kind, target = _locate(path)
    if kind == "reader":
        return _read_with_rosbags(path, target, wanted)
    try:  # a complete MCAP file without metadata.yaml reads normally; a torn one needs the scan
        return _read_with_rosbags(path, target, wanted)
    except UserError:
        return _scan_torn_mcap(target, wanted)


def _locate(path: Path) -> tuple[str, Path]:
    """("reader", path rosbags opens) for a complete bag; ("mcap", file) for an MCAP file that may
    be torn."""
    if not path.exists():
        raise UserError(f"bag not found: {path}")
    if path.is_dir():
        if (path / "metadata.yaml").exists():
            return "reader", path
        mcaps = sorted(path.glob("*.mcap"))
        if len(mcaps) == 1:
            return "mcap", mcaps[0]
        raise UserError(f"{path} is not a rosbag2 bag: no metadata.yaml and no single .mcap file in it")
    if path.suffix == ".mcap":
        return "mcap", path
    if path.suffix == ".db3":
        return "reader", path
    raise UserError(f"{path} is not a rosbag2 bag (expected a bag folder, an .mcap or a .db3 file)")


def _read_with_rosbags(path: Path, target: Path, wanted) -> BagMessages:
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    try:
        with Reader(target) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            chosen = [c for c in reader.connections if wanted(c.topic)]
            # (an empty connection list would mean "all" to rosbags)
            messages = [(c.topic, c.msgtype, bytes(raw)) for c, _, raw in reader.messages(chosen)] if chosen else []
    except (ReaderError, FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not a readable rosbag2 bag: {exc}") from None
    return BagMessages(messages, types)


def _scan_torn_mcap(path: Path, wanted) -> BagMessages:
    """Read the complete records of an MCAP file without summary/footer (see the module doc).

    MCAP records are ``opcode u8, length u64, body``; schemas and channels precede their messages;
    a chunk holds further records. The scan stops at the first record that runs past the end of
    the file (the write a kill interrupted)."""
    data = path.read_bytes()
    if not data.startswith(MCAP_MAGIC):
        raise UserError(f"{path} is not an MCAP file (bad magic)")
    state = _ScanState(wanted)
    pos = len(MCAP_MAGIC)
    try:
        while pos + 9 <= len(data):
            op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            end = pos + 9 + length
            if end > len(data) or op in (_OP_FOOTER, _OP_DATA_END):
                break
            state.record(op, memoryview(data)[pos + 9:end], path)
            pos = end
    except (struct.error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: corrupted MCAP record at byte {pos}: {exc}") from None
    messages = [entry[2:] for entry in sorted(state.messages, key=lambda entry: entry[:2])]
    types = {topic: type_name for _, (topic, type_name) in sorted(state.channels.items())}
    torn = len(data) - pos if pos < len(data) and data[pos] not in (_OP_FOOTER, _OP_DATA_END) else 0
    return BagMessages(messages, types, recovered=True, torn_bytes=torn)


@dataclass
class _ScanState:
    wanted: object
    schemas: dict[int, str] = field(default_factory=dict)
    channels: dict[int, tuple[str, str]] = field(default_factory=dict)
    messages: list[tuple[int, int, str, str, bytes]] = field(default_factory=list)

    def record(self, op: int, body: memoryview, path: Path) -> None:
        if op == _OP_SCHEMA:
            (schema_id,) = struct.unpack_from("<H", body)
            self.schemas[schema_id] = _string(body, 2)[0]
        elif op == _OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", body)
            self.channels[channel_id] = (_string(body, 4)[0], self.schemas.get(schema_id, ""))
        elif op == _OP_MESSAGE:
            channel_id, _, log_time = struct.unpack_from("<HIQ", body)
            topic, type_name = self.channels.get(channel_id, ("", ""))
            if topic and self.wanted(topic):
                self.messages.append((log_time, len(self.messages), topic, type_name, bytes(body[22:])))
        elif op == _OP_CHUNK:
            compression, offset = _string(body, 28)
            if compression:
                raise UserError(f"{path}: cannot recover {compression}-compressed MCAP chunks")
            (size,) = struct.unpack_from("<Q", body, offset)
            records = body[offset + 8:offset + 8 + size]
            pos = 0
            while pos + 9 <= len(records):
                inner_op, length = records[pos], struct.unpack_from("<Q", records, pos + 1)[0]
                self.record(inner_op, records[pos + 9:pos + 9 + length], path)
                pos += 9 + length


def _string(body: memoryview, offset: int) -> tuple[str, int]:
    """An MCAP string (u32 length + UTF-8) at ``offset``; returns it and the offset after it."""
    (length,) = struct.unpack_from("<I", body, offset)
    return bytes(body[offset + 4:offset + 4 + length]).decode(), offset + 4 + length


# ---------------------------------------------------------------------- policy contract
def policy_contract(policy_path: str | Path, meta=None) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """(observation components [(name, size)] in input order, action low, action high) from an
    exported policy's metadata_props (see rlcontrol.deploy.metadata; `meta` when already read).
    Only the metadata is read."""
    path = Path(policy_path)
    meta = meta if meta is not None else policy_metadata(path)
    components = []
    for obs in meta.observations:
        if obs.history != 1:
            raise UserError(f"{path}: input {obs.name!r} stacks {obs.history} frames; a recording holds single frames")
        parts = obs.components or ((obs.name, obs.shape),)
        components += [(name, math.prod(shape)) for name, shape in parts]
    return components, np.asarray(meta.action_low, np.float64), np.asarray(meta.action_high, np.float64)


def policy_metadata(policy_path: str | Path):
    """An exported policy's PolicyMetadata (rlcontrol.deploy.metadata); UserError, one line, for a
    missing file, a file that is not ONNX, or one without rlcontrol's metadata."""
    from rlcontrol.deploy.metadata import MetadataError, PolicyMetadata

    path = Path(policy_path)
    if not path.is_file():
        raise UserError(f"policy file not found: {path}")
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return PolicyMetadata.from_props({p.key: p.value for p in model.metadata_props})
    except MetadataError as exc:
        raise UserError(f"{path}: not an rlcontrol policy: {exc}") from None
    except Exception as exc:  # protobuf's DecodeError and friends: a file that is not ONNX
        raise UserError(f"{path} is not a readable ONNX file: {type(exc).__name__}: {exc}") from None


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Physical actions (K, A) -> [-1, 1]: the inverse of the policy's ``low + (a + 1) / 2 * (high - low)``.
    Clipped, since the robot's limits may be looser than the policy's; a zero-width dim maps to 0."""
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    scaled = np.where(span > 0, 2.0 * (actions - low) / safe - 1.0, 0.0)
    return np.clip(scaled, -1.0, 1.0)


# ---------------------------------------------------------------------- reconstruction
@dataclass
class Transition:
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool = False
    truncated: bool = False
    segment: int = 0  # transitions of one segment follow each other without a gap
    interrupted: bool = False  # the policy's last step before a safety intervention (StepAssembler.interrupt)


class StepAssembler:
    """Rebuilds 1-step transitions from messages fed in the robot's publication order.

    Call :meth:`applied_command`, :meth:`reward`, :meth:`observation` and :meth:`episode` per
    message, then :meth:`finish`. Results: ``transitions`` and ``dropped`` (steps seen in part)."""

    def __init__(self, obs_names: Sequence[str], groups: dict[str, Sequence[str]] | None = None) -> None:
        self.obs_names = list(obs_names)
        # Dict observations ({input: its components}, camera policies): an input is its one image
        # component as given (uint8), or its float components concatenated.
        self.groups = {name: list(parts) for name, parts in groups.items()} if groups else None
        self.transitions: list[Transition] = []
        self.dropped = 0
        self.episode_events = {"start": 0, "end": 0}
        self._segment = 0
        self._obs: np.ndarray | None = None  # the last complete observation
        self._parts: dict[str, np.ndarray] = {}  # components of the observation being assembled
        self._step: list | None = None  # [obs, action, reward or None] awaiting its next obs
        self._held: Transition | None = None  # complete, awaiting proof of how it ended
        self._interrupt: tuple[bool, bool] | None = None  # (terminated, truncated) for the step in flight

    def applied_command(self, action: np.ndarray) -> None:
        self._keep_held()  # a new step: the held one ended mid-episode
        if self._parts:  # the recording began (or lost messages) inside an observation
            self._parts, self._obs = {}, None
        if self._step is not None:
            self._drop()
        self._interrupt = None  # the interrupted step never completed: nothing to label
        self._step = [self._obs, action, None]

    def reward(self, value: float) -> None:
        if self._step is None or self._step[2] is not None:
            self._drop()  # its applied_command was not recorded (a torn start)
        else:
            self._step[2] = value

    def observation(self, name: str, value: np.ndarray) -> None:
        if name in self._parts:  # a new observation began before the last was complete
            self._parts = {}
        self._parts[name] = value
        if len(self._parts) == len(self.obs_names):
            if self.groups is None:
                obs = np.concatenate([self._parts[n] for n in self.obs_names]).astype(np.float32)
            else:
                obs = {name: self._parts[parts[0]] if self._parts[parts[0]].dtype == np.uint8
                       else np.concatenate([self._parts[n] for n in parts]).astype(np.float32)
                       for name, parts in self.groups.items()}
            self._parts = {}
            self._complete(obs)

    def _complete(self, obs: np.ndarray) -> None:
        step, self._step = self._step, None
        if step is not None:
            if step[0] is None or step[2] is None:
                self._drop()
            else:
                self._held = Transition(step[0], step[1], float(step[2]), obs, segment=self._segment)
                if self._interrupt is not None:
                    self._end_held(*self._interrupt)
        self._interrupt = None
        self._obs = obs

    def interrupt(self, terminated: bool) -> None:
        """A safety intervention (e-stop, operator takeover) ends the episode here: the last step
        the policy commanded (the one completed and held, or the one still in flight) is kept with
        ``terminated`` (or truncated), and the steps after it start a new segment."""
        ending = (bool(terminated), not terminated)
        if self._step is not None:
            self._interrupt = ending
        elif self._held is not None:
            self._end_held(*ending)

    def cut(self) -> None:
        """A break in the stream that is not an episode end (a resumed control after an
        intervention): drop what is open; the next steps start a new segment."""
        self.finish()
        self._segment += 1

    def _end_held(self, terminated: bool, truncated: bool) -> None:
        self._held.terminated, self._held.truncated, self._held.interrupted = terminated, truncated, True
        self._keep_held()
        self._segment += 1

    def episode(self, event: dict) -> None:
        kind = event.get("event")
        if kind not in self.episode_events:
            return
        self.episode_events[kind] += 1
        if kind == "end" and self._held is not None:
            self._held.terminated = bool(event.get("terminated"))
            self._held.truncated = bool(event.get("truncated")) and not self._held.terminated
            self._keep_held()
        # A "start" with a step still held means its "end" was not recorded: how it ended is unknown.
        self.finish()
        self._segment += 1
        self._obs, self._parts = None, {}

    def finish(self) -> None:
        """Drop what is still open (the bag ended, or an episode boundary cut it)."""
        if self._held is not None:
            self._held = None
            self._drop()
        if self._step is not None:
            self._step = None
            self._drop()

    def _keep_held(self) -> None:
        if self._held is not None:
            self.transitions.append(self._held)
            self._held = None

    def _drop(self) -> None:
        self.dropped += 1
        self._segment += 1


def assemble(bag: BagMessages, obs_names: Sequence[str], store) -> StepAssembler:
    """Feed every message of ``bag`` (deserialized with ``store``) to a :class:`StepAssembler`."""
    assembler = StepAssembler(obs_names)
    obs_topics = {topics.obs_topic(name): name for name in obs_names}
    for topic, type_name, raw in bag.messages:
        msg = store.deserialize_cdr(raw, type_name)
        if topic == topics.APPLIED_COMMAND:
            assembler.applied_command(np.asarray(msg.data, np.float64))
        elif topic == topics.REWARD:
            assembler.reward(float(msg.data))
        elif topic in obs_topics:
            assembler.observation(obs_topics[topic], np.asarray(msg.data, np.float64))
        elif topic == topics.EPISODE:
            assembler.episode(_event(msg.data))
    assembler.finish()
    return assembler


def _event(text: str) -> dict:
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}


def n_step_transitions(transitions: list[Transition], n_step: int, gamma: float) -> list[dict]:
    """Replay transitions (dicts for ReplayBuffer.add) via the repo's NStepAccumulator. The last
    transition of a segment that did not end its episode is fed as truncated: its window stops
    there and bootstraps from its next_obs, which is exact for the steps it holds."""
    from rlcontrol.replay import NStepAccumulator

    accumulator = NStepAccumulator(n_step, gamma)
    out: list[dict] = []
    for i, t in enumerate(transitions):
        last = i + 1 == len(transitions) or transitions[i + 1].segment != t.segment
        out += accumulator.add(t.obs, t.action, t.reward, t.next_obs, t.terminated, t.truncated or last)
    return out


# ---------------------------------------------------------------------- bag -> replay
def _check_topics(path: Path, bag: BagMessages, obs_names: Sequence[str]) -> None:
    required = [topics.APPLIED_COMMAND, topics.REWARD, *(topics.obs_topic(n) for n in obs_names)]
    missing = [topic for topic in required if topic not in bag.topics]
    if len(missing) == len(required):
        raise UserError(f"{path} has none of the robot's topics ({', '.join(required)})")
    if missing:
        raise UserError(f"{path} lacks the topics {', '.join(missing)}")


def _obs_names(bag: BagMessages, obs_names, components) -> list[str]:
    """Observation order: given names, else the policy's components, else the bag's connection order."""
    if obs_names:
        return list(obs_names)
    if components:
        return [name for name, _ in components]
    return [t[len(topics.OBS_PREFIX):] for t in bag.topics if t.startswith(topics.OBS_PREFIX)]


def _dims(path: Path, transitions: list[Transition], components) -> tuple[int, int]:
    """(obs_dim, action_dim), checked to be the same for every transition and against the policy."""
    obs_dims = {t.obs.size for t in transitions} | {t.next_obs.size for t in transitions}
    action_dims = {t.action.size for t in transitions}
    if len(obs_dims) != 1 or len(action_dims) != 1:
        raise UserError(f"{path}: observation sizes {sorted(obs_dims)} / action sizes {sorted(action_dims)} "
                        "change within the recording")
    obs_dim, action_dim = obs_dims.pop(), action_dims.pop()
    if components and obs_dim != sum(size for _, size in components):
        raise UserError(f"{path}: recorded observations have {obs_dim} values; the policy expects "
                        f"{sum(size for _, size in components)} ({components})")
    return obs_dim, action_dim


def bag_to_replay(bag_path: str | Path, out_path: str | Path, *, capacity: int | None = None, n_step: int = 1,
                  gamma: float = 0.99, policy: str | Path | None = None, obs_names: Sequence[str] | None = None,
                  action_low: Sequence[float] | None = None, action_high: Sequence[float] | None = None) -> dict:
    """Rebuild the transitions of a recording (see the module doc) and save them as a uniform
    ReplayBuffer file at ``out_path`` (atomic safetensors; load with ``ReplayBuffer.load``).

    Observation order: ``obs_names``, else the ``policy``'s components, else the bag's. Actions are
    stored normalized to [-1, 1] when bounds are known (``policy``, or ``action_low``/``action_high``),
    physical otherwise. ``capacity`` defaults to the number of transitions. Returns a JSON-able
    summary. Raises UserError for a missing or unreadable bag or policy, a bag without the robot's
    topics, or one without a single complete step."""
    from rlcontrol.replay import make_replay
    from ros_nodes.recorder import typestore

    path = Path(bag_path)
    components, low, high = policy_contract(policy) if policy is not None else ([], action_low, action_high)
    bag = read_bag(path, lambda topic: topic.startswith(topics.OBS_PREFIX) or topic in (
        topics.APPLIED_COMMAND, topics.REWARD, topics.EPISODE))
    names = _obs_names(bag, obs_names, components)
    _check_topics(path, bag, names)
    assembler = assemble(bag, names, typestore())
    transitions = assembler.transitions
    if not transitions:
        raise UserError(f"{path}: no complete step in the recording ({assembler.dropped} partial ones)")
    obs_dim, action_dim = _dims(path, transitions, components)
    normalized = low is not None and high is not None
    if normalized:
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if low.shape != (action_dim,) or high.shape != (action_dim,):
            raise UserError(f"action bounds have {low.size}/{high.size} values; the recording's actions have {action_dim}")
        for t in transitions:
            t.action = normalize_actions(t.action, low, high)
    replay_items = n_step_transitions(transitions, n_step, gamma)
    replay = make_replay(capacity or len(replay_items), (obs_dim,), action_dim, prioritized=False)
    for item in replay_items:
        replay.add({**item, "action": np.asarray(item["action"], np.float32)})
    replay.save(out_path)
    return {
        "bag": str(path), "out": str(out_path), "transitions": len(transitions), "stored": len(replay),
        "terminated": sum(t.terminated for t in transitions), "truncated": sum(t.truncated for t in transitions),
        "dropped_steps": assembler.dropped, "episode_events": assembler.episode_events,
        "obs_names": names, "obs_dim": obs_dim, "action_dim": action_dim,
        "actions": "normalized" if normalized else "physical", "n_step": n_step, "gamma": gamma,
        "recovered": bag.recovered, "torn_bytes": bag.torn_bytes,
    }


# ---------------------------------------------------------------------- command line
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bag-to-replay`` on an argparse subparsers object (e.g. rlcontrol's CLI);
    the handler is :func:`run`, also set as the parser's ``handler`` default."""
    parser = subparsers.add_parser("bag-to-replay", help="turn a recorded bag into a replay file")
    parser.add_argument("bag", help="rosbag2 folder (or .mcap file) written by ros_nodes.recorder")
    parser.add_argument("--out", required=True, help="replay file to write (safetensors, atomically)")
    parser.add_argument("--policy", help="policy.onnx: observation order and action bounds (actions stored in [-1, 1])")
    parser.add_argument("--obs-names", help="observation components, comma-separated (default: the policy's, else the bag's)")
    parser.add_argument("--n-step", type=_positive_int, default=1, help="n-step returns (default 1)")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount (default 0.99)")
    parser.add_argument("--capacity", type=_positive_int, help="replay capacity (default: the number of transitions)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    parser.set_defaults(handler=run)
    return parser


def run(args) -> dict:
    names = [n.strip() for n in args.obs_names.split(",") if n.strip()] if args.obs_names else None
    summary = bag_to_replay(args.bag, args.out, capacity=args.capacity, n_step=args.n_step, gamma=args.gamma,
                            policy=args.policy, obs_names=names)
    if not args.json:
        note = " (recovered from a torn bag)" if summary["recovered"] else ""
        print(f"wrote {summary['stored']} transitions ({summary['terminated']} terminated, {summary['truncated']} "
              f"truncated, {summary['dropped_steps']} partial steps dropped, {summary['actions']} actions) "
              f"to {summary['out']}{note}")
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as rlcontrol's CLI does
        raise UserError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m ros_nodes.bag_tools")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    try:
        args = parser.parse_args(argv)
        result = args.handler(args)
    except UserError as exc:
        print(f"bag_tools: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
