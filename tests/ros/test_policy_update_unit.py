"""The hot-swap checks of ros_nodes.policy_update on their own: no rclpy, no node, no sleeps.

Files come from the session's exported cartpole policy (`cartpole_policy` in conftest.py) and
edits of it; metadata incompatibilities are made with dataclasses.replace.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from rlcontrol.deploy import runtime
from ros_nodes import policy_update as pu
from ros_nodes.policy_update import UpdateRefused

SHA = "ab" * 32


def _request(**fields) -> str:
    return json.dumps({"path": "/abs/policy.onnx", "sha256": SHA, "version": 1, **fields})


def _nan_weight_copy(src, dst, value=np.nan):
    """A copy of `src` with one weight set to `value` and the graph digest recomputed, as a
    learner whose training diverged would export it."""
    model = onnx.load(str(src))
    tensor = next(t for t in model.graph.initializer if t.name.endswith("weight"))
    weights = numpy_helper.to_array(tensor).copy()
    weights.flat[0] = value
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
    next(p for p in model.metadata_props if p.key == "rlcontrol.graph_sha256").value = runtime.graph_digest(
        model
    )
    onnx.save(model, str(dst))
    return tensor.name


# ---------------------------------------------------------------- parse_request


def test_parse_request_reads_the_contract():
    request = pu.parse_request(_request(version=3, atol=0.5, probe={"inputs": {}, "actions": []}), 2)
    assert request.path.as_posix() == "/abs/policy.onnx" and request.sha256 == SHA and request.version == 3
    assert request.atol == 0.5 and request.probe == {"inputs": {}, "actions": []}
    default = pu.parse_request(_request(sha256=SHA.upper()), 0)
    assert default.atol == pu.DEFAULT_ATOL and default.probe is None and default.sha256 == SHA


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"path": "/a.onnx", "version": 1}), "lacks field(s) ['sha256']"),
        (_request(path="policy.onnx"), "absolute path to a .onnx file"),
        (_request(path="/abs/policy.pt"), "absolute path to a .onnx file"),
        (_request(path=7), "path must be a non-empty string"),
        (_request(sha256="abc"), "64 hex digits"),
        (_request(version=True), "version must be an integer"),
        (_request(version="2"), "version must be an integer"),
        (_request(version=2), "stale update: version 2 is not newer than the running version 2"),
        (_request(version=1), "stale update: version 1"),
        (_request(version=3, atol=-1), "atol must be a finite number"),
        (_request(version=3, atol="big"), "atol must be a finite number"),
        (_request(version=3).replace("}", ', "atol": NaN}'), "atol must be a finite number"),
        (_request(version=3, probe=[1]), "probe must be an object"),
        (_request(version=3, probe={"inputs": {}}), "probe must be an object"),
    ],
)
def test_parse_request_refuses_with_the_reason(text, reason):
    with pytest.raises(UpdateRefused) as refused:
        pu.parse_request(text, 2)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)


def test_reasons_are_one_bounded_line():
    assert pu.one_line("a\nb\n  c") == "a b c"
    assert len(pu.one_line("x" * 10_000)) == pu.MAX_REASON_CHARS


# ---------------------------------------------------------------- compatibility


def test_compatibility_names_the_first_difference(cartpole_policy):
    meta = runtime.load(cartpole_policy).metadata
    obs = meta.observations[0]
    assert pu.compatible_problem(meta, meta) is None

    def with_obs(**changes):
        return dataclasses.replace(meta, observations=(dataclasses.replace(obs, **changes),))

    swapped = (("velocity", (2,)), ("position", (3,)))
    cases = [
        (with_obs(name="state"), "incompatible inputs: the new policy takes ['state']"),
        (with_obs(shape=(6,)), "incompatible input 'observation': shape [6] in the new policy, [5]"),
        (with_obs(dtype="uint8"), "dtype 'uint8'"),
        (with_obs(components=swapped), "components"),
        (with_obs(history=2), "history 2"),
        (
            dataclasses.replace(
                meta, action_names=("slide", "push"), action_low=(-1, -1), action_high=(1, 1)
            ),
            "incompatible actions: the new policy has 2, the running one 1",
        ),
        (dataclasses.replace(meta, action_names=("push",)), "names ['push']"),
        (dataclasses.replace(meta, action_high=(2.0,)), "incompatible action bounds"),
    ]
    for new, reason in cases:
        problem = pu.compatible_problem(meta, new)
        assert problem and reason in problem, (problem, reason)


# ---------------------------------------------------------------- weights


def test_nonfinite_weights_finds_initializers_and_constants(cartpole_policy, tmp_path):
    assert pu.nonfinite_weights(onnx.load(str(cartpole_policy))) == []
    name = _nan_weight_copy(cartpole_policy, tmp_path / "nan.onnx")
    assert pu.nonfinite_weights(onnx.load(str(tmp_path / "nan.onnx"))) == [name]
    _nan_weight_copy(cartpole_policy, tmp_path / "inf.onnx", value=np.inf)
    assert pu.nonfinite_weights(onnx.load(str(tmp_path / "inf.onnx"))) == [name]

    model = onnx.load(str(cartpole_policy))  # a Constant node's value (the normalizer's, here)
    constant = next(
        n
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT
    )
    values = numpy_helper.to_array(constant.attribute[0].t).copy()
    values.flat[0] = -np.inf
    constant.attribute[0].t.CopyFrom(numpy_helper.from_array(values, constant.attribute[0].t.name))
    assert len(pu.nonfinite_weights(model)) == 1


# ---------------------------------------------------------------- probe


def _probe(policy, n=8, seed=0):
    obs = np.random.default_rng(seed).normal(2.0, 5.0, size=(n, 5)).astype(np.float32)
    return {"inputs": {"observation": obs.tolist()}, "actions": policy.act_batch(obs).tolist()}


def test_probe_matches_within_atol_and_refuses_otherwise(cartpole_policy):
    policy = runtime.load(cartpole_policy)
    probe = _probe(policy)
    assert pu.probe_problem(policy, probe, 1e-4) is None
    shifted = {**probe, "actions": [[a[0] + 0.01] for a in probe["actions"]]}
    assert "probe mismatch" in pu.probe_problem(policy, shifted, 1e-4)
    assert pu.probe_problem(policy, shifted, 0.02) is None

    obs = probe["inputs"]["observation"]
    cases = [
        ({"inputs": {"obs": obs}, "actions": probe["actions"]}, "do not match the policy's inputs"),
        ({"inputs": {"observation": [row[:4] for row in obs]}, "actions": probe["actions"]}, "shape [8, 4]"),
        (
            {"inputs": {"observation": [obs[0], obs[1][:3]]}, "actions": probe["actions"][:2]},
            "not a rectangular",
        ),
        ({"inputs": {"observation": [["a"] * 5]}, "actions": [[0.0]]}, "holds <U1 values"),
        ({"inputs": {"observation": [obs[0]] * 65}, "actions": [[0.0]] * 65}, "1 <= N <= 64"),
        (
            {"inputs": {"observation": obs}, "actions": probe["actions"][:3]},
            "probe actions have shape [3, 1]",
        ),
        ({"inputs": {"observation": obs}, "actions": [[float("nan")]] * 8}, "probe actions contain NaN"),
        ({"inputs": {"observation": [[float("inf")] * 5]}, "actions": [[0.0]]}, "probe inputs refused"),
    ]
    for bad, reason in cases:
        problem = pu.probe_problem(policy, bad, 1e-4)
        assert problem and reason in problem, (problem, reason)


# ---------------------------------------------------------------- load_checked


def _update(path, version=1, **fields):
    return pu.parse_request(
        json.dumps({"path": str(path), "sha256": runtime.sha256_file(path), "version": version, **fields}), 0
    )


def test_load_checked_accepts_a_good_file_and_refuses_bad_ones(cartpole_policy, tmp_path):
    meta = runtime.load(cartpole_policy).metadata
    good = pu.load_checked(_update(cartpole_policy, probe=_probe(runtime.load(cartpole_policy))), meta)
    assert good.sha256 == runtime.sha256_file(cartpole_policy)

    nan = tmp_path / "nan.onnx"
    _nan_weight_copy(cartpole_policy, nan)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(cartpole_policy.read_bytes()[:5000])
    wrong_sha = dataclasses.replace(_update(cartpole_policy), sha256=SHA)
    missing = dataclasses.replace(_update(cartpole_policy), path=tmp_path / "gone.onnx")
    probe = _probe(good)
    probe["actions"][3][0] += 0.5
    cases = [
        (wrong_sha, "sha256 mismatch"),
        (missing, "policy file not found"),
        (_update(truncated), "not a valid ONNX file"),
        (_update(nan), "non-finite (NaN/inf) weights in ['policy."),
        (_update(cartpole_policy, probe=probe), "probe mismatch"),
    ]
    for request, reason in cases:
        with pytest.raises(UpdateRefused) as refused:
            pu.load_checked(request, meta)
        assert reason in str(refused.value), (str(refused.value), reason)
    incompatible = dataclasses.replace(meta, action_high=(0.5,))
    with pytest.raises(UpdateRefused, match="incompatible action bounds"):
        pu.load_checked(_update(cartpole_policy), incompatible)


# ---------------------------------------------------------------- history


class _Policy:
    def __init__(self, name):
        self.sha256, self.path = name * 8, f"/p/{name}.onnx"


def test_history_keeps_one_previous_and_counts():
    a, b, c = _Policy("a"), _Policy("b"), _Policy("c")
    history = pu.PolicyHistory(a)
    assert history.status() == {
        "version": 0,
        "sha256": "a" * 8,
        "path": "/p/a.onnx",
        "previous_version": None,
        "accepted": 0,
        "refused": 0,
        "undone": 0,
        "last_refusal": "",
    }
    with pytest.raises(UpdateRefused, match="version 0 is the configured model"):
        history.undo()
    assert history.accept(b, 1) is None
    assert history.accept(c, 2) is a  # two back: dropped
    with pytest.raises(UpdateRefused, match="stale update"):
        history.accept(a, 2)
    assert history.undo() is c
    assert history.current.policy is b and history.version == 1 and history.previous is None
    with pytest.raises(UpdateRefused, match="already undone to version 1"):
        history.undo()
    history.refuse("line one\nline two")
    assert history.accept(c, 2) is None  # the undone version may come again: it is newer than 1
    status = history.status()
    assert (status["version"], status["previous_version"], status["accepted"], status["undone"]) == (
        2,
        1,
        3,
        1,
    )
    assert status["refused"] == 1 and status["last_refusal"] == "line one line two"
