"""Tick latency and jitter of the ROS 2 policy node with and without hot-swapped weights.

    .venv/bin/python -m benchmarks.policy_swap [--seconds 20] [--rate 100] [--update-every 0.5]

One `python -m ros_nodes.policy_node` process over real DDS on this machine, driven from this
process (observations at the control rate, lifecycle services, /policy/update). Two phases in
the same node process, each a fresh configuration (so the node's tick statistics start empty):

    no updates    configure, activate, --seconds of control, read /diagnostics
    updates       configure, activate, --seconds with an update every --update-every seconds,
                  alternating two exported 2x256 TD3 cartpole policies (each with a 32-sample
                  probe, as the fine-tuning learner sends), read /diagnostics

Per phase: the node's tick latency (tick start -> command published; p50/p99/max over the
phase), missed ticks and loop rate from its diagnostics, updates accepted, and the gaps between
commands as received here (p50/p99/max), which show any tick that came late. Writes
benchmarks/results/policy_swap.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/policy_swap.json"
KEYS = [
    "ticks",
    "loop_rate_hz",
    "missed_ticks",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "policy_accepted",
    "policy_refused",
    "gc_max_ms",
]


def export_policies(root: Path) -> list[Path]:
    from rlcontrol.deploy.export import export_run

    spec = importlib.util.spec_from_file_location("_deploy_run_factory", ROOT / "tests/deploy/conftest.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    paths = []
    for seed in (0, 1):
        out = root / f"policy{seed}.onnx"
        export_run(factory.make_run(root / f"run{seed}", seed=seed), out, parity_samples=20)
        paths.append(out)
    return paths


def update_message(path: Path, version: int) -> str:
    from rlcontrol.deploy import runtime

    obs = np.random.default_rng(version).normal(2.0, 5.0, size=(32, 5)).astype(np.float32)
    probe = {"inputs": {"observation": obs.tolist()}, "actions": runtime.load(path).act_batch(obs).tolist()}
    return json.dumps(
        {"path": str(path), "sha256": runtime.sha256_file(path), "version": version, "probe": probe}
    )


class Driver:
    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray, String

        from ros_nodes import topics

        rclpy.init()
        self.node = rclpy.create_node("policy_swap_bench")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.arrivals: list[float] = []
        self.diagnostics: list[dict] = []
        self.node.create_subscription(
            Float64MultiArray, topics.COMMAND, lambda m: self.arrivals.append(time.monotonic()), reliable
        )
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, reliable)
        self.obs_pubs = [
            self.node.create_publisher(Float64MultiArray, topics.obs_topic(n), 10)
            for n in ("position", "velocity")
        ]
        self.update_pub = self.node.create_publisher(
            String, topics.POLICY_UPDATE, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.change = self.node.create_client(ChangeState, "/policy_node/change_state")
        self._msg, self._string = Float64MultiArray, String

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == "rlcontrol policy_node":
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def spin(self, seconds: float, rate: float, every: float = 0.0, updates=None) -> None:
        """Publishes observations at `rate` (and an update every `every` s) for `seconds`."""
        start = time.monotonic()
        next_obs, next_update = start, start + every
        obs = [[0.5, -1.0, 2.0], [1.5, 0.3]]
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_obs:
                for pub, data in zip(self.obs_pubs, obs):
                    pub.publish(self._msg(data=data))
                next_obs += 1.0 / rate
            if updates is not None and now >= next_update:
                self.update_pub.publish(self._string(data=next(updates)))
                next_update += every
            self.executor.spin_once(timeout_sec=0.001)

    def transition(self, transition_id: int) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        deadline = time.monotonic() + 30
        while not self.change.service_is_ready():
            assert time.monotonic() < deadline, "policy node never came up"
            self.executor.spin_once(timeout_sec=0.05)
        future = self.change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        while not future.done():
            self.executor.spin_once(timeout_sec=0.05)
        assert future.result().success, f"transition {transition_id} failed"


def phase(driver: Driver, seconds: float, rate: float, every: float, updates) -> dict:
    from lifecycle_msgs.msg import Transition

    driver.transition(Transition.TRANSITION_CONFIGURE)
    driver.spin(1.0, rate)  # topics matched, observations flowing
    driver.transition(Transition.TRANSITION_ACTIVATE)
    driver.spin(1.0, rate)
    driver.arrivals.clear()
    driver.spin(seconds, rate, every, updates)
    seen = len(driver.diagnostics)
    driver.spin(1.0, rate)
    assert len(driver.diagnostics) > seen, "no diagnostics"
    d = driver.diagnostics[-1]
    gaps = np.diff(np.array(driver.arrivals[: int(seconds * rate)])) * 1e3
    driver.transition(Transition.TRANSITION_DEACTIVATE)
    driver.transition(Transition.TRANSITION_CLEANUP)
    row = {k: float(d[k]) for k in KEYS if k in d}
    row.update(
        {
            "gap_p50_ms": float(np.percentile(gaps, 50)),
            "gap_p99_ms": float(np.percentile(gaps, 99)),
            "gap_max_ms": float(gaps.max()),
            "commands": int(gaps.size + 1),
        }
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--update-every", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(101, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    from ros_nodes import launch

    with tempfile.TemporaryDirectory() as tmp:
        paths = export_policies(Path(tmp))
        n = int(args.seconds / args.update_every) + 2
        messages = iter([update_message(paths[(v + 1) % 2], v) for v in range(1, n + 1)])
        log = Path(tmp) / "policy_node.log"
        node = launch.spawn(
            [
                "-m",
                "ros_nodes.policy_node",
                "--ros-args",
                "-p",
                f"model_path:={paths[0]}",
                "-p",
                f"control_rate_hz:={args.rate}",
                "-p",
                "obs_timeout_s:=0.5",
                "-p",
                "diagnostics_period_s:=0.5",
            ],
            dict(os.environ),
            log,
            cwd=ROOT,
        )
        driver = Driver()
        try:
            rows = {
                "no updates": phase(driver, args.seconds, args.rate, 0.0, None),
                f"update every {args.update_every:g} s": phase(
                    driver, args.seconds, args.rate, args.update_every, messages
                ),
            }
        finally:
            launch.stop_process(node, timeout=5.0)
        if "Traceback" in log.read_text():
            print(log.read_text())
    print(
        f"{'phase':<22} {'ticks':>6} {'rate Hz':>8} {'missed':>6} {'lat p50':>8} {'lat p99':>8} {'lat max':>8} "
        f"{'accepted':>8} {'gap p50':>8} {'gap p99':>8} {'gap max':>8}  (ms)"
    )
    for name, r in rows.items():
        print(
            f"{name:<22} {r['ticks']:>6.0f} {r['loop_rate_hz']:>8.1f} {r['missed_ticks']:>6.0f} "
            f"{r['latency_p50_ms']:>8.3f} {r['latency_p99_ms']:>8.3f} {r['latency_max_ms']:>8.3f} "
            f"{r.get('policy_accepted', 0):>8.0f} {r['gap_p50_ms']:>8.2f} {r['gap_p99_ms']:>8.2f} "
            f"{r['gap_max_ms']:>8.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "load_avg": os.getloadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
