"""Hot-swapped policy weights over real DDS: the policy node runs as its own process
(`start_policy_node`), the test process plays robot, learner and operator (`operator` from
conftest.py, plus publishers on /policy/update and /policy/undo and a /policy/status
subscription). Policy A is the session's cartpole policy, B the same task exported with other
random weights; the observation is one for which A and B command clearly different actions,
so every command tells which policy computed it.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from lifecycle_msgs.msg import Transition
from onnx import numpy_helper

from rlcontrol.deploy import runtime
from ros_nodes import launch, topics

RATE_HZ = 100.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def _export(root: Path, **run_options) -> Path:
    from rlcontrol.deploy.export import export_run

    spec = importlib.util.spec_from_file_location(
        "_deploy_run_factory", REPO_ROOT / "tests/deploy/conftest.py"
    )
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    out = root / "policy.onnx"
    export_run(factory.make_run(root, **run_options), out, parity_samples=20)
    return out


@pytest.fixture(scope="module")
def policies(cartpole_policy, tmp_path_factory) -> dict:
    """A, B (same task, other weights), an observation telling them apart and their actions there,
    and C: a policy with another input shape (pendulum, 3 values instead of 5)."""
    b = _export(tmp_path_factory.mktemp("policy_b"), seed=1)
    c = _export(tmp_path_factory.mktemp("policy_c"), env_id="dmc:pendulum-swingup", hidden=(16, 16))
    pa, pb = runtime.load(cartpole_policy), runtime.load(b)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        flat = rng.normal(2.0, 5.0, size=5).astype(np.float32)
        a_action, b_action = float(pa.act(flat)[0]), float(pb.act(flat)[0])
        if abs(a_action) < 0.9 and abs(b_action) < 0.9 and abs(a_action - b_action) > 0.1:
            obs = {"position": flat[:3].tolist(), "velocity": flat[3:].tolist()}
            return {
                "a": cartpole_policy,
                "b": b,
                "c": c,
                "obs": obs,
                "action_a": (a_action,),
                "action_b": (b_action,),
            }
    raise AssertionError("no observation where A and B command clearly different actions")


def _close(command, action, tol: float = 1e-6) -> bool:
    return len(command) == len(action) and all(abs(c - a) <= tol for c, a in zip(command, action))


def _probe(path: Path, n: int = 8) -> dict:
    """What the learner sends: inputs and the actions its own policy gives for them."""
    obs = np.random.default_rng(1).normal(2.0, 5.0, size=(n, 5)).astype(np.float32)
    return {"inputs": {"observation": obs.tolist()}, "actions": runtime.load(path).act_batch(obs).tolist()}


def update_message(path: Path, version: int, probe: bool = True, **fields) -> str:
    body = {"path": str(path), "sha256": runtime.sha256_file(path), "version": version}
    if probe:
        body["probe"] = _probe(path)
    return json.dumps({**body, **fields})


class Learner:
    """The learner's and operator's side of the contract, on the operator's node."""

    def __init__(self, op) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Empty, String

        self.op, self._string, self._empty = op, String, Empty
        request = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE
        )
        status = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.update_pub = op.node.create_publisher(String, topics.POLICY_UPDATE, request)
        self.undo_pub = op.node.create_publisher(Empty, topics.POLICY_UNDO, request)
        self.statuses: list[dict] = []
        op.node.create_subscription(
            String, topics.POLICY_STATUS, lambda m: self.statuses.append(json.loads(m.data)), status
        )

    def wait_matched(self) -> None:
        assert self.op.spin_until(
            lambda: (
                self.update_pub.get_subscription_count() > 0 and self.undo_pub.get_subscription_count() > 0
            )
        ), "/policy topics never matched"

    def status(self, timeout: float = 10.0, **expected) -> dict:
        """Waits for a status with these values; returns it."""

        def matches() -> bool:
            return bool(self.statuses) and all(self.statuses[-1].get(k) == v for k, v in expected.items())

        assert self.op.spin_until(matches, timeout), (expected, self.statuses[-1:])
        return self.statuses[-1]

    def update(self, text: str) -> None:
        self.update_pub.publish(self._string(data=text))

    def undo(self) -> None:
        self.undo_pub.publish(self._empty())


def _bring_up(start_policy_node, operator, policies):
    proc, log = start_policy_node(
        policies["a"], control_rate_hz=RATE_HZ, obs_timeout_s=0.5, diagnostics_period_s=0.2
    )
    learner = Learner(operator)
    operator.obs = policies["obs"]
    assert operator.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    operator.wait_matched()
    learner.wait_matched()
    assert operator.change_state(Transition.TRANSITION_ACTIVATE), log.read_text()
    learner.status(version=0, accepted=0, refused=0, previous_version=None, path=str(policies["a"]))
    assert operator.spin_until(
        lambda: operator.commands and _close(operator.commands[-1][1], policies["action_a"])
    ), log.read_text()
    return proc, log, learner


def _follows(op, action) -> bool:
    return bool(op.commands) and _close(op.commands[-1][1], action)


def test_update_swaps_weights_between_ticks_and_undo_goes_back(policies, start_policy_node, operator):
    a, b, action_a, action_b = policies["a"], policies["b"], policies["action_a"], policies["action_b"]
    proc, log, learner = _bring_up(start_policy_node, operator, policies)

    sent = time.monotonic()
    learner.update(update_message(b, 1))
    status = learner.status(version=1, accepted=1, previous_version=0)
    assert status["sha256"] == runtime.sha256_file(b) and status["path"] == str(b), status
    assert operator.spin_until(lambda: _follows(operator, action_b), timeout=5.0), operator.commands[-3:]
    # No tick was lost or sent something else: every command is A's until it is B's.
    during = operator.commands_since(sent)
    first_b = next(i for i, c in enumerate(during) if _close(c, action_b))
    assert all(_close(c, action_a) for c in during[:first_b]) and all(
        _close(c, action_b) for c in during[first_b:]
    )

    # Swaps every 0.4 s (A, B, A, B as versions 2..5): the loop keeps its rate.
    operator.spin_for(0.5)
    before = operator.latest_diagnostics(after=len(operator.diagnostics))
    start = time.monotonic()
    for version in range(2, 6):
        learner.update(update_message(a if version % 2 == 0 else b, version))
        operator.spin_for(0.4)
    learner.status(version=5, accepted=5, refused=0)
    operator.spin_for(0.3)
    window = operator.commands_since(start)
    after = operator.latest_diagnostics(after=len(operator.diagnostics))
    rate = len(window) / (time.monotonic() - start)
    assert 0.8 * RATE_HZ <= rate <= 1.2 * RATE_HZ, rate
    assert 0.8 * RATE_HZ <= float(after["loop_rate_hz"]) <= 1.2 * RATE_HZ, after
    ticks = int(after["ticks"]) - int(before["ticks"])
    assert int(after["missed_ticks"]) - int(before["missed_ticks"]) <= 0.02 * ticks, (before, after)
    assert all(_close(c, action_a) or _close(c, action_b) for c in window), "only A's or B's commands"
    assert _follows(operator, action_b)
    assert (after["policy_version"], after["policy_accepted"], after["policy_refused"]) == ("5", "5", "0"), (
        after
    )

    learner.undo()  # back to version 4, which is A
    learner.status(version=4, undone=1, previous_version=None, sha256=runtime.sha256_file(a))
    assert operator.spin_until(lambda: _follows(operator, action_a), timeout=5.0), operator.commands[-3:]
    learner.undo()  # one level only
    status = learner.status(refused=1)
    assert status["version"] == 4 and status["undone"] == 1 and "nothing to undo" in status["last_refusal"], (
        status
    )
    operator.spin_for(0.3)
    assert _follows(operator, action_a)
    d = operator.latest_diagnostics(after=len(operator.diagnostics))
    assert (d["policy_version"], d["policy_undone"], d["policy_refused"]) == ("4", "1", "1"), d
    assert proc.poll() is None and "Traceback" not in log.read_text()


def _nan_weight_copy(src: Path, dst: Path) -> Path:
    """B with one weight NaN and a correct graph digest: what a diverged learner exports."""
    model = onnx.load(str(src))
    tensor = next(t for t in model.graph.initializer if t.name.endswith("weight"))
    weights = numpy_helper.to_array(tensor).copy()
    weights.flat[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
    next(p for p in model.metadata_props if p.key == "rlcontrol.graph_sha256").value = runtime.graph_digest(
        model
    )
    onnx.save(model, str(dst))
    return dst


def test_bad_updates_are_refused_counted_and_the_running_weights_stay(
    policies, start_policy_node, operator, tmp_path
):
    b, action_b = policies["b"], policies["action_b"]
    proc, log, learner = _bring_up(start_policy_node, operator, policies)
    learner.update(update_message(b, 1))
    learner.status(version=1, accepted=1)
    assert operator.spin_until(lambda: _follows(operator, action_b), timeout=5.0)

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
    nan = _nan_weight_copy(b, tmp_path / "nan.onnx")
    mismatch = json.loads(update_message(b, 2))
    mismatch["probe"]["actions"][0][0] += 0.01
    cases = [
        (update_message(b, 2, sha256="ab" * 32), "sha256 mismatch"),
        (update_message(truncated, 2, probe=False), "not a valid ONNX file"),
        (update_message(nan, 2, probe=False), "non-finite (NaN/inf) weights"),
        (json.dumps(mismatch), "probe mismatch"),
        (update_message(policies["c"], 2, probe=False), "incompatible input 'observation': shape [3]"),
        (update_message(b, 1), "stale update: version 1 is not newer than the running version 1"),
        ("{not json", "not valid JSON"),
    ]
    start = time.monotonic()
    for i, (text, reason) in enumerate(cases, start=1):
        learner.update(text)
        status = learner.status(refused=i)
        assert reason in status["last_refusal"], (reason, status)
        assert (status["version"], status["accepted"], status["sha256"]) == (1, 1, runtime.sha256_file(b)), (
            status
        )
    operator.spin_for(0.3)
    during = operator.commands_since(start)
    assert len(during) >= 0.6 * RATE_HZ * (time.monotonic() - start), "commands kept flowing"
    assert all(_close(c, action_b) for c in during), [c for c in during if not _close(c, action_b)][:5]
    d = operator.latest_diagnostics(after=len(operator.diagnostics))
    assert (d["policy_version"], d["policy_refused"]) == ("1", str(len(cases))), d
    text = log.read_text()
    assert sum("policy update refused:" in line for line in text.splitlines()) == len(cases), text

    # Two good requests back to back: the second may supersede the first while it is queued;
    # either way version 3 runs and each request is accounted for once.
    learner.update(update_message(policies["a"], 2))
    learner.update(update_message(b, 3))
    learner.status(version=3, refused=len(cases))
    assert operator.spin_until(lambda: _follows(operator, action_b), timeout=5.0)
    d = operator.latest_diagnostics(after=len(operator.diagnostics))
    assert int(d["policy_accepted"]) - 1 + int(d["policy_superseded"]) == 2, d
    assert proc.poll() is None and "Traceback" not in log.read_text()


PUBLISHER = """
import sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("killed_learner")
pub = node.create_publisher(String, "/policy/update", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
while pub.get_subscription_count() == 0:
    time.sleep(0.01)
pub.publish(String(data=open(sys.argv[1]).read()))
print("sent", flush=True)
while True:  # alive, its DDS participant announced, until it is killed
    time.sleep(0.05)
"""


def test_killed_update_publisher_leaves_the_last_good_weights_running(
    policies, start_policy_node, operator, ros_env, tmp_path
):
    action_b = policies["action_b"]
    proc, log, learner = _bring_up(start_policy_node, operator, policies)
    message = tmp_path / "update.json"
    message.write_text(update_message(policies["b"], 1))
    publisher = launch.spawn(["-c", PUBLISHER, str(message)], ros_env, tmp_path / "publisher.log")
    try:
        learner.status(version=1, accepted=1, timeout=20.0)
        assert operator.spin_until(lambda: _follows(operator, action_b), timeout=5.0)
        killed = time.monotonic()
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=10)
    finally:
        if publisher.poll() is None:
            publisher.kill()
    operator.spin_for(1.5)
    after = operator.commands_since(killed)
    assert len(after) >= 0.8 * RATE_HZ * 1.5, len(after)
    assert all(_close(c, action_b) for c in after), [c for c in after if not _close(c, action_b)][:5]
    d = operator.latest_diagnostics(after=len(operator.diagnostics))
    assert (d["policy_version"], d["policy_accepted"], d["policy_refused"]) == ("1", "1", "0"), d
    assert proc.poll() is None and "Traceback" not in log.read_text()
