"""`rlcontrol export / inspect / bench-policy` as a user runs them, in a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-m", "rlcontrol.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def last_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcontrol: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_export_inspect_and_bench(make_run_dir, tmp_path):
    run_dir = make_run_dir("td3", "dmc:cartpole-swingup", "flat", True)
    out = tmp_path / "policy.onnx"
    summary = last_json(run_cli("export", run_dir, "--out", out, "--parity-samples", "200", "--json"))
    assert summary["parity"]["ok"] and out.is_file()

    info = last_json(run_cli("inspect", out, "--sha256", summary["sha256"], "--json"))
    assert info["algorithm"] == "td3" and info["action_names"] == ["slide"] and info["provider"]
    text = run_cli("inspect", out)
    assert "control period" in text.stdout and "checkpoint sha256" in text.stdout

    bench = last_json(run_cli("bench-policy", out, "--calls", "1000", "--json"))
    for backend in ("onnxruntime", "torch_eager"):
        r = bench[backend]
        assert r["calls"] == 1000 and 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    # The deployment path must beat eager PyTorch; the 3x target is measured in benchmarks.
    assert bench["onnxruntime"]["p50_us"] < bench["torch_eager"]["p50_us"]


def test_bad_input_gets_one_line(make_run_dir, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01not onnx at all" * 10)
    assert_one_line_error(run_cli("export", tmp_path / "missing-run", "--out", tmp_path / "p.onnx"), "not found")
    assert_one_line_error(run_cli("export", make_run_dir(), "--out", tmp_path), "folder")
    assert_one_line_error(run_cli("inspect", tmp_path / "nope.onnx"), "not found")
    assert_one_line_error(run_cli("inspect", garbage))
    assert_one_line_error(run_cli("bench-policy", garbage))
    assert_one_line_error(run_cli("deploy", "--policy", garbage, "--env-kwargs", "[1]"), "JSON object")


@pytest.mark.parametrize("flag", ["--sha256"])
def test_sha_mismatch_on_the_command_line(make_run_dir, tmp_path, flag):
    out = tmp_path / "p.onnx"
    last_json(run_cli("export", make_run_dir(), "--out", out, "--parity-samples", "10", "--json"))
    assert_one_line_error(run_cli("inspect", out, flag, "ab" * 32), "sha256 mismatch")
