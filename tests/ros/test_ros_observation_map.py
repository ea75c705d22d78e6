"""Observation mapping: components fed from topics by name, bad messages rejected whole."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from ros_nodes.observation_map import MappingError, RejectedMessage, build_sources

COMPONENTS = [("position", (3,)), ("velocity", (2,))]


def bound(sources, size):
    flat = np.zeros(size)
    for s in sources:
        s.out = flat[s.offset:s.offset + s.size]
    return flat


def test_default_mapping_is_one_float_array_topic_per_component():
    sources = build_sources(COMPONENTS, None)
    assert [(s.component, s.size, s.topic, s.offset) for s in sources] == [
        ("position", 3, "/robot/obs/position", 0), ("velocity", 2, "/robot/obs/velocity", 3)]
    flat = bound(sources, 5)
    sources[1].extract(Float64MultiArray(data=[4.0, 5.0]), sources[1].out)
    np.testing.assert_array_equal(flat, [0, 0, 0, 4, 5])
    with pytest.raises(RejectedMessage, match="3 values, expected 2"):
        sources[1].extract(Float64MultiArray(data=[1.0, 2.0, 3.0]), np.zeros(2))
    with pytest.raises(RejectedMessage, match="non-finite"):
        sources[1].extract(Float64MultiArray(data=[1.0, float("nan")]), np.zeros(2))


def test_joint_state_is_matched_by_name_not_index():
    mapping = {"position": {"topic": "/joint_states", "type": "JointState", "field": "position",
                            "joints": ["a", "b", "c"]}}
    (pos, _vel) = build_sources(COMPONENTS, mapping)
    msg = JointState(name=["c", "x", "a", "b"], position=[3.0, 9.0, 1.0, 2.0], velocity=[], effort=[])
    out = np.zeros(3)
    pos.extract(msg, out)
    np.testing.assert_array_equal(out, [1.0, 2.0, 3.0])  # reordered by name, extra joint x ignored
    with pytest.raises(RejectedMessage, match=r"joints \['b'\] missing"):
        pos.extract(JointState(name=["a", "c"], position=[1.0, 3.0]), out)
    with pytest.raises(RejectedMessage, match="has 2 values for 4 joints"):
        pos.extract(JointState(name=["c", "x", "a", "b"], position=[1.0, 2.0]), out)


def test_imu_and_twist_fields():
    comps = [("gyro", (3,)), ("quat", (4,)), ("vel", (3,))]
    mapping = {"gyro": {"topic": "/imu", "type": "Imu", "field": "angular_velocity"},
               "quat": {"topic": "/imu", "type": "Imu", "field": "orientation"},
               "vel": {"topic": "/twist", "type": "Twist", "field": "linear"}}
    gyro, quat, vel = build_sources(comps, mapping)
    imu = Imu()
    imu.angular_velocity.x, imu.angular_velocity.z = 1.0, -2.0
    imu.orientation.w = 1.0
    out3, out4 = np.zeros(3), np.zeros(4)
    gyro.extract(imu, out3)
    np.testing.assert_array_equal(out3, [1.0, 0.0, -2.0])
    quat.extract(imu, out4)
    np.testing.assert_array_equal(out4, [0.0, 0.0, 0.0, 1.0])
    tw = Twist()
    tw.linear.y = 0.5
    vel.extract(tw, out3)
    np.testing.assert_array_equal(out3, [0.0, 0.5, 0.0])


@pytest.mark.parametrize("mapping,message", [
    ({"nope": {"topic": "/x"}}, "does not have"),
    ({"position": {"topic": "/j", "type": "JointState", "field": "position", "joints": ["a"]}}, "3 values but 1 joints"),
    ({"position": {"topic": "/j", "type": "JointState", "field": "torque", "joints": ["a", "b", "c"]}}, "field"),
    ({"position": {"topic": "/i", "type": "Imu", "field": "orientation"}}, "has 3 values but Imu orientation has 4"),
    ({"position": {"topic": "/p", "type": "PointCloud2"}}, "unsupported message type"),
    ({"position": {"type": "Float64MultiArray"}}, "no topic"),
])
def test_bad_mappings_name_the_problem(mapping, message):
    with pytest.raises(MappingError, match=message):
        build_sources(COMPONENTS, mapping)
