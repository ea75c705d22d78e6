"""ROS 2 tests run real rclpy over real DDS (Fast DDS) between separate processes.

Each test gets its own ROS_DOMAIN_ID so parallel or leftover processes never cross-talk,
and discovery stays on this machine.
"""

from __future__ import annotations

import os
import random

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")


@pytest.fixture
def ros_env(monkeypatch):
    """Environment for this test and the node processes it starts (a private domain id)."""
    domain = str(random.Random(os.getpid() ^ id(monkeypatch)).randint(1, 100))
    values = {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl",
              "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}
