"""`rlcontrol export / inspect / bench-policy` as a user runs them, in a separate process."""

from __future__ import annotations

import json
import os
import shutil
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

    # The policy records the run's name only: the run is found in the policy's folder or beside it,
    # or given with --run; elsewhere the eager arm is skipped with a note.
    alone = tmp_path / "shipped" / "policy.onnx"
    alone.parent.mkdir()
    shutil.copy(out, alone)
    bench = last_json(run_cli("bench-policy", alone, "--calls", "1000", "--json"))
    assert "torch_eager" not in bench and "pass --run RUN_DIR" in json.dumps(bench)
    inside = run_dir / "policy.onnx"
    shutil.copy(out, inside)
    for args in ((inside,), (alone, "--run", run_dir)):
        bench = last_json(run_cli("bench-policy", *args, "--calls", "1000", "--json"))
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


CONV2D_IMAGE = {"pixels": {"type": "conv2d", "hidden": [8, 8], "kernel": 3, "stride": 2, "features": 16, "join": 1}}
LANE_PIXELS = {"pixels": True, "pixel_size": 32, "kwargs": {"include_state": True}}


def test_camera_export_on_the_command_line(make_run_dir, tmp_path):
    run_dir = make_run_dir("td3", "rlc:lane-following", "dict", True, hidden=(32, 32), encoders=CONV2D_IMAGE,
                           env=LANE_PIXELS)
    out = tmp_path / "camera.onnx"
    summary = last_json(run_cli("export", run_dir, "--out", out, "--camera-size", "96x128", "--crop-top", "0.25",
                                "--parity-samples", "50", "--json"))
    assert summary["parity"]["ok"] and summary["inputs"] == {"pixels": [96, 128, 3], "state": [2]}
    assert summary["camera"] == {"size": [96, 128], "crop": {"top": 0.25, "bottom": 0.0, "left": 0.0, "right": 0.0},
                                 "layout": "HWC", "network_inputs": {"pixels": [3, 32, 32]}}
    text = run_cli("inspect", out).stdout
    assert ("pixels(96, 128, 3) uint8 history 1 HWC camera frame -> crop (top 0.25), resize to (3, 32, 32) "
            "in the graph") in text, text
    for flags, words in [(("--camera-size", "480by640"), ("--camera-size", "HEIGHTxWIDTH")),
                         (("--camera-size", "96x128", "--crop-top", "0.6", "--crop-bottom", "0.5"), ("leaves nothing",)),
                         (("--crop-top", "0.3"), ("--crop-top needs --camera-size",)),
                         (("--camera-size", "16x16"), ("smaller than the policy's 32x32",)),
                         (("--camera-size", "96x128", "--crop-left", "1.5"), ("--crop-left", "[0, 1)"))]:
        assert_one_line_error(run_cli("export", run_dir, "--out", tmp_path / "bad.onnx", *flags), *words)
    assert not (tmp_path / "bad.onnx").exists()
