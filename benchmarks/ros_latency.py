"""Control-loop latency and missed ticks of the ROS 2 policy node, at 100 Hz and 500 Hz.

    .venv/bin/python -m benchmarks.ros_latency [--ticks 10000]

Deploys TD3's 2x256 cheetah-run policy (benchmarks/policy_latency.py trains and exports it
if it is not there yet) through `rlcontrol deploy`: the simulated MuJoCo robot and the
policy node in separate processes over real DDS on this machine. The robot's sensor rate
is made equal to the control rate (real-time factor = rate x the task's 0.01 s period), and
each configuration runs long enough for at least --ticks control ticks. Figures come from
the node's own diagnostics: tick compute latency (tick start -> command published),
observation-to-command latency (sensor message received -> command published) and the
missed-tick fraction (ticks whose start came more than 1.5 periods after the previous one,
counted per period lost). Writes benchmarks/results/ros_latency.json.

Each row also carries a baseline measured just before it: a bare Python loop that only
sleeps to the same deadlines for the same number of ticks, in its own process, with no ROS
and no other work. On a shared VM that baseline already misses ticks (the host deschedules
the VM for milliseconds at a time), so the node's figure is read against it, like a peer
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "runs/bench-latency/td3_cheetah_run/policy.onnx"
CONFIGS = [  # (rate Hz, trigger, SCHED_FIFO priority)
    (100, "timer", 0),
    (500, "timer", 0),
    (500, "timer", 50),
    (500, "observation", 0),
]
KEYS = ["ticks", "loop_rate_hz", "missed_tick_fraction", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
        "obs_to_command_count", "obs_to_command_p50_ms", "obs_to_command_p99_ms", "obs_to_command_max_ms",
        "stale_trips", "gc_max_ms"]


BARE_LOOP = """
import sys, time
period, n = 1.0 / float(sys.argv[1]), int(sys.argv[2])
starts, deadline = [], time.monotonic()
for _ in range(n):
    now = time.monotonic()
    if deadline > now:
        time.sleep(deadline - now)
    starts.append(time.monotonic())
    deadline += period
    if time.monotonic() - deadline > period:
        deadline = time.monotonic()
gaps = [b - a for a, b in zip(starts, starts[1:])]
missed = sum(round(g / period) - 1 for g in gaps if g > 1.5 * period)
print(missed / (len(gaps) + missed), max(gaps))
"""


def bare_loop(rate: float, ticks: int) -> tuple[float, float]:
    """(missed fraction, max gap in ms) of a loop that does nothing but keep the schedule."""
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(rate), str(ticks)], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), 1e3 * float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=10_000)
    args = parser.parse_args()
    if not POLICY.is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.policy_latency", "--rounds", "1"], cwd=ROOT, check=True)
    from ros_nodes.launch import deploy

    rows = []
    for rate, trigger, priority in CONFIGS:
        bare_missed, bare_max_ms = bare_loop(rate, args.ticks)
        duration = args.ticks / rate * 1.05 + 1.0
        summary = deploy(str(POLICY), episodes=None, duration=duration, rate_hz=rate, real_time_factor=rate * 0.01,
                         trigger=trigger, realtime_priority=priority, quiet=True)
        d = summary["diagnostics"]
        row = {"rate_hz": rate, "trigger": trigger, "realtime_priority": priority,
               **{k: d.get(k) for k in KEYS}, "bare_loop_missed_fraction": bare_missed,
               "bare_loop_max_gap_ms": bare_max_ms}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| rate | trigger | SCHED_FIFO | ticks | missed | bare loop missed | tick p50 / p99 / max (ms) "
          "| obs-to-command p50 / p99 / max (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['rate_hz']} Hz | {r['trigger']} | {r['realtime_priority'] or 'off'} | {r['ticks']} | "
              f"{100 * r['missed_tick_fraction']:.3f}% | {100 * r['bare_loop_missed_fraction']:.3f}% | "
              f"{r['latency_p50_ms']:.3f} / {r['latency_p99_ms']:.3f} / "
              f"{r['latency_max_ms']:.2f} | {r['obs_to_command_p50_ms']:.3f} / {r['obs_to_command_p99_ms']:.3f} / "
              f"{r['obs_to_command_max_ms']:.2f} |")
    out = ROOT / "benchmarks/results/ros_latency.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
