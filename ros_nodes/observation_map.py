"""Where each part of the policy's observation comes from, and how it is copied in.

The exported policy declares its observation as named components (metadata
`components`, e.g. position(3), velocity(2)); a robot publishes sensor messages. A mapping
entry ties one component to one topic and field:

    {"topic": "/robot/obs/position", "type": "Float64MultiArray"}
    {"topic": "/joint_states", "type": "JointState", "field": "position", "joints": ["slider", "hinge"]}
    {"topic": "/imu", "type": "Imu", "field": "angular_velocity"}            # 3 values
    {"topic": "/odom_twist", "type": "Twist", "field": "linear"}              # 3 values

An image input (uint8 (C, H, W), e.g. "pixels") is one source of its own, keyed by the input's
name and fed by a sensor_msgs/Image topic (default `<prefix><input name>`, e.g. /robot/obs/pixels):

    {"topic": "/camera/image_raw", "type": "Image"}

converted and resized to the input's shape by `ros_nodes.image_conversion` (any encoding it
knows, any row padding); an image it cannot convert is rejected and counted like any other.
A camera-layout input (metadata layout "HWC", uint8 (H, W, 3), `rlcontrol export --camera-size`)
gets the image's pixels as RGB without resizing, since the graph resizes; an image of another
size than (H, W) is rejected and counted.

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

MESSAGE_TYPES = ("Float64MultiArray", "JointState", "Imu", "Twist", "Image")
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

    def new_scratch(self) -> np.ndarray:
        """A buffer shaped like `out`, where a message is validated before it may touch `out`."""
        return np.zeros(self.size)

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
    elif kind == "Image":
        raise MappingError(f"component {name!r} is a vector of {size} values: type Image is only for "
                           "uint8 (C, H, W) image inputs")
    return Source(name, size, topic, kind, fld, joints)


# ---------------------------------------------------------------------- image inputs


def is_image_input(dtype: str, shape: tuple[int, ...]) -> bool:
    """What the node feeds from sensor_msgs/Image: a uint8 (C, H, W) policy input, or an (H, W, 3)
    camera frame (layout HWC)."""
    return dtype == "uint8" and len(shape) == 3


@dataclasses.dataclass
class ImageSource(Source):
    """One image input fed whole by a sensor_msgs/Image topic; `out` is the (C, H, W) buffer, or
    the (H, W, 3) one of a camera frame (layout HWC)."""

    shape: tuple[int, int, int] = (3, 1, 1)
    layout: str = "CHW"
    converter: object = dataclasses.field(default=None, repr=False)  # image_conversion.ImageConverter
    last_size: tuple[int, int] | None = None  # (height, width) of the last good image
    logged_size: tuple[int, int] | None = None  # the size the node last reported (it logs each new one)

    def new_scratch(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=np.uint8)

    def extract(self, msg, out: np.ndarray) -> None:
        """Convert `msg` into `out` (uint8 (C, H, W) or (H, W, 3)) or raise RejectedMessage.

        Any failure at all rejects the message, not only the checks of a malformed image: a
        conversion that raised cannot have produced an image the policy may act on.
        """
        try:
            self.converter.convert(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                   bool(msg.is_bigendian), out=out)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            raise RejectedMessage(f"{self.topic}: {exc}") from None
        self.last_size = (int(msg.height), int(msg.width))


def build_image_source(name: str, shape: tuple[int, ...], entry: dict | None,
                       default_prefix: str = "/robot/obs/", layout: str = "CHW") -> ImageSource:
    """The source of image input `name` (uint8 (C, H, W), or (H, W, 3) for layout "HWC"); raises
    MappingError naming a mapping that is not an Image topic, or an image the converter cannot
    produce (C not 1 or 3; a camera frame not RGB)."""
    from ros_nodes.image_conversion import OUTPUT_CHANNELS, ImageConverter  # OpenCV only for image policies

    entry = entry or {"topic": default_prefix + name, "type": "Image"}
    kind = entry.get("type", "Image")  # an image input can only be an Image topic: the type may be left out
    if kind != "Image":
        raise MappingError(f"input {name!r} is a uint8 {tuple(shape)} image: it must map to a sensor_msgs/Image "
                           f"topic (type Image), not {kind!r}")
    topic = entry.get("topic")
    if not topic:
        raise MappingError(f"input {name!r}: no topic given")
    if layout == "HWC":
        height, width, channels = (int(d) for d in shape)
        if channels != 3 or height < 1 or width < 1:
            raise MappingError(f"input {name!r} has shape {tuple(shape)}: camera frames must be (H, W, 3) RGB")
    else:
        channels, height, width = (int(d) for d in shape)
        if channels not in OUTPUT_CHANNELS or height < 1 or width < 1:
            raise MappingError(f"input {name!r} has shape {tuple(shape)}: images must be (1 or 3, H, W)")
    converter = ImageConverter(channels, height, width, layout=layout)
    return ImageSource(name, channels * height * width, topic, "Image", shape=converter.shape, layout=layout,
                       converter=converter)
