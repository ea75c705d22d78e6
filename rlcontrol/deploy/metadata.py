"""The contract an exported policy carries in its ONNX `metadata_props`.

Every key is prefixed `rlcontrol.`; structured values are JSON. A file without
`rlcontrol.format` is not an rlcontrol policy. Torch-free: the runtime and the ROS 2
policy node read this on the robot.

    rlcontrol.format            "rlcontrol-policy/1"
    rlcontrol.version           toolkit version that exported it
    rlcontrol.algorithm         td3, ddpg, ...
    rlcontrol.env_id            the training task, e.g. dmc:cheetah-run
    rlcontrol.observations      [{name, shape, dtype, history, components, layout,
                                  camera_shape, preprocessing}]  one per graph input; see below
    rlcontrol.actions           {output, names, low, high}  physical bounds, in action order
    rlcontrol.control_period    seconds between actions the policy was trained with
    rlcontrol.config_sha256     digest of the resolved training config
    rlcontrol.checkpoint_sha256 sha256 of the policy checkpoint it was exported from
    rlcontrol.graph_sha256      sha256 of the serialized graph: detects a corrupted file
    rlcontrol.obs_normalization "in-graph" or "none"

Image inputs (uint8, 3-D) carry a `layout`:
    "CHW"  the network's own input, (C, H, W) at the training size (files written before
           layouts were recorded read as this);
    "HWC"  a camera frame, uint8 (H, W, 3) RGB as a camera and sensor_msgs/Image rgb8 deliver
           it (`rlcontrol export --camera-size HxW`); `camera_shape` repeats (H, W, 3) and
           `preprocessing` is the `rlcontrol.vision.ImagePreprocessing` dict (crop, grayscale,
           out_size = the training size) that the graph applies before the network.
Vector inputs have layout "" and no camera fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT = "rlcontrol-policy/1"
PREFIX = "rlcontrol."
DTYPES = ("float32", "uint8")
IMAGE_LAYOUTS = ("CHW", "HWC")


class MetadataError(ValueError):
    """metadata_props that are missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ObservationInput:
    """One graph input. `shape` excludes the batch dimension; `history` is the number of
    stacked frames inside `shape` (1 = no history); `components` names the parts of a flat
    vector in order, as [name, shape] pairs."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    history: int = 1
    components: tuple[tuple[str, tuple[int, ...]], ...] = ()
    layout: str = ""  # images: "CHW" or "HWC" (see the module docstring); vectors: ""
    camera_shape: tuple[int, ...] = ()  # HWC: (H, W, 3), the camera frame the graph takes
    preprocessing: dict | None = None  # HWC: ImagePreprocessing.to_dict(), applied inside the graph

    @property
    def is_camera(self) -> bool:
        """A camera frame (HWC) that the graph preprocesses, rather than the network's own input."""
        return self.layout == "HWC"

    @property
    def network_shape(self) -> tuple[int, ...]:
        """What the network itself sees: `shape`, or for a camera frame (C, H, W) after the
        in-graph preprocessing (C = 1 if it converts to grayscale)."""
        if not self.is_camera:
            return self.shape
        channels = 1 if self.preprocessing.get("grayscale") else 3
        return (channels, *self.preprocessing["out_size"])


@dataclass(frozen=True)
class PolicyMetadata:
    algorithm: str
    env_id: str
    observations: tuple[ObservationInput, ...]
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    control_period: float
    config_sha256: str
    checkpoint_sha256: str
    version: str
    obs_normalization: str = "in-graph"
    action_output: str = "action"
    graph_sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    # ------------------------------------------------------------------ (de)serialisation

    def to_props(self) -> dict[str, str]:
        obs = [_observation_json(o) for o in self.observations]
        props = {
            "format": FORMAT,
            "version": self.version,
            "algorithm": self.algorithm,
            "env_id": self.env_id,
            "observations": json.dumps(obs),
            "actions": json.dumps({"output": self.action_output, "names": list(self.action_names),
                                   "low": list(self.action_low), "high": list(self.action_high)}),
            "control_period": repr(float(self.control_period)),
            "config_sha256": self.config_sha256,
            "checkpoint_sha256": self.checkpoint_sha256,
            "obs_normalization": self.obs_normalization,
            "graph_sha256": self.graph_sha256,
            **{k: str(v) for k, v in self.extra.items()},
        }
        return {PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> PolicyMetadata:
        """Parse and validate; raises MetadataError naming the offending key."""
        p = {k.removeprefix(PREFIX): v for k, v in props.items() if k.startswith(PREFIX)}
        if "format" not in p:
            raise MetadataError("no rlcontrol metadata (rlcontrol.format is missing)")
        if p["format"] != FORMAT:
            raise MetadataError(f"unsupported policy format {p['format']!r} (this toolkit reads {FORMAT!r})")
        try:
            obs = tuple(_observation(o) for o in _json(p, "observations"))
            actions = _json(p, "actions")
            names = tuple(str(n) for n in actions["names"])
            low = tuple(float(x) for x in actions["low"])
            high = tuple(float(x) for x in actions["high"])
            period = float(_get(p, "control_period"))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MetadataError):
                raise
            raise MetadataError(f"malformed rlcontrol metadata: {type(exc).__name__}: {exc}") from None
        if not obs:
            raise MetadataError("rlcontrol.observations declares no inputs")
        if not (len(names) == len(low) == len(high)) or not names:
            raise MetadataError("rlcontrol.actions: names, low and high must be non-empty and of equal length")
        if any(h < lo for lo, h in zip(low, high)):
            raise MetadataError("rlcontrol.actions: a high bound is below its low bound")
        if not period > 0:
            raise MetadataError(f"rlcontrol.control_period must be positive, got {period}")
        known = {"format", "version", "algorithm", "env_id", "observations", "actions", "control_period",
                 "config_sha256", "checkpoint_sha256", "obs_normalization", "graph_sha256"}
        return cls(algorithm=_get(p, "algorithm"), env_id=_get(p, "env_id"), observations=obs, action_names=names,
                   action_low=low, action_high=high, control_period=period, config_sha256=_get(p, "config_sha256"),
                   checkpoint_sha256=_get(p, "checkpoint_sha256"), version=_get(p, "version"),
                   obs_normalization=p.get("obs_normalization", "in-graph"),
                   action_output=str(actions.get("output", "action")), graph_sha256=p.get("graph_sha256", ""),
                   extra={k: v for k, v in p.items() if k not in known})

    def to_json_dict(self) -> dict:
        d = asdict(self)
        d["observations"] = [asdict(o) for o in self.observations]
        d["action_dim"] = self.action_dim
        return d


def _get(p: dict, key: str) -> str:
    if key not in p:
        raise MetadataError(f"rlcontrol.{key} is missing")
    return p[key]


def _json(p: dict, key: str):
    try:
        return json.loads(_get(p, key))
    except json.JSONDecodeError as exc:
        raise MetadataError(f"rlcontrol.{key} is not valid JSON: {exc}") from None


def is_image(dtype: str, shape: tuple[int, ...]) -> bool:
    """An image input: uint8 with three dimensions (besides the batch)."""
    return dtype == "uint8" and len(shape) == 3


def _observation_json(o: ObservationInput) -> dict:
    entry = {"name": o.name, "shape": list(o.shape), "dtype": o.dtype, "history": o.history,
             "components": [[n, list(s)] for n, s in o.components]}
    if o.layout:
        entry["layout"] = o.layout
    if o.is_camera:
        entry["camera_shape"] = list(o.camera_shape)
        entry["preprocessing"] = o.preprocessing
    return entry


def _observation(o: dict) -> ObservationInput:
    name = str(o["name"])
    shape = tuple(int(d) for d in o["shape"])
    if any(d <= 0 for d in shape):
        raise MetadataError(f"observation {name!r} has a non-positive dimension: {shape}")
    dtype = str(o.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise MetadataError(f"observation {name!r} has unsupported dtype {dtype!r}")
    history = int(o.get("history", 1))
    if history < 1:
        raise MetadataError(f"observation {name!r} has history {history} (must be >= 1)")
    comps = tuple((str(n), tuple(int(d) for d in s)) for n, s in o.get("components", []))
    image = is_image(dtype, shape)
    # Files from before layouts were recorded: their images are the network's (C, H, W) input.
    layout = str(o.get("layout", "CHW" if image else ""))
    if layout and (not image or layout not in IMAGE_LAYOUTS):
        raise MetadataError(f"observation {name!r} ({dtype} {list(shape)}) has layout {layout!r}; only uint8 "
                            f"(3-D) images have a layout, one of {IMAGE_LAYOUTS}")
    camera_shape, preprocessing = (), None
    if layout == "HWC":
        camera_shape = tuple(int(d) for d in o.get("camera_shape", shape))
        preprocessing = o.get("preprocessing")
        if shape[2] != 3 or camera_shape != shape:
            raise MetadataError(f"observation {name!r}: an HWC camera input must be (H, W, 3) with camera_shape "
                                f"equal to its shape, got shape {list(shape)}, camera_shape {list(camera_shape)}")
        size = preprocessing.get("out_size") if isinstance(preprocessing, dict) else None
        if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(d, int) and d > 0 for d in size)
                or not isinstance(preprocessing.get("grayscale", False), bool)):
            raise MetadataError(f"observation {name!r}: an HWC camera input needs its preprocessing with out_size "
                                f"[H, W] and grayscale, got {preprocessing!r}")
    return ObservationInput(name, shape, dtype, history, comps, layout, camera_shape, preprocessing)
