"""Where each part of the policy's observation comes from, and how it is copied in.

The exported policy declares its observation as named components (metadata
`components`, e.g. position(3), velocity(2)); a robot publishes sensor messages. A mapping
entry ties one component to one topic and field:

    {"topic": "/robot/obs/position", "type": "Float64MultiArray"}
    {"topic": "/joint_states", "type": "JointState", "field": "position", "joints": ["slider", "hinge"]}
    {"topic": "/imu", "type": "Imu", "field": "angular_velocity"}            # 3 values
    {"topic": "/odom_twist", "type": "Twist", "field": "linear"}              # 3 values

JointState values are matched by joint *name*, never by array index: drivers publish joints
in any order and may add joints the policy does not use. Each source writes straight into
its slice of one preallocated observation vector; a message that does not fit (wrong
length, missing joint, NaN) is rejected and counted, and the slice keeps its last good
value while the watchdog decides whether that value is still fresh enough.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MESSAGE_TYPES = ("Float64MultiArray", "JointState", "Imu", "Twist")
JOINT_FIELDS = ("position", "velocity", "effort")
IMU_FIELDS = {"angular_velocity": 3, "linear_acceleration": 3, "orientation": 4}
TWIST_FIELDS = ("linear", "angular")


class MappingError(ValueError):
    """A mapping that cannot feed the policy: names the component and what is wrong."""


class RejectedMessage(ValueError):
    """One incoming message that does not fit its slice (counted, never used)."""


@dataclasses.dataclass
class Source:
    component: str
    size: int
    topic: str
    type: str
    field: str = ""
    joints: tuple[str, ...] = ()
    offset: int = 0  # where the slice starts in its input's flat buffer
    out: np.ndarray | None = dataclasses.field(default=None, repr=False)  # that slice (set by the node)
    # where a message is validated before it may touch `out` (set by the node)
    scratch: np.ndarray | None = dataclasses.field(default=None, repr=False)
    # joint-name tuple of a message -> indices of our joints in it; drivers keep one order, so one entry
    _joint_index: dict = dataclasses.field(default_factory=dict, repr=False)

    def extract(self, msg, out: np.ndarray) -> None:
        """Copy this source's values from `msg` into `out` (its slice) or raise RejectedMessage."""
        if self.type == "Float64MultiArray":
            values = msg.data
            if len(values) != self.size:
                raise RejectedMessage(f"{self.topic}: {len(values)} values, expected {self.size}")
            for i in range(self.size):
                out[i] = values[i]
        elif self.type == "JointState":
            self._extract_joints(msg, out)
        elif self.type == "Imu":
            vec = getattr(msg, self.field)
            parts = (vec.x, vec.y, vec.z, vec.w) if self.field == "orientation" else (vec.x, vec.y, vec.z)
            out[:] = parts
        else:  # Twist
            vec = getattr(msg, self.field)
            out[:] = (vec.x, vec.y, vec.z)
        for i in range(self.size):
            if not math.isfinite(out[i]):
                raise RejectedMessage(f"{self.topic}: non-finite value in {self.component}")

    def _extract_joints(self, msg, out: np.ndarray) -> None:
        names = tuple(msg.name)
        index = self._joint_index.get(names)
        if index is None:
            position = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.joints if j not in position]
            if missing:
                raise RejectedMessage(f"{self.topic}: joints {missing} missing (message has {list(names)})")
            index = self._joint_index[names] = [position[j] for j in self.joints]
        values = getattr(msg, self.field)
        if len(values) != len(names):
            raise RejectedMessage(f"{self.topic}: {self.field} has {len(values)} values for {len(names)} joints")
        for k, i in enumerate(index):
            out[k] = values[i]


def build_sources(components: list[tuple[str, tuple[int, ...]]], mapping: dict | None,
                  default_prefix: str = "/robot/obs/") -> list[Source]:
    """Sources in the order of the policy's components, each with its slice offset.

    `mapping` maps component name -> entry (see module docstring); components it does not
    name default to a Float64MultiArray on `<default_prefix><name>`. Raises MappingError
    naming the first problem (unknown component, wrong size, unsupported type or field).
    """
    mapping = dict(mapping or {})
    known = {name for name, _ in components}
    extra = sorted(set(mapping) - known)
    if extra:
        raise MappingError(f"mapping names component(s) {extra} the policy does not have (it has {sorted(known)})")
    sources, offset = [], 0
    for name, shape in components:
        size = int(np.prod(shape)) if shape else 1
        entry = mapping.get(name, {"topic": default_prefix + name, "type": "Float64MultiArray"})
        source = _source(name, size, entry)
        source.offset = offset
        offset += size
        sources.append(source)
    return sources


def _source(name: str, size: int, entry: dict) -> Source:
    kind = entry.get("type", "Float64MultiArray")
    topic = entry.get("topic")
    if not topic:
        raise MappingError(f"component {name!r}: no topic given")
    if kind not in MESSAGE_TYPES:
        raise MappingError(f"component {name!r}: unsupported message type {kind!r} (supported: {MESSAGE_TYPES})")
    fld = entry.get("field", "")
    joints = tuple(entry.get("joints", ()))
    if kind == "JointState":
        if fld not in JOINT_FIELDS:
            raise MappingError(f"component {name!r}: JointState field must be one of {JOINT_FIELDS}, got {fld!r}")
        if len(joints) != size:
            raise MappingError(f"component {name!r} has {size} values but {len(joints)} joints are named")
    elif kind == "Imu":
        if fld not in IMU_FIELDS:
            raise MappingError(f"component {name!r}: Imu field must be one of {sorted(IMU_FIELDS)}, got {fld!r}")
        if IMU_FIELDS[fld] != size:
            raise MappingError(f"component {name!r} has {size} values but Imu {fld} has {IMU_FIELDS[fld]}")
    elif kind == "Twist":
        if fld not in TWIST_FIELDS or size != 3:
            raise MappingError(f"component {name!r}: Twist needs field linear/angular and a 3-value component")
    return Source(name, size, topic, kind, fld, joints)
