"""Camera-layout export: single-observation onnxruntime latency with the camera's frame as input
(crop + INTER_AREA resize inside the graph) against the training-size (C, H, W) export.

    .venv/bin/python -m benchmarks.camera_latency [--camera-size 480x640] [--crop-top 0.25] [--rounds 3] [--calls 500]

Trains configs/ddpg_lane_following_pixels.yaml for 300 steps if --run-dir has no policy.pt (the
64x64 conv2d lane policy; weights do not change the timing), exports it twice, at the training
size and with --camera-size, then runs `rlcontrol bench-policy --calls N` on each file, in fresh
processes, alternating, --rounds times. For reference it also times, in this process, the
numpy path a node would otherwise take: `ImagePreprocessing(frame)` with OpenCV, then the
training-size policy's `act`. Prints the p50 of every round and the medians; writes
benchmarks/results/camera_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.policy_latency import ROOT, cli


def numpy_path_p50_us(policy_path: Path, camera_hw: tuple[int, int], crop_top: float, calls: int) -> float:
    """p50 of ImagePreprocessing (OpenCV) + the CHW policy's act on random camera frames."""
    from rlcontrol.deploy import runtime
    from rlcontrol.vision.preprocess import ImagePreprocessing

    policy = runtime.load(policy_path, warmup=50)
    image, state = policy.metadata.observations
    prep = ImagePreprocessing(crop_top=crop_top, out_size=image.shape[1:])
    frames = np.random.default_rng(0).integers(0, 256, (16, *camera_hw, 3), dtype=np.uint8)
    obs = {state.name: np.zeros(state.shape, np.float32)}
    times = np.empty(calls, np.int64)
    for i in range(calls + 16):
        t0 = time.perf_counter_ns()
        obs[image.name] = prep(frames[i % 16])
        policy.act(obs)
        if i >= 16:  # the first 16 warm up
            times[i - 16] = time.perf_counter_ns() - t0
    return float(np.percentile(times, 50) / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/bench-latency/ddpg_lane_following_pixels")
    parser.add_argument("--camera-size", default="480x640")
    parser.add_argument("--crop-top", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()

    run_dir = ROOT / args.run_dir
    if not (run_dir / "policy.pt").is_file():
        cli("train", ROOT / "configs/ddpg_lane_following_pixels.yaml", "--steps", 300, "--run-dir", run_dir,
            "--no-progress", "--set", "train.learning_starts=100", "--set", "train.eval_every=100000",
            "--set", "train.checkpoint_every=100000", "--set", "train.video_frames=0")
    files = {"chw": run_dir / "policy.onnx", "camera": run_dir / f"policy_camera_{args.camera_size}.onnx"}
    exports = {"chw": cli("export", run_dir, "--out", files["chw"], "--parity-samples", 200),
               "camera": cli("export", run_dir, "--out", files["camera"], "--parity-samples", 200,
                             "--camera-size", args.camera_size, "--crop-top", args.crop_top)}
    for name, e in exports.items():
        print(f"{name}: inputs {e['inputs']}, parity max |diff| {e['parity']['max_abs_diff']:.1e}")
    rounds: dict[str, list[dict]] = {"chw": [], "camera": []}
    camera_hw = tuple(int(d) for d in args.camera_size.lower().split("x"))
    numpy_p50 = []
    for _ in range(args.rounds):
        for name, path in files.items():
            rounds[name].append(cli("bench-policy", path, "--calls", args.calls))
        numpy_p50.append(numpy_path_p50_us(files["chw"], camera_hw, args.crop_top, args.calls))
    print("| round | CHW 64x64 onnxruntime p50 / p99 (us) | camera onnxruntime p50 / p99 (us) | "
          "OpenCV preprocessing + CHW onnxruntime p50 (us) |")
    print("| --- | --- | --- | --- |")
    for i in range(args.rounds):
        c, k = rounds["chw"][i]["onnxruntime"], rounds["camera"][i]["onnxruntime"]
        print(f"| {i} | {c['p50_us']:.0f} / {c['p99_us']:.0f} | {k['p50_us']:.0f} / {k['p99_us']:.0f} | "
              f"{numpy_p50[i]:.0f} |")
    summary = {"camera_size": args.camera_size, "crop_top": args.crop_top, "calls": args.calls,
               "inputs": {name: e["inputs"] for name, e in exports.items()},
               "p50_us_median": {name: statistics.median(r["onnxruntime"]["p50_us"] for r in rs)
                                 for name, rs in rounds.items()},
               "numpy_path_p50_us_median": statistics.median(numpy_p50), "rounds": rounds}
    out = ROOT / "benchmarks/results/camera_latency.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    m = summary["p50_us_median"]
    print(f"median p50: CHW {m['chw']:.0f} us, camera {m['camera']:.0f} us, "
          f"numpy path {summary['numpy_path_p50_us_median']:.0f} us; wrote {out}")


if __name__ == "__main__":
    main()
