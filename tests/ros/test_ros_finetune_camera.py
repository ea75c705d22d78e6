"""Live fine-tuning of a camera policy over ROS 2, as a user runs it, with a safety driver.

`rlcontrol finetune` on the VAE-encoder lane policy (64x64 camera + speed/steering, untrained) with
the lane-car stand-in: the simulated robot publishes sensor_msgs/Image, the policy node acts on it,
the fine-tuning node records each frame once and pushes new camera-in/command-out versions. This
test plays the safety driver on the real topics: it takes over and hands back, asks to undo the
last episode, and sends one frame of the wrong size. Separate processes, real DDS."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _policies_module():
    spec = importlib.util.spec_from_file_location("_finetune_policies_camera",
                                                  REPO_ROOT / "tests/sim2real/finetune_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Driver:
    """The safety driver and operator: takeover, undo, a stray camera frame; reads /finetune/status."""

    def __init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, Empty, String

        from ros_nodes import topics

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("safety_driver_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.takeover_pub = self.node.create_publisher(Bool, topics.TAKEOVER, reliable)
        self.undo_pub = self.node.create_publisher(Empty, topics.UNDO_EPISODE, reliable)
        self.image_pub = self.node.create_publisher(Image, topics.obs_topic("pixels"), reliable)
        self.status: dict = {}
        status_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/finetune/status", lambda m: self.status.update(json.loads(m.data)),
                                      status_qos)
        self._msg = {"Bool": Bool, "Empty": Empty, "Image": Image}

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def takeover(self, driver: bool) -> None:
        self.takeover_pub.publish(self._msg["Bool"](data=driver))

    def undo(self) -> None:
        self.undo_pub.publish(self._msg["Empty"]())

    def wrong_size_frame(self) -> None:
        self.image_pub.publish(self._msg["Image"](height=32, width=32, encoding="rgb8", step=96, data=bytes(32 * 96)))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.mark.slow
def test_camera_policy_is_fine_tuned_live_with_a_safety_driver(tmp_path, ros_env):
    from rlcontrol.replay.transition_log import read_log

    run = _policies_module().make_pixel_finetune_run(tmp_path)
    out = tmp_path / "finetune"
    proc = subprocess.Popen([sys.executable, "-m", "rlcontrol.cli", "finetune", str(run), "--out", str(out),
                             "--stand-in", "lane-car", "--real-time-factor", "4", "--duration", "30",
                             "--learning-starts", "100", "--export-every", "50", "--json"],
                            env=ros_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    driver = Driver()
    try:
        # Wait until the learner has recorded a few episodes, then drive the session as an operator.
        assert driver.spin_until(lambda: driver.status.get("logged", 0) >= 150, 180), (driver.status, proc.poll())
        driver.wrong_size_frame()
        driver.takeover(True)
        assert driver.spin_until(lambda: driver.status.get("takeovers", 0) >= 1, 10), driver.status
        driver.spin_until(lambda: False, 2.0)  # the driver drives (the policy node sends the safe command)
        driver.takeover(False)
        driver.spin_until(lambda: False, 2.0)
        driver.undo()
        assert driver.spin_until(lambda: len(driver.status.get("undone_episodes", [])) == 1, 10), driver.status
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        driver.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["exit_codes"] == {"sim_robot": 0, "finetune_node": 0, "policy_node": 0}, result["logs"]
    learner, policy = result["learner_status"], result["policy_status"]
    # Camera-in, command-out versions swapped in by the policy node, none refused.
    assert policy["accepted"] >= 2 and policy["refused"] == 0, policy
    assert learner["append_failures"] == 0 and learner["learner_error"] == "", learner
    assert learner["bad_images"] >= 1 and "32x32" in learner["last_bad_image"], learner
    assert learner["takeovers"] == 1 and learner["interventions"] >= 1, learner
    # The log: each frame once, the driver's steps marked, the withdrawn episode recorded.
    reader = read_log(out / "transitions")
    records = list(reader)
    assert reader.report.records > len(records)  # first records: an episode's initial frame, stored once
    assert reader.schema.obs_once and records[0].obs["pixels"].shape == (3, 64, 64)
    undone = [r.episode for r in records if r.undo]
    assert undone == learner["undone_episodes"]
    terminated_by_driver = [r for r in records if r.terminated and not r.intervention]
    assert terminated_by_driver and any(r.intervention for r in records)
    assert not np.isnan(np.concatenate([r.obs["state"] for r in records if not r.undo])).any()
