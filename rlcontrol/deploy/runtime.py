"""Run an exported policy with onnxruntime: what the robot (and the ROS 2 policy node) uses.

    from rlcontrol.deploy import runtime
    policy = runtime.load("policy.onnx", expected_sha256="...")   # validates, warms up
    action = policy.act(obs)        # physical units, shape (action_dim,), no allocation

Torch-free on purpose: a robot needs numpy, onnx and onnxruntime, nothing from training.

Loading checks, in order, and refuses with `PolicyFileError` (one clear line):
missing or empty file; sha256 mismatch (checked on the bytes that are then parsed, so the
file cannot change in between); not ONNX (truncated or garbage); no rlcontrol metadata;
graph bytes that do not match the recorded graph digest (corruption inside the weights);
ONNX external-data paths that are absolute or leave the model's folder; graph inputs and
outputs that disagree with the metadata. No pickle anywhere.

Image inputs come in the layout the metadata records (`ObservationInput.layout`): "CHW", the
network's uint8 (C, H, W) at the training size, or "HWC", a camera frame uint8 (H, W, 3) RGB
that the graph itself crops and resizes (`rlcontrol export --camera-size`); `camera_inputs`
names the latter with their frame size and preprocessing. A frame of another size is refused
like any wrong shape: the graph's resize is built for one camera size.

Precision: `load(..., precision="fp16")` runs the graph in half precision through onnxruntime's
TensorRT execution provider (`trt_fp16_enable`), and only there: without TensorRT it is refused
in one line rather than silently run in fp32. Half precision changes the actions, so
`fp16_parity` measures by how much, against the fp32 CPU session on the same observations; the
policy node refuses an fp16 policy whose error exceeds its tolerance (checked, not assumed).

`act(obs)` refuses a wrong shape, a wrong dtype or a missing input with `ObservationError`,
and a NaN/inf observation with `NonFiniteObservation` (a subclass): the caller decides what
the safe command is (the ROS node sends its safe command). A non-finite *action* (a broken
policy) raises `NonFiniteAction`. Nothing is returned silently wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rlcontrol.deploy.metadata import MetadataError, PolicyMetadata
from rlcontrol.errors import UserError

# Most capable first. TensorRT and CUDA only appear with onnxruntime-gpu on a GPU machine.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PRECISIONS = ("fp32", "fp16")
_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


class PolicyFileError(UserError):
    """The file cannot be used as a policy (missing, corrupted, not ours, mismatched)."""


class ObservationError(ValueError):
    """An observation that does not match the policy's declared inputs."""


class NonFiniteObservation(ObservationError):
    """An observation containing NaN or inf. The caller must fall back to its safe command."""


class NonFiniteAction(ValueError):
    """The policy produced NaN or inf (a broken model). The caller must use its safe command."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_digest(model) -> str:
    """sha256 of the graph's computation: nodes, inputs, outputs and every weight's values.

    Canonical rather than a hash of the file's bytes, so it survives moving weights to
    ONNX external data (and needs them loaded) and excludes the metadata that stores it.
    """
    from onnx import numpy_helper

    h = hashlib.sha256()
    graph = model.graph
    for tensor in sorted(graph.initializer, key=lambda t: t.name):
        values = numpy_helper.to_array(tensor)
        h.update(f"{tensor.name}|{values.dtype.str}|{values.shape}|".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    for item in (*graph.node, *graph.input, *graph.output):
        h.update(item.SerializeToString(deterministic=True))
    return h.hexdigest()


def load(path: str | Path, expected_sha256: str | None = None, *, providers: Sequence[str] | None = None,
         threads: int = 1, warmup: int = 50, precision: str = "fp32") -> OnnxPolicy:
    """Validate and open a policy file. `threads=1` suits single-observation control (a
    thread pool costs more to wake than a 2x256 MLP takes to run) and leaves cores free.
    `precision="fp16"`: TensorRT in half precision (see the module docstring)."""
    path = Path(path)
    data = _read(path)
    if expected_sha256 is not None:
        expected = expected_sha256.strip().lower()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise PolicyFileError(f"{path}: sha256 mismatch (expected {expected}, file has {actual})")
    model = _parse(path, data)
    if _check_external_data(path, model):
        # Weights stored next to the model (paths already confined to its folder): read them
        # in so the graph digest below covers them too.
        import onnx

        onnx.load_external_data_for_model(model, str(path.resolve().parent))
    try:
        meta = PolicyMetadata.from_props({p.key: p.value for p in model.metadata_props})
    except MetadataError as exc:
        raise PolicyFileError(f"{path}: not an rlcontrol policy: {exc}") from None
    if meta.graph_sha256 and graph_digest(model) != meta.graph_sha256:
        raise PolicyFileError(f"{path}: the graph does not match its recorded digest (corrupted file)")
    session = _session(model.SerializeToString(), providers, threads, precision)
    return OnnxPolicy(session, meta, path=path, sha256=hashlib.sha256(data).hexdigest(), warmup=warmup)


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyFileError(f"policy file not found: {path}") from None
    except IsADirectoryError:
        raise PolicyFileError(f"{path} is a folder, not a policy file") from None
    except OSError as exc:
        raise PolicyFileError(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise PolicyFileError(f"{path} is empty")
    return data


def _parse(path: Path, data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise PolicyFileError(f"{path} is not a valid ONNX file (truncated or corrupted?): {exc}") from None
    if not model.graph.node or not model.graph.output:
        raise PolicyFileError(f"{path} is not a valid ONNX model (no graph): truncated or not ONNX")
    return model


def _check_external_data(path: Path, model) -> bool:
    """Refuse external tensors that live outside the model's folder; True if any exist."""
    import onnx

    folder = path.resolve().parent
    found = False
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise PolicyFileError(f"{path}: tensor {tensor.name!r} points at external data outside the model's "
                                  f"folder ({location!r}); refused")
        if not target.is_file():
            raise PolicyFileError(f"{path}: external data file {location!r} for tensor {tensor.name!r} is missing")
    return found


def _session(source, providers: Sequence[str] | None, threads: int, precision: str = "fp32"):
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen: list = [p for p in (providers or PREFERRED_PROVIDERS) if p in available] or ["CPUExecutionProvider"]
    if precision not in PRECISIONS:
        raise PolicyFileError(f"precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    if precision == "fp16":
        if "TensorrtExecutionProvider" not in chosen:
            raise PolicyFileError("fp16 inference needs onnxruntime's TensorRT execution provider (onnxruntime-gpu "
                                  f"with TensorRT on an NVIDIA GPU); this onnxruntime offers {', '.join(available)}")
        chosen = [("TensorrtExecutionProvider", {"trt_fp16_enable": True}) if p == "TensorrtExecutionProvider" else p
                  for p in chosen]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would be printed on every robot start
    try:
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options, providers=chosen)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PolicyFileError(f"onnxruntime cannot load the policy: {str(exc).splitlines()[0][:300]}") from None


def random_inputs(meta: PolicyMetadata, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` observations for the policy's inputs: images uniform uint8, vectors standard normal."""
    rng = np.random.default_rng(seed)
    return [{o.name: rng.integers(0, 256, o.shape, dtype=np.uint8) if o.dtype == "uint8"
             else rng.standard_normal(o.shape).astype(o.dtype) for o in meta.observations} for _ in range(n)]


def fp16_parity(path: str | Path, samples: int = 256, seed: int = 0, *, tolerance: float = 0.01) -> dict:
    """How far the fp16 TensorRT policy's actions are from the fp32 CPU policy's, on `samples`
    random observations (images uniform uint8, vectors standard normal): the largest absolute
    difference per action as a share of that action's range, and whether it is within `tolerance`.
    PolicyFileError where there is no TensorRT (see `load`)."""
    half = load(path, precision="fp16", warmup=1)
    full = load(path, providers=["CPUExecutionProvider"], warmup=1)
    meta = full.metadata
    span = np.maximum(np.asarray(meta.action_high, np.float64) - np.asarray(meta.action_low, np.float64), 1e-12)
    worst = np.zeros(meta.action_dim)
    for obs in random_inputs(meta, samples, seed):
        worst = np.maximum(worst, np.abs(half.act(obs).astype(np.float64) - full.act(obs)) / span)
    return {"provider": half.provider, "samples": samples, "max_error_share": float(worst.max()),
            "per_action": worst.round(6).tolist(), "tolerance": tolerance, "ok": bool(worst.max() <= tolerance)}


def load_for_control(path: str | Path, expected_sha256: str | None = None, precision: str = "fp32",
                     fp16_tolerance: float = 0.01) -> tuple[OnnxPolicy, dict | None]:
    """`load` for a control loop (the ROS 2 policy node): an fp16 policy only after `fp16_parity`
    found its actions within `fp16_tolerance` of fp32 (a share of each action's range), else one
    PolicyFileError line with the figures. -> (policy, the parity measurement or None for fp32)."""
    parity = None
    if precision == "fp16":
        parity = fp16_parity(path, tolerance=fp16_tolerance)
        parity["summary"] = (f"actions within {100 * parity['max_error_share']:.3f}% of the action range of fp32 "
                             f"on {parity['samples']} observations (tolerance {100 * fp16_tolerance:.2f}%)")
        if not parity["ok"]:
            raise PolicyFileError(f"fp16 parity failed: {parity['summary'].replace('within', 'off by up to')}; run "
                                  "fp32 or raise the tolerance")
    return load(path, expected_sha256, precision=precision), parity


class OnnxPolicy:
    """A loaded, validated and warmed-up policy.

    `act(obs)` copies the observation into preallocated input buffers bound to the session
    (IO binding), runs, and returns a view of a preallocated output buffer: no array is
    allocated per call. The returned array is overwritten by the next call; copy it to keep it.
    """

    def __init__(self, session, metadata: PolicyMetadata, *, path: Path, sha256: str, warmup: int = 50):
        import onnxruntime as ort

        self.session = session
        self.metadata = metadata
        self.path = path
        self.sha256 = sha256
        self.provider = session.get_providers()[0]
        self._check_signature()
        self.input_names = tuple(o.name for o in metadata.observations)
        self._specs = {o.name: o for o in metadata.observations}
        self._inputs = {o.name: np.zeros((1, *o.shape), dtype=o.dtype) for o in metadata.observations}
        # Views without the batch dimension, and boolean scratch for the finiteness test.
        self._input_rows = {n: b[0] for n, b in self._inputs.items()}
        self._finite = {n: np.empty(b.shape[1:], dtype=bool) for n, b in self._inputs.items()
                        if b.dtype.kind == "f"}
        self._output = np.zeros((1, metadata.action_dim), dtype=np.float32)
        self._action = self._output[0]
        self._action_finite = np.empty(metadata.action_dim, dtype=bool)
        self._binding = session.io_binding()
        for name, buf in self._inputs.items():
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(buf))
        self._binding.bind_ortvalue_output(metadata.action_output, ort.OrtValue.ortvalue_from_numpy(self._output))
        self._single = self.input_names[0] if len(self.input_names) == 1 else None
        self.camera_inputs = {o.name: o for o in metadata.observations if o.is_camera}
        # The C++ entry point directly: the Python wrapper adds ~2 us of WebGPU-capture checks
        # per call that a CPU/CUDA session never needs.
        self._run_options = ort.RunOptions()
        if hasattr(session, "_sess") and hasattr(self._binding, "_iobinding"):
            self._run, self._raw_binding = session._sess.run_with_iobinding, self._binding._iobinding
        else:  # a future onnxruntime without these internals: the public path
            self._run, self._raw_binding = session.run_with_iobinding, self._binding
        for _ in range(warmup):
            self._run(self._raw_binding, self._run_options)

    def _check_signature(self) -> None:
        meta = self.metadata
        inputs = {i.name: i for i in self.session.get_inputs()}
        declared = {o.name: o for o in meta.observations}
        if set(inputs) != set(declared):
            raise PolicyFileError(f"{self.path}: graph inputs {sorted(inputs)} do not match the metadata's "
                                  f"observations {sorted(declared)}")
        for name, obs in declared.items():
            graph = inputs[name]
            if graph.type != _ORT_TYPES[obs.dtype]:
                raise PolicyFileError(f"{self.path}: input {name!r} is {graph.type} but the metadata says {obs.dtype}")
            if [d for d in graph.shape[1:]] != list(obs.shape):
                raise PolicyFileError(f"{self.path}: input {name!r} has shape {graph.shape[1:]} (after the batch "
                                      f"dimension) but the metadata says {list(obs.shape)}")
        outputs = {o.name: o for o in self.session.get_outputs()}
        out = outputs.get(meta.action_output)
        if out is None or out.shape[1:] != [meta.action_dim] or out.type != "tensor(float)":
            raise PolicyFileError(f"{self.path}: no float output {meta.action_output!r} with {meta.action_dim} actions")

    # ------------------------------------------------------------------ acting

    def act(self, obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (an array for a single-input policy, else a mapping name -> array,
        without the batch dimension; a leading 1 is accepted) -> physical action (action_dim,)."""
        if self._single is not None and type(obs) is np.ndarray:  # the hot path: one flat input
            self._load_input(self._single, obs)
        elif isinstance(obs, Mapping):
            missing = [n for n in self.input_names if n not in obs]
            if missing:
                raise ObservationError(f"observation is missing input(s) {missing}; the policy needs {list(self.input_names)}")
            for name in self.input_names:
                self._load_input(name, obs[name])
        elif self._single is not None:
            self._load_input(self._single, obs)
        else:
            raise ObservationError(f"this policy has several inputs {list(self.input_names)}: pass a dict")
        self._run(self._raw_binding, self._run_options)
        np.isfinite(self._action, out=self._action_finite)
        if not self._action_finite.all():
            raise NonFiniteAction(f"the policy produced a non-finite action {self._action.tolist()}")
        return self._action

    def _load_input(self, name: str, value) -> None:
        row = self._input_rows[name]
        if type(value) is not np.ndarray:
            try:
                value = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise ObservationError(f"observation {name!r} is not an array: {exc}") from None
        if value.shape != row.shape:
            if value.shape != (1, *row.shape):
                raise ObservationError(f"observation {name!r} has shape {value.shape}, the policy expects "
                                       f"{row.shape}{_layout_hint(self._specs[name])}")
            value = value[0]
        if value.dtype != row.dtype and not _dtype_ok(value.dtype, row.dtype):
            raise ObservationError(f"observation {name!r} has dtype {value.dtype}, the policy expects {row.dtype}")
        np.copyto(row, value, casting="same_kind")
        finite = self._finite.get(name)
        if finite is not None:
            np.isfinite(row, out=finite)
            if not finite.all():
                raise NonFiniteObservation(f"observation {name!r} has non-finite values at indices "
                                           f"{np.flatnonzero(~finite).tolist()[:10]}")

    def act_batch(self, obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """A batch of observations (leading batch dimension) -> (B, action_dim) new array. For
        evaluation and parity checks; the control loop uses `act`."""
        feeds = dict(obs) if isinstance(obs, Mapping) else {self.input_names[0]: obs}
        if set(feeds) != set(self.input_names):
            raise ObservationError(f"inputs {sorted(feeds)} do not match the policy's {sorted(self.input_names)}")
        for name, value in feeds.items():
            spec = self._specs[name]
            value = np.asarray(value)
            if value.ndim != len(spec.shape) + 1 or tuple(value.shape[1:]) != spec.shape:
                raise ObservationError(f"observation batch {name!r} has shape {value.shape}, expected "
                                       f"(B, *{spec.shape}){_layout_hint(spec)}")
            if not _dtype_ok(value.dtype, np.dtype(spec.dtype)):
                raise ObservationError(f"observation batch {name!r} has dtype {value.dtype}, expected {spec.dtype}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NonFiniteObservation(f"observation batch {name!r} has non-finite values")
            feeds[name] = np.ascontiguousarray(value, dtype=spec.dtype)
        return self.session.run([self.metadata.action_output], feeds)[0]

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "provider": self.provider,
                **self.metadata.to_json_dict()}


def _layout_hint(spec) -> str:
    if spec.is_camera:
        height, width, _ = spec.shape
        return (f" (a {width}x{height} camera frame, uint8 height x width x RGB; the graph crops and resizes it to "
                f"{spec.network_shape})")
    if spec.layout == "CHW":
        return " (channels, height, width)"
    return ""


def _dtype_ok(given: np.dtype, wanted: np.dtype) -> bool:
    """Floating inputs accept any float width (cast to float32; ROS messages carry float64);
    uint8 inputs (pixels) accept only uint8."""
    if wanted.kind == "f":
        return given.kind == "f"
    return given == wanted
