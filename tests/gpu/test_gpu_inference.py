"""On-board GPU inference (issue 20): onnxruntime's GPU providers are chosen on their own, match the
CPU, and fp16 TensorRT is allowed only with a measured parity. Skipped without onnxruntime-gpu (CI
has none); on a GPU machine: benchmarks/gpu/run.sh, which also runs benchmarks.gpu_inference."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.gpu_inference import export_untrained, parity
from rlcontrol.deploy import runtime

AVAILABLE = ort.get_available_providers()
pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in AVAILABLE,
                                reason="no onnxruntime GPU provider (CI has none)")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return export_untrained("configs/td3_cartpole_balance.yaml", tmp_path_factory.mktemp("gpu-inference"))


def test_the_gpu_provider_is_chosen_by_default_and_matches_the_cpu(mlp):
    chosen, cpu = runtime.load(mlp), runtime.load(mlp, providers=["CPUExecutionProvider"])
    assert chosen.provider == ("TensorrtExecutionProvider" if "TensorrtExecutionProvider" in AVAILABLE
                               else "CUDAExecutionProvider")
    obs = runtime.random_inputs(cpu.metadata, 64)
    assert parity(chosen, cpu, obs) < 1e-3 * float(np.max(np.subtract(cpu.metadata.action_high,
                                                                     cpu.metadata.action_low)))


@pytest.mark.skipif("TensorrtExecutionProvider" not in AVAILABLE, reason="no TensorRT provider")
def test_fp16_parity_is_measured_and_gates_the_load(mlp):
    measured = runtime.fp16_parity(mlp, samples=64)
    assert measured["provider"] == "TensorrtExecutionProvider" and 0 <= measured["max_error_share"] < 0.05
    policy, checked = runtime.load_for_control(mlp, precision="fp16", fp16_tolerance=1.0)
    assert checked["ok"] and np.isfinite(policy.act(runtime.random_inputs(policy.metadata, 1)[0])).all()
    with pytest.raises(runtime.PolicyFileError, match="fp16 parity failed"):
        runtime.load_for_control(mlp, precision="fp16", fp16_tolerance=0.0)
