"""The policy node's lifecycle and contract over real DDS: `python -m ros_nodes.policy_node` runs
as its own process; the test process is the robot and the operator (fixtures `operator`,
`start_policy_node`, `cartpole_policy` and `reference_obs` in conftest.py).

Waits poll `spin_once` against generous deadlines; only "nothing happens" checks spin for a
fixed time, always with every publisher and subscription already matched.
"""

from __future__ import annotations

import json
import time

import numpy as np
import onnxruntime
import pytest
from lifecycle_msgs.msg import Transition

from rlcontrol.deploy import runtime

SAFE = (0.0,)
RATE_HZ = 100.0


def _close(command, action, tol: float = 1e-6) -> bool:
    return len(command) == len(action) and all(abs(c - a) <= tol for c, a in zip(command, action))


def _bring_up(op, *, activate: bool = True) -> None:
    assert op.change_state(Transition.TRANSITION_CONFIGURE)
    op.wait_matched()
    if activate:
        assert op.change_state(Transition.TRANSITION_ACTIVATE)
        assert op.state() == "active"


def _refusals(log, count: int, timeout: float = 5.0) -> list[str]:
    """The node's `configure refused:` log lines, once `count` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if "configure refused:" in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_nothing_published_while_unconfigured_or_inactive(cartpole_policy, start_policy_node, operator,
                                                         reference_obs):
    proc, log = start_policy_node(cartpole_policy, control_rate_hz=RATE_HZ)
    operator.obs = reference_obs[0][0]  # a robot that publishes all along
    assert operator.state() == "unconfigured", log.read_text()
    operator.spin_for(0.5)
    assert operator.commands == []

    assert operator.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert operator.state() == "inactive"
    operator.wait_matched()  # the command publisher exists and our observations reach the node
    operator.spin_for(1.0)
    assert operator.commands == [], "an inactive node must not command the robot"
    assert proc.poll() is None


def test_active_commands_follow_policy_at_control_rate(cartpole_policy, start_policy_node, operator,
                                                       reference_obs):
    (obs_a, action_a), (obs_b, action_b) = reference_obs
    meta = runtime.load(cartpole_policy).metadata
    proc, log = start_policy_node(cartpole_policy, control_rate_hz=RATE_HZ, obs_timeout_s=0.5)
    operator.obs = obs_a
    _bring_up(operator)
    assert operator.spin_until(lambda: operator.commands and _close(operator.commands[-1][1], action_a)), \
        (operator.commands[-3:], action_a, log.read_text())

    start = time.monotonic()
    operator.spin_for(1.0)
    window = operator.commands_since(start)
    rate = len(window) / (time.monotonic() - start)
    assert 0.6 * RATE_HZ <= rate <= 1.4 * RATE_HZ, rate
    assert all(_close(c, action_a) for c in window), [c for c in window if not _close(c, action_a)][:5]

    switched = time.monotonic()  # a new observation: the command follows it
    operator.obs = obs_b
    assert operator.spin_until(lambda: _close(operator.commands[-1][1], action_b), timeout=5.0)
    operator.spin_for(0.2)
    after = operator.commands_since(switched)
    # The components arrive on their own topics, so one tick may act on b's position with a's
    # velocity or the other way round (seen on CI: 0.0958, the policy's action for b's position and
    # a's velocity); any other command is wrong.
    policy = runtime.load(cartpole_policy)
    mixes = [tuple(float(x) for x in policy.act(np.asarray(pos + vel, np.float32)))
             for pos, vel in ((obs_a["position"], obs_b["velocity"]), (obs_b["position"], obs_a["velocity"]))]
    assert all(_close(c, action_a) or _close(c, action_b) or any(_close(c, m, 1e-5) for m in mixes)
               for c in after), (after, mixes)
    assert _close(after[-1], action_b)
    for _, command in operator.commands:  # clipped into the policy's physical bounds
        assert all(lo <= c <= hi for c, lo, hi in zip(command, meta.action_low, meta.action_high))
    assert proc.poll() is None


@pytest.mark.parametrize("algo", ["qtopt", "sac"])
def test_other_agents_policies_run_through_the_same_node(algo, request, start_policy_node, operator):
    """QT-Opt's CEM policy and SAC's tanh(mean) are ONNX graphs like any other: the node commands
    exactly what the runtime computes in this process for each observation, at the control rate."""
    policy = request.getfixturevalue(f"{algo}_cartpole_policy")
    assert runtime.load(policy).metadata.algorithm == algo
    (obs_a, action_a), (obs_b, action_b) = request.getfixturevalue(f"{algo}_reference_obs")
    proc, log = start_policy_node(policy, control_rate_hz=RATE_HZ, obs_timeout_s=0.5)
    operator.obs = obs_a
    _bring_up(operator)
    assert operator.spin_until(lambda: operator.commands and _close(operator.commands[-1][1], action_a)), \
        (operator.commands[-3:], action_a, log.read_text())
    start = time.monotonic()
    operator.spin_for(0.5)
    window = operator.commands_since(start)
    assert len(window) >= 0.6 * RATE_HZ * 0.5 and all(_close(c, action_a) for c in window), window[:5]
    operator.obs = obs_b
    assert operator.spin_until(lambda: _close(operator.commands[-1][1], action_b), timeout=5.0)
    assert proc.poll() is None


def test_deactivate_sends_safe_command_then_nothing(cartpole_policy, start_policy_node, operator, reference_obs):
    obs, action = reference_obs[0]
    _, log = start_policy_node(cartpole_policy, control_rate_hz=RATE_HZ, obs_timeout_s=0.5)
    operator.obs = obs
    _bring_up(operator)
    assert operator.spin_until(lambda: operator.commands and _close(operator.commands[-1][1], action)), \
        log.read_text()

    assert operator.change_state(Transition.TRANSITION_DEACTIVATE)
    assert operator.state() == "inactive"
    operator.spin_for(0.3)  # what was in flight arrives
    commands = [c for _, c in operator.commands]
    last_policy = max(i for i, c in enumerate(commands) if _close(c, action))
    assert commands[last_policy + 1:] == [SAFE], commands[last_policy - 2:]
    received = len(operator.commands)
    operator.spin_for(0.7)  # observations keep coming; the node stays silent
    assert len(operator.commands) == received


def test_corrupted_model_refuses_configure(cartpole_policy, start_policy_node, operator, tmp_path):
    data = cartpole_policy.read_bytes()
    middle = len(data) // 2
    flipped = tmp_path / "flipped.onnx"
    flipped.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:])
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[:middle])
    proc, log = start_policy_node(flipped)
    cases = [(flipped, "does not match its recorded digest"), (truncated, "not a valid ONNX file")]
    for i, (path, problem) in enumerate(cases):
        operator.set_parameters(model_path=str(path))
        assert not operator.change_state(Transition.TRANSITION_CONFIGURE)
        assert operator.state() == "unconfigured"
        refusals = _refusals(log, i + 1)
        assert len(refusals) == i + 1, log.read_text()
        assert str(path) in refusals[i] and problem in refusals[i], refusals[i]
        assert sum(str(path) in line for line in log.read_text().splitlines()) == 1, log.read_text()
    assert "Traceback" not in log.read_text()
    operator.set_parameters(model_path=str(cartpole_policy))  # the node is not stuck: a good file configures
    assert operator.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert proc.poll() is None


def test_sha256_mismatch_refuses_configure(cartpole_policy, start_policy_node, operator):
    wrong = "ab" * 32
    proc, log = start_policy_node(cartpole_policy, expected_sha256=wrong)
    assert not operator.change_state(Transition.TRANSITION_CONFIGURE)
    assert operator.state() == "unconfigured"
    refusals = _refusals(log, 1)
    assert len(refusals) == 1 and "sha256 mismatch" in refusals[0] and wrong in refusals[0], log.read_text()
    operator.set_parameters(expected_sha256=runtime.sha256_file(cartpole_policy))
    assert operator.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert proc.poll() is None


@pytest.mark.skipif("TensorrtExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="TensorRT present: fp16 is measured by tests/gpu/test_gpu_inference.py instead")
def test_fp16_without_tensorrt_refuses_configure_in_one_line(cartpole_policy, start_policy_node, operator):
    proc, log = start_policy_node(cartpole_policy, precision="fp16")
    assert not operator.change_state(Transition.TRANSITION_CONFIGURE)
    refusals = _refusals(log, 1)
    assert len(refusals) == 1 and "fp16 inference needs onnxruntime's TensorRT" in refusals[0], log.read_text()
    operator.set_parameters(precision="fp32")  # the node is not stuck: fp32 configures
    assert operator.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert proc.poll() is None and "Traceback" not in log.read_text()


@pytest.mark.parametrize("mapping, problem", [
    ({"positon": {"topic": "/robot/obs/position"}}, "observation_map names ['positon']"),
    ({"position": {"topic": "/joint_states", "type": "JointState", "field": "position", "joints": ["slider", "hinge"]}},
     "component 'position' has 3 values but 2 joints are named"),
], ids=["unknown-component", "jointstate-wrong-joint-count"])
def test_bad_observation_map_refuses_configure(cartpole_policy, start_policy_node, operator, mapping, problem):
    _, log = start_policy_node(cartpole_policy)
    operator.set_parameters(observation_map=json.dumps(mapping))  # JSON text; -p would parse it as YAML
    assert not operator.change_state(Transition.TRANSITION_CONFIGURE)
    assert operator.state() == "unconfigured"
    refusals = _refusals(log, 1)
    assert len(refusals) == 1 and problem in refusals[0], log.read_text()


def test_diagnostics_report_rate_latency_watchdog_and_nonfinite(cartpole_policy, start_policy_node, operator,
                                                                  reference_obs):
    timeout = 0.3
    _, log = start_policy_node(cartpole_policy, control_rate_hz=RATE_HZ, obs_timeout_s=timeout,
                               diagnostics_period_s=0.2)
    operator.obs = reference_obs[0][0]
    _bring_up(operator)
    assert operator.spin_until(lambda: operator.diagnostics and int(operator.diagnostics[-1]["ok"]) >= 50), \
        (operator.diagnostics[-1:], log.read_text())
    d = operator.diagnostics[-1]
    assert 0.6 * RATE_HZ <= float(d["loop_rate_hz"]) <= 1.4 * RATE_HZ, d
    p50, p99, worst = (float(d[f"latency_{k}_ms"]) for k in ("p50", "p99", "max"))
    assert 0 < p50 <= p99 <= worst and p99 < 50, d
    assert int(d["latency_count"]) > 0 and int(d["obs_to_command_count"]) > 0, d
    assert {k: int(d[k]) for k in ("stale_trips", "nonfinite_obs", "nonfinite_action", "rejected_messages")} == \
        dict.fromkeys(("stale_trips", "nonfinite_obs", "nonfinite_action", "rejected_messages"), 0), d

    operator.obs = None  # the robot goes quiet past the timeout, then comes back: one watchdog trip
    operator.spin_for(timeout + 0.3)
    operator.obs = reference_obs[0][0]
    seen = len(operator.diagnostics)
    assert operator.spin_until(lambda: len(operator.diagnostics) > seen + 1), log.read_text()
    d = operator.diagnostics[-1]
    assert int(d["stale_trips"]) == 1 and int(d["stale"]) > 0, d
    assert int(d["ticks"]) == sum(int(d[k]) for k in ("estop", "stale", "nonfinite_obs", "nonfinite_action", "ok"))
