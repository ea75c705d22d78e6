"""ament_python build of the nodes for a sourced ROS 2 workspace (colcon build).

Outside a workspace, `pip install -e .[ros]` at the repository root installs the same code
(pyproject.toml). The version is read from package.xml, so it is written in one place for ROS.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name="ros_nodes",
    version=VERSION,
    packages=["ros_nodes"],
    package_dir={"ros_nodes": "."},  # this folder is itself the Python package
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/ros_nodes"]),
        ("share/ros_nodes", ["package.xml"]),
        ("share/ros_nodes/params", [str(p.relative_to(HERE)) for p in sorted((HERE / "params").glob("*.yaml"))]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    entry_points={"console_scripts": [
        "policy_node = ros_nodes.policy_node:main",
        "sim_robot = ros_nodes.sim_robot:main",
        "recorder = ros_nodes.recorder:main",
    ]},
)
