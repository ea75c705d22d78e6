"""The recorder (rclpy -> rosbag2 MCAP) and bag_to_replay (bag -> replay file).

Pure tests write bags with rosbags and check hand-computed transitions; the integration test runs
the recorder as real processes over real DDS, stops one with SIGTERM and kills one with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags not installed (scripts/setup.sh dev,ros)")

from rlcontrol.errors import UserError
from rlcontrol.replay import ReplayBuffer
from ros_nodes import recorder, topics
from ros_nodes.bag_tools import bag_to_replay, read_bag
from ros_nodes.bag_tools import main as bag_tools_main

REPO = Path(__file__).resolve().parents[2]
POS, VEL = topics.obs_topic("position"), topics.obs_topic("velocity")
NAMES = ["position", "velocity"]


# ---------------------------------------------------------------------- synthetic bags
def _ros_msg(store, topic: str, value):
    """The rosbags message a robot would send on ``topic`` with payload ``value``."""
    types = store.types
    if topic == topics.REWARD:
        return types["std_msgs/msg/Float64"](data=float(value))
    if topic == topics.EPISODE:
        return types["std_msgs/msg/String"](data=json.dumps(value))
    if topic == topics.ESTOP:
        return types["std_msgs/msg/Bool"](data=bool(value))
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return types["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.asarray(value, np.float64))


def _end(terminated=False, truncated=False):
    return {"event": "end", "episode": 0, "steps": 2, "return": 0.0, "terminated": terminated, "truncated": truncated}


START = {"event": "start", "episode": 1, "steps": 0, "return": 0.0, "terminated": False, "truncated": False}


def _step(action, reward, pos, vel):
    return [(topics.COMMAND, action), (topics.APPLIED_COMMAND, action), (topics.REWARD, reward), (POS, pos), (VEL, vel)]


# The robot's messages in publication order. Expected (by hand): T1..T4 below; 2 steps dropped.
FIRST_PART = [
    (VEL, [-9.0]),  # torn start: the recording began inside an observation
    *_step([0.1, 0.2], 0.5, [1.0, 1.0], [-1.0]),  # obs before it incomplete: dropped
    *_step([1.0, -1.0], 1.0, [2.0, 2.0], [-2.0]),  # T1: obs [1, 1, -1]
    (topics.ESTOP, False),
    *_step([0.5, 0.0], 2.0, [3.0, 3.0], [-3.0]),  # T2: obs [2, 2, -2], terminated below
    (topics.EPISODE, _end(terminated=True)),
    (topics.EPISODE, START), (POS, [10.0, 10.0]), (VEL, [-10.0]),
]
SECOND_PART = [
    *_step([-0.5, 0.25], 3.0, [11.0, 11.0], [-11.0]),  # T3: obs [10, 10, -10]
    *_step([0.0, 1.0], 4.0, [12.0, 12.0], [-12.0]),  # T4: obs [11, 11, -11], truncated below
    (topics.EPISODE, _end(truncated=True)),
    (topics.EPISODE, START), (POS, [20.0, 20.0]), (VEL, [-20.0]),
    *_step([0.3, 0.3], 5.0, [21.0, 21.0], [-21.0]),  # torn end: how it ended is unknown, dropped
]
OBS = [[1, 1, -1], [2, 2, -2], [10, 10, -10], [11, 11, -11]]
NEXT_OBS = [[2, 2, -2], [3, 3, -3], [11, 11, -11], [12, 12, -12]]
ACTIONS = [[1.0, -1.0], [0.5, 0.0], [-0.5, 0.25], [0.0, 1.0]]
REWARDS = [1.0, 2.0, 3.0, 4.0]


class _BagWriter:
    """Writes (topic, value) pairs with increasing stamps; ``shuffle`` writes a list in reverse
    order with the stamps of its true order (as a recorder's executor may)."""

    def __init__(self, path: Path, store, only=None):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.store, self.stamp = store, 1_000_000
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        types = recorder.topic_types(NAMES, [topics.ESTOP])
        self.connections = {t: self.writer.add_connection(t, n, typestore=store) for t, n in types.items()
                            if only is None or t in only}

    def write(self, messages, reverse=False):
        stamped = []
        for topic, value in messages:
            self.stamp += 1000
            stamped.append((topic, value, self.stamp))
        for topic, value, stamp in reversed(stamped) if reverse else stamped:
            type_name = self.connections[topic].msgtype
            self.writer.write(self.connections[topic], stamp,
                              self.store.serialize_cdr(_ros_msg(self.store, topic, value), type_name))


def _replay_rows(path) -> dict[str, np.ndarray]:
    tensors, _ = ReplayBuffer.load(path).state_dict()
    return {k: tensors[k].numpy() for k in ("obs", "action", "reward", "discount", "next_obs")}


@pytest.fixture
def store():
    return recorder.typestore()


@pytest.fixture
def synthetic_bag(tmp_path, store):
    bag = tmp_path / "bag"
    w = _BagWriter(bag, store)
    w.write(FIRST_PART)
    w.write(SECOND_PART[:5], reverse=True)  # T3's messages out of write order: stamps must win
    w.write(SECOND_PART[5:])
    w.writer.close()
    return bag


def test_bag_to_replay_rebuilds_hand_computed_transitions(synthetic_bag, tmp_path):
    out = tmp_path / "replay.safetensors"
    summary = bag_to_replay(synthetic_bag, out, gamma=0.9, action_low=[-1.0, -2.0], action_high=[1.0, 2.0])
    assert (summary["transitions"], summary["stored"], summary["dropped_steps"]) == (4, 4, 2)
    assert (summary["terminated"], summary["truncated"], summary["recovered"]) == (1, 1, False)
    assert summary["obs_names"] == NAMES and summary["actions"] == "normalized"
    rows = _replay_rows(out)
    np.testing.assert_array_equal(rows["obs"], np.float32(OBS))
    np.testing.assert_array_equal(rows["next_obs"], np.float32(NEXT_OBS))
    # normalized with low [-1, -2], high [1, 2]: dim 0 unchanged, dim 1 halved
    np.testing.assert_allclose(rows["action"], [[1.0, -0.5], [0.5, 0.0], [-0.5, 0.125], [0.0, 0.5]])
    np.testing.assert_allclose(rows["reward"], REWARDS)
    np.testing.assert_allclose(rows["discount"], [0.9, 0.0, 0.9, 0.9])  # T2 terminated, T4 truncated


def test_bag_to_replay_n_step_and_physical_actions(synthetic_bag, tmp_path):
    out = tmp_path / "replay.safetensors"
    summary = bag_to_replay(synthetic_bag, out, n_step=2, gamma=0.9, obs_names=NAMES)
    assert summary["actions"] == "physical" and summary["stored"] == 4
    rows = _replay_rows(out)
    np.testing.assert_allclose(rows["action"], ACTIONS)
    np.testing.assert_allclose(rows["reward"], [1 + 0.9 * 2, 2, 3 + 0.9 * 4, 4])
    np.testing.assert_allclose(rows["discount"], [0.0, 0.0, 0.81, 0.9])
    np.testing.assert_array_equal(rows["next_obs"], np.float32([NEXT_OBS[1], NEXT_OBS[1], NEXT_OBS[3], NEXT_OBS[3]]))


def test_torn_bag_of_a_killed_recorder_is_recovered(tmp_path, store):
    """What kill -9 leaves: the flushed chunks, no summary, no metadata.yaml, maybe a cut record."""
    from rosbags.rosbag2 import Reader

    w = _BagWriter(tmp_path / "live", store)
    w.write(FIRST_PART)
    recorder.flush_to_disk(w.writer)
    w.write(SECOND_PART)  # still in memory: lost by the kill
    torn = tmp_path / "torn"
    torn.mkdir()
    data = (tmp_path / "live" / "live.mcap").read_bytes() + b"\x06" + (500).to_bytes(8, "little") + b"cut"
    (torn / "torn.mcap").write_bytes(data)
    w.writer.close()
    with pytest.raises(FileNotFoundError):
        Reader(torn).open()  # rosbags alone: no metadata.yaml
    summary = bag_to_replay(torn, tmp_path / "r.safetensors", gamma=0.9)
    assert summary["recovered"] and summary["torn_bytes"] == 12
    assert (summary["transitions"], summary["dropped_steps"], summary["terminated"]) == (2, 1, 1)
    rows = _replay_rows(tmp_path / "r.safetensors")
    np.testing.assert_array_equal(rows["obs"], np.float32(OBS[:2]))
    np.testing.assert_allclose(rows["discount"], [0.9, 0.0])


def test_bad_input_is_one_line_user_error(tmp_path, store, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap at all")
    w = _BagWriter(tmp_path / "estop_only", store, only=[topics.ESTOP])
    w.write([(topics.ESTOP, True)])
    w.writer.close()
    cases = {"missing": "bag not found", "empty": "not a rosbag2 bag", "notes.txt": "not a rosbag2 bag",
             "junk.mcap": "not an MCAP file", "estop_only": "none of the robot's topics"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as info:
            bag_to_replay(tmp_path / name, tmp_path / "out.safetensors")
        assert "\n" not in str(info.value)
    assert bag_tools_main(["bag-to-replay", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_recorder_refuses_to_overwrite(tmp_path, capsys):
    existing = tmp_path / "bag"
    existing.mkdir()
    assert recorder.main(["--out", str(existing), "--obs-names", "position"]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and err.count("\n") == 1
    assert list(existing.iterdir()) == []


def test_rclpy_to_rosbags_conversion_round_trips(store):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Empty, Float64MultiArray, MultiArrayDimension

    array = Float64MultiArray(data=[1.0, -2.5])
    array.layout.dim = [MultiArrayDimension(label="position", size=2, stride=2)]
    diagnostics = DiagnosticArray(status=[DiagnosticStatus(level=DiagnosticStatus.WARN, name="policy", message="slow",
                                                           values=[KeyValue(key="p99_us", value="812")])])
    diagnostics.header.stamp.sec, diagnostics.header.frame_id = 7, "base"
    joints = JointState(name=["hip", "knee"], position=[0.1, 0.2], velocity=[], effort=[3.0, 4.0])
    for msg in (array, diagnostics, joints, Bool(data=True), Empty()):
        type_name = f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"
        data = bytes(store.serialize_cdr(recorder.to_rosbags(msg, type_name, store), type_name))
        assert deserialize_message(data, type(msg)) == msg


# ---------------------------------------------------------------------- real processes
def _float_array(values):
    from std_msgs.msg import Float64MultiArray

    return Float64MultiArray(data=[float(v) for v in values])


def _robot_messages():
    """Two episodes in the robot's order: 3 steps ending terminated, then 2 steps (the bag ends)."""
    from std_msgs.msg import Float64, String

    def step(k, ended=False):
        action = [0.1 * k, -0.1 * k]
        msgs = [(topics.COMMAND, _float_array(action)), (topics.APPLIED_COMMAND, _float_array(action)),
                (topics.REWARD, Float64(data=float(k))), (POS, _float_array([k, 2 * k])), (VEL, _float_array([-k]))]
        if ended:
            msgs.append((topics.EPISODE, String(data=json.dumps({**_end(terminated=True), "steps": 3}))))
        return msgs

    def start(episode, k):
        return [(topics.EPISODE, String(data=json.dumps({**START, "episode": episode}))),
                (POS, _float_array([k, 2 * k])), (VEL, _float_array([-k]))]

    return [*start(0, 0), *step(1), *step(2), *step(3, ended=True), *start(1, 10), *step(11), *step(12)]


def _payload(data):
    """A message's data as plain Python: rclpy gives array.array, rosbags numpy, for sequences."""
    return data if isinstance(data, (str, float)) else [float(x) for x in data]


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start_recorder(bag: Path, env: dict, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "ros_nodes.recorder", "--out", str(bag), "--obs-names", ",".join(NAMES),
               "--topics", f"{topics.ESTOP},{topics.DIAGNOSTICS}", *extra]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(90)
def test_recorder_processes_over_dds(ros_env, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.duration import Duration
    from rosbags.rosbag2 import Reader
    from std_msgs.msg import Bool

    clean_bag, killed_bag = tmp_path / "clean", tmp_path / "killed"
    procs = [_start_recorder(clean_bag, ros_env), _start_recorder(killed_bag, ros_env, "--flush-interval", "0.2")]
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("fake_robot", context=context)
        types = recorder.topic_types(NAMES, [topics.ESTOP, topics.DIAGNOSTICS])
        pubs = {t: node.create_publisher(recorder.message_class(n), t, 100) for t, n in types.items()}
        _wait(lambda: all(p.get_subscription_count() >= 2 for p in pubs.values()), 20, "both recorders to subscribe")
        sent = _robot_messages()
        for topic, msg in sent:
            pubs[topic].publish(msg)
        pubs[topics.ESTOP].publish(Bool(data=True))
        pubs[topics.DIAGNOSTICS].publish(DiagnosticArray(status=[DiagnosticStatus(name="robot", message="ok")]))
        assert all(p.wait_for_all_acked(Duration(seconds=5)) for p in pubs.values())

        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=15) == 0, procs[0].communicate()[1]
        expected = len(sent) + 2
        _wait(lambda: len(read_bag(killed_bag).messages) == expected, 10, "the killed recorder's flush")
        procs[1].kill()
        assert procs[1].wait(timeout=10) == -signal.SIGKILL
    finally:
        rclpy.shutdown(context=context)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    # The cleanly stopped bag: complete (rosbags opens it), every message, in publication order.
    with Reader(clean_bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {topics.APPLIED_COMMAND: 5, topics.REWARD: 5, POS: 7, VEL: 7, topics.EPISODE: 3,
                      topics.COMMAND: 5, topics.ESTOP: 1, topics.DIAGNOSTICS: 1}
    store = recorder.typestore()
    bag = read_bag(clean_bag)
    decoded = [(t, store.deserialize_cdr(raw, n)) for t, n, raw in bag.messages if t not in (topics.ESTOP, topics.DIAGNOSTICS)]
    assert [t for t, _ in decoded] == [t for t, _ in sent]
    for (_, got), (_, msg) in zip(decoded, sent):
        assert _payload(got.data) == _payload(msg.data)

    # The killed bag: no metadata.yaml, yet the same transitions come out of it.
    assert not (killed_bag / "metadata.yaml").exists()
    clean = bag_to_replay(clean_bag, tmp_path / "clean.safetensors", gamma=0.9)
    killed = bag_to_replay(killed_bag, tmp_path / "killed.safetensors", gamma=0.9)
    assert (clean["transitions"], clean["terminated"], clean["dropped_steps"], clean["recovered"]) == (4, 1, 1, False)
    assert killed["recovered"] and killed["transitions"] == 4
    rows, killed_rows = _replay_rows(tmp_path / "clean.safetensors"), _replay_rows(tmp_path / "killed.safetensors")
    for key in rows:
        np.testing.assert_array_equal(rows[key], killed_rows[key])
    np.testing.assert_allclose(rows["obs"], [[0, 0, 0], [1, 2, -1], [2, 4, -2], [10, 20, -10]])
    np.testing.assert_allclose(rows["action"], [[0.1, -0.1], [0.2, -0.2], [0.3, -0.3], [1.1, -1.1]], rtol=1e-6)
    np.testing.assert_allclose(rows["discount"], [0.9, 0.9, 0.0, 0.9])


def _policy_file(path: Path) -> Path:
    """A minimal ONNX graph carrying rlcontrol metadata: velocity before position, bounds [-1, 1] x [-2, 2]."""
    import onnx
    from onnx import TensorProto, helper

    from rlcontrol.deploy.metadata import ObservationInput, PolicyMetadata

    meta = PolicyMetadata(algorithm="td3", env_id="test", version="0", config_sha256="", checkpoint_sha256="",
                          observations=(ObservationInput("obs", (3,), components=(("velocity", (1,)), ("position", (2,)))),),
                          action_names=("a", "b"), action_low=(-1.0, -2.0), action_high=(1.0, 2.0), control_period=0.02)
    graph = helper.make_graph([helper.make_node("Identity", ["obs"], ["action"])], "policy",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_policy_metadata_gives_obs_order_and_action_bounds(synthetic_bag, tmp_path):
    out = tmp_path / "replay.safetensors"
    summary = bag_to_replay(synthetic_bag, out, gamma=0.9, policy=_policy_file(tmp_path / "policy.onnx"))
    assert summary["obs_names"] == ["velocity", "position"] and summary["actions"] == "normalized"
    rows = _replay_rows(out)
    np.testing.assert_array_equal(rows["obs"], np.float32(OBS)[:, [2, 0, 1]])  # velocity first
    np.testing.assert_allclose(rows["action"], [[1.0, -0.5], [0.5, 0.0], [-0.5, 0.125], [0.0, 0.5]])
