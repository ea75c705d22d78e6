"""Single-observation policy latency: onnxruntime (rlcontrol.deploy.runtime) vs eager PyTorch.

    .venv/bin/python -m benchmarks.policy_latency [--rounds 3] [--calls 10000] [--steps 5000]

Trains TD3 on dmc:cheetah-run briefly (the 2x256 MLP actor; 17 observations, 6 actions;
weights do not change the timing, but a trained policy is what gets deployed), exports it
with `rlcontrol export`, then runs `rlcontrol bench-policy` `--rounds` times in fresh
processes. Each round times --calls calls per backend, interleaved in blocks, one thread
each, GC frozen. Prints every round and the median round; writes
benchmarks/results/policy_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "rlcontrol.cli", *map(str, args), "--json"], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"rlcontrol {args[0]} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--run-dir", default="runs/bench-latency/td3_cheetah_run")
    args = parser.parse_args()

    run_dir = ROOT / args.run_dir
    if not (run_dir / "policy.pt").is_file():
        cli("train", ROOT / "configs/td3_cheetah_run.yaml", "--steps", args.steps, "--run-dir", run_dir, "--no-progress",
            "--set", "train.learning_starts=1000", "--set", "train.video_frames=0", "--set", "train.eval_episodes=1")
    export = cli("export", run_dir, "--out", run_dir / "policy.onnx")
    print(f"exported {export['out']}: parity max |diff| {export['parity']['max_abs_diff']:.1e}")
    rounds = [cli("bench-policy", run_dir / "policy.onnx", "--calls", args.calls) for _ in range(args.rounds)]
    print("| round | onnxruntime p50 / p99 / max (us) | eager PyTorch p50 / p99 / max (us) | speed-up p50 / p99 |")
    print("| --- | --- | --- | --- |")
    for i, r in enumerate(rounds):
        o, t = r["onnxruntime"], r["torch_eager"]
        print(f"| {i} | {o['p50_us']:.1f} / {o['p99_us']:.1f} / {o['max_us']:.0f} | {t['p50_us']:.1f} / "
              f"{t['p99_us']:.1f} / {t['max_us']:.0f} | {r['speedup_p50']:.1f}x / {r['speedup_p99']:.1f}x |")
    median = sorted(rounds, key=lambda r: r["onnxruntime"]["p99_us"])[len(rounds) // 2]
    summary = {"rounds": rounds, "median_round_by_ort_p99": median, "parity": export["parity"],
               "ort_p99_us_median": statistics.median(r["onnxruntime"]["p99_us"] for r in rounds),
               "speedup_p50_median": statistics.median(r["speedup_p50"] for r in rounds)}
    out = ROOT / "benchmarks/results/policy_latency.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"median over rounds: onnxruntime p99 {summary['ort_p99_us_median']:.1f} us, "
          f"speed-up at p50 {summary['speedup_p50_median']:.1f}x; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
