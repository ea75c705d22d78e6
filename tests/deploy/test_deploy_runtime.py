"""The deployment runtime: validation on load, the allocation-free act path, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import onnx
import pytest
import torch

from rlcontrol.deploy import runtime
from rlcontrol.deploy.export import DeployedPolicy, build_metadata, input_shapes, to_onnx_bytes
from rlcontrol.deploy.runtime import NonFiniteAction, NonFiniteObservation, ObservationError, PolicyFileError
from rlcontrol.training.evaluate_run import load_policy_agent


def test_reports_provider_and_acts(td3_export):
    _, out, _ = td3_export
    policy = runtime.load(out)
    assert policy.provider == "CPUExecutionProvider"  # no GPU provider on this machine
    action = policy.act(np.zeros(5, np.float32))
    assert action.shape == (1,) and action.dtype == np.float32 and np.isfinite(action).all()


def test_act_reuses_its_buffers(td3_export):
    """No array is allocated per call: inputs are copied into, and actions read from,
    buffers bound to the session once."""
    _, out, _ = td3_export
    policy = runtime.load(out)
    rng = np.random.default_rng(0)
    obs = [rng.standard_normal(5).astype(np.float32) for _ in range(8)]
    first = policy.act(obs[0])
    expected = policy.act_batch(np.stack(obs))
    for i, o in enumerate(obs):
        action = policy.act(o)
        assert action is first  # the same preallocated output view, every call
        np.testing.assert_allclose(action, expected[i], atol=1e-6)
    assert np.shares_memory(policy._input_rows["observation"], policy._inputs["observation"])
    tracemalloc.start()
    try:
        for o in obs * 10:
            policy.act(o)
        before = tracemalloc.get_traced_memory()[0]
        for o in obs * 500:
            policy.act(o)
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 1024  # 4,000 calls, no retained memory


def test_accepts_float64_and_a_leading_batch_of_one(td3_export):
    _, out, _ = td3_export
    policy = runtime.load(out)
    x = np.linspace(-1, 1, 5)
    a64 = policy.act(x).copy()
    a32 = policy.act(x.astype(np.float32)).copy()
    a1 = policy.act(x[None].astype(np.float32)).copy()
    np.testing.assert_array_equal(a64, a32)
    np.testing.assert_array_equal(a1, a32)


@pytest.mark.parametrize("bad,message", [
    (np.zeros(4, np.float32), "shape"),
    (np.zeros((2, 5), np.float32), "shape"),
    (np.zeros(5, np.int64), "dtype"),
    (np.array(["a"] * 5), "dtype"),
    ({"wrong": np.zeros(5, np.float32)}, "missing"),
])
def test_wrong_observations_are_refused(td3_export, bad, message):
    _, out, _ = td3_export
    policy = runtime.load(out)
    with pytest.raises(ObservationError, match=message):
        policy.act(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_observations_are_refused(td3_export, value):
    _, out, _ = td3_export
    policy = runtime.load(out)
    obs = np.zeros(5, np.float32)
    obs[3] = value
    with pytest.raises(NonFiniteObservation, match=r"indices \[3\]"):
        policy.act(obs)
    with pytest.raises(NonFiniteObservation):
        policy.act_batch(obs[None])
    assert np.isfinite(policy.act(np.zeros(5, np.float32))).all()  # and it recovers


def test_non_finite_action_is_refused(td3_export, tmp_path):
    """A broken policy (diverged weights) never produces a silent NaN command."""
    run_dir, _, _ = td3_export
    config, env, agent = load_policy_agent(run_dir)
    with torch.no_grad():
        agent.actor.net[0].weight.fill_(float("nan"))
    shapes = input_shapes(env.spec.observation)
    module = DeployedPolicy(agent.policy(), shapes, env.spec.action_low, env.spec.action_high)
    path = tmp_path / "nan.onnx"
    path.write_bytes(to_onnx_bytes(module, shapes, build_metadata(config, env.spec, "0" * 64)))
    with pytest.raises(NonFiniteAction):
        runtime.load(path).act(np.zeros(5, np.float32))


# ------------------------------------------------------------------ bad files


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PolicyFileError, match="not found"):
        runtime.load(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(PolicyFileError, match="empty"):
        runtime.load(tmp_path / "empty.onnx")
    with pytest.raises(PolicyFileError, match="folder"):
        runtime.load(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_files(td3_export, tmp_path, keep):
    _, out, _ = td3_export
    data = out.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PolicyFileError):
        runtime.load(path)


def test_a_flipped_byte_in_the_weights_is_detected(td3_export, tmp_path):
    _, out, _ = td3_export
    model = onnx.load(out)
    raw = max(model.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = bytearray(out.read_bytes())
    offset = bytes(data).find(raw) + len(raw) // 2
    data[offset] ^= 0x40
    path = tmp_path / "flipped.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(PolicyFileError, match="recorded digest"):
        runtime.load(path)


def test_garbage_and_foreign_onnx_files(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(PolicyFileError):
        runtime.load(path)
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign), dynamo=False)
    with pytest.raises(PolicyFileError, match="not an rlcontrol policy"):
        runtime.load(foreign)


def test_sha256_pinning(td3_export):
    _, out, summary = td3_export
    assert runtime.load(out, expected_sha256=summary["sha256"].upper()).sha256 == summary["sha256"]
    with pytest.raises(PolicyFileError, match="sha256 mismatch"):
        runtime.load(out, expected_sha256="0" * 64)


def test_metadata_that_disagrees_with_the_graph_is_refused(td3_export, tmp_path):
    _, out, _ = td3_export
    model = onnx.load(out)
    for prop in model.metadata_props:
        if prop.key == "rlcontrol.observations":
            prop.value = prop.value.replace("[5]", "[6]")
    path = tmp_path / "lying.onnx"
    onnx.save(model, path)
    with pytest.raises(PolicyFileError, match="shape"):
        runtime.load(path)


def test_external_data_inside_the_folder_is_read_and_outside_is_refused(td3_export, tmp_path):
    _, out, _ = td3_export
    reference = runtime.load(out).act(np.ones(5, np.float32)).copy()
    inside = tmp_path / "inside"
    inside.mkdir()
    onnx.save_model(onnx.load(out), inside / "p.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    np.testing.assert_array_equal(runtime.load(inside / "p.onnx").act(np.ones(5, np.float32)), reference)

    for location in ("../outside.bin", "/etc/passwd"):
        model = onnx.load(inside / "p.onnx", load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        path = inside / "evil.onnx"
        onnx.save(model, path)
        with pytest.raises(PolicyFileError, match="outside the model's folder"):
            runtime.load(path)


def test_runtime_needs_no_torch(td3_export):
    """The robot side imports numpy, onnx and onnxruntime only."""
    _, out, _ = td3_export
    code = ("import sys, numpy as np\n"
            "from rlcontrol.deploy import runtime\n"
            f"p = runtime.load({str(out)!r})\n"
            "p.act(np.zeros(5, np.float32))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert not any(m.startswith('rlcontrol.training') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fp16_is_tensorrt_only_and_an_unknown_precision_is_refused(td3_export):
    _, out, _ = td3_export
    if "TensorrtExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("TensorRT present: tests/gpu/test_gpu_inference.py measures fp16")
    with pytest.raises(PolicyFileError, match="fp16 inference needs onnxruntime's TensorRT") as refused:
        runtime.load(out, precision="fp16")
    assert "\n" not in str(refused.value)
    with pytest.raises(PolicyFileError, match="TensorRT"):
        runtime.load_for_control(out, precision="fp16")  # the parity check cannot run either: no silent fp32
    with pytest.raises(PolicyFileError, match="precision 'bf16'"):
        runtime.load(out, precision="bf16")
    policy, parity = runtime.load_for_control(out)
    assert parity is None and policy.provider == "CPUExecutionProvider"
