"""Hot-swapped policy weights: what the policy node checks before it runs a new ONNX policy.

Pure Python (numpy, onnx, rlcontrol.deploy.runtime), no rclpy: the node wires the topics to
these functions and does the swap; every check here is unit-testable on its own.

A learner on the robot exports a new policy and asks for it on /policy/update (std_msgs/String,
JSON, see ros_nodes.topics):

    {"path": "/abs/policy_v3.onnx", "sha256": "<hex>", "version": 3,
     "probe": {"inputs": {"observation": [[...], ...]}, "actions": [[...], ...]},   # optional
     "atol": 1e-4}                                                                  # optional

Checks, in order; the first that fails refuses the update with one line saying why
(`UpdateRefused`) and the running policy stays:

    parse_request      JSON object with the fields and types above; version > the running one
    load_checked       rlcontrol.deploy.runtime.load(path, expected_sha256=sha256): missing,
                       truncated or corrupted files and sha mismatches are refused there;
                       compatible_problem: the same observation inputs (names, shapes, dtypes,
                       layout, components, history) and actions (names, bounds) as the policy
                       the node was configured with, since the sensor mapping and the safety
                       layer's limits were built for those; nonfinite_weights: every floating
                       point initializer and constant finite (a diverged learner exports NaN
                       weights with a valid digest); probe_problem: the probe inputs through the
                       NEW session give finite actions within atol of the learner's own

`PolicyHistory` keeps the version bookkeeping: the running policy, one previous one (for
/policy/undo), the counters and the status JSON the node publishes on /policy/status.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_PROBE_BATCH = 64
DEFAULT_ATOL = 1e-4
MAX_REASON_CHARS = 400
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class UpdateRefused(Exception):
    """An update or undo that the node does not apply; str() is the one-line reason."""

    def __init__(self, reason: str):
        super().__init__(one_line(reason))


def one_line(text: str) -> str:
    """A reason fit for one log line and a status field: no newlines, bounded length."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


@dataclass(frozen=True)
class UpdateRequest:
    path: Path
    sha256: str
    version: int
    probe: dict | None  # {"inputs": {name: nested list}, "actions": nested list}, checked by probe_problem
    atol: float = DEFAULT_ATOL


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_request(text: str, current_version: int) -> UpdateRequest:
    """The /policy/update message's data -> UpdateRequest, or UpdateRefused naming the problem."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UpdateRefused(f"update is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UpdateRefused(f"update must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("path", "sha256", "version") if k not in data]
    if missing:
        raise UpdateRefused(f"update lacks field(s) {missing}")
    path, sha, version = data["path"], data["sha256"], data["version"]
    if not isinstance(path, str) or not path:
        raise UpdateRefused(f"update path must be a non-empty string, got {path!r}")
    if not Path(path).is_absolute() or Path(path).suffix != ".onnx":
        raise UpdateRefused(f"update path must be an absolute path to a .onnx file, got {path!r}")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise UpdateRefused(f"update sha256 must be 64 hex digits, got {str(sha)[:80]!r}")
    if not _is_int(version):
        raise UpdateRefused(f"update version must be an integer, got {version!r}")
    if version <= current_version:
        raise UpdateRefused(
            f"stale update: version {version} is not newer than the running version {current_version}"
        )
    return UpdateRequest(Path(path), sha.lower(), version, _probe(data), _atol(data))


def _atol(data: dict) -> float:
    atol = data.get("atol", DEFAULT_ATOL)
    if atol is None:
        return DEFAULT_ATOL
    if not _is_number(atol) or not math.isfinite(atol) or atol < 0:
        raise UpdateRefused(f"update atol must be a finite number >= 0, got {atol!r}")
    return float(atol)


def _probe(data: dict) -> dict | None:
    probe = data.get("probe")
    if probe is not None and (
        not isinstance(probe, dict) or not isinstance(probe.get("inputs"), dict) or "actions" not in probe
    ):
        raise UpdateRefused('update probe must be an object {"inputs": {name: list}, "actions": list}')
    return probe


# ---------------------------------------------------------------------- the new file


def compatible_problem(running, new) -> str | None:
    """Why policy metadata `new` cannot replace `running` in a node built for `running`, or None.

    The node's observation buffers, sensor mapping and safety limits were made from `running`:
    the inputs must be the same (names, shapes, dtypes, layout, components, history, camera
    shape) and so must the actions (names, hence order and count, and bounds).
    """
    old_inputs = {o.name: o for o in running.observations}
    new_inputs = {o.name: o for o in new.observations}
    if set(old_inputs) != set(new_inputs):
        return f"incompatible inputs: the new policy takes {sorted(new_inputs)}, the running one {sorted(old_inputs)}"
    for name, old in old_inputs.items():
        other = new_inputs[name]
        for field in ("shape", "dtype", "layout", "components", "history", "camera_shape"):
            a, b = getattr(other, field), getattr(old, field)
            if a != b:
                return f"incompatible input {name!r}: {field} {_show(a)} in the new policy, {_show(b)} in the running one"
    if new.action_dim != running.action_dim:
        return (
            f"incompatible actions: the new policy has {new.action_dim}, the running one {running.action_dim}"
        )
    if tuple(new.action_names) != tuple(running.action_names):
        return f"incompatible actions: names {list(new.action_names)} vs the running {list(running.action_names)}"
    if tuple(new.action_low) != tuple(running.action_low) or tuple(new.action_high) != tuple(
        running.action_high
    ):
        return (
            f"incompatible action bounds: [{list(new.action_low)}, {list(new.action_high)}] vs the running "
            f"[{list(running.action_low)}, {list(running.action_high)}]"
        )
    return None


def _show(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


_FLOAT_TYPES = None


def _float_types() -> set[int]:
    global _FLOAT_TYPES
    if _FLOAT_TYPES is None:
        from onnx import TensorProto

        _FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    return _FLOAT_TYPES


def nonfinite_weights(model, base_dir: str | Path | None = None) -> list[str]:
    """Names of floating-point tensors in the graph with a NaN or inf: initializers, Constant
    node values and tensor attributes, in subgraphs (If/Loop/Scan bodies) too."""
    from onnx import AttributeProto, numpy_helper

    bad: list[str] = []

    def check(tensor, label: str) -> None:
        if tensor.data_type not in _float_types():
            return
        values = numpy_helper.to_array(tensor, base_dir=str(base_dir) if base_dir else "")
        if not np.isfinite(values.astype(np.float64, copy=False)).all():
            bad.append(label or "<unnamed>")

    def walk(graph) -> None:
        for tensor in graph.initializer:
            check(tensor, tensor.name)
        for sparse in graph.sparse_initializer:
            check(sparse.values, sparse.values.name)
        for node in graph.node:
            for attr in node.attribute:
                label = f"{node.name or node.op_type}.{attr.name}"
                for tensor in (attr.t,) if attr.type == AttributeProto.TENSOR else attr.tensors:
                    check(tensor, tensor.name or label)
                for subgraph in (attr.g,) if attr.type == AttributeProto.GRAPH else attr.graphs:
                    walk(subgraph)

    walk(model.graph)
    return bad


def _probe_array(name: str, value, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A nested JSON list -> array of the input's dtype with a leading batch dimension."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise UpdateRefused(f"probe input {name!r} is not a rectangular array: {exc}") from None
    if array.dtype.kind not in "iuf" or (dtype == "uint8" and array.dtype.kind == "f"):
        raise UpdateRefused(f"probe input {name!r} holds {array.dtype} values; the policy takes {dtype}")
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape):
        raise UpdateRefused(
            f"probe input {name!r} has shape {list(array.shape)}, expected [N, *{list(shape)}]"
        )
    if dtype == "uint8" and array.size and (array.min() < 0 or array.max() > 255):
        raise UpdateRefused(f"probe input {name!r} has values outside uint8's 0..255")
    return array.astype(dtype)


def probe_problem(policy, probe: dict, atol: float) -> str | None:
    """Run the probe inputs through `policy` (the NEW one): why its actions are not the
    learner's `probe["actions"]` within atol, or None when they are."""
    from rlcontrol.deploy.runtime import ObservationError

    meta = policy.metadata
    specs = {o.name: o for o in meta.observations}
    inputs = probe["inputs"]
    if set(inputs) != set(specs):
        return f"probe inputs {sorted(inputs)} do not match the policy's inputs {sorted(specs)}"
    try:
        feeds = {
            name: _probe_array(name, inputs[name], spec.dtype, spec.shape) for name, spec in specs.items()
        }
    except UpdateRefused as exc:
        return str(exc)
    sizes = {a.shape[0] for a in feeds.values()}
    if len(sizes) != 1 or not 1 <= min(sizes) <= MAX_PROBE_BATCH:
        return f"probe batch sizes {sorted(sizes)}: all inputs need the same N, 1 <= N <= {MAX_PROBE_BATCH}"
    n = sizes.pop()
    try:
        expected = np.asarray(probe["actions"], dtype=np.float64)
    except (ValueError, TypeError) as exc:
        return f"probe actions are not a numeric [N, action_dim] array: {exc}"
    if expected.shape != (n, meta.action_dim):
        return f"probe actions have shape {list(expected.shape)}, expected [{n}, {meta.action_dim}]"
    if not np.isfinite(expected).all():
        return "probe actions contain NaN or inf"
    try:
        actions = np.asarray(policy.act_batch(feeds), dtype=np.float64)
    except ObservationError as exc:
        return f"probe inputs refused by the new policy: {exc}"
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: the file is what is wrong
        return f"the new policy fails on the probe: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if actions.shape != expected.shape:
        return f"the new policy gives actions of shape {list(actions.shape)} on the probe, expected {list(expected.shape)}"
    if not np.isfinite(actions).all():
        return "the new policy gives non-finite actions on the probe"
    error = np.abs(actions - expected)
    worst = int(np.argmax(error.max(axis=1)))
    if error.max() > atol:
        return (
            f"probe mismatch: max |new policy - probe.actions| = {error.max():.3g} > atol {atol:g} "
            f"(sample {worst}: {actions[worst].tolist()} vs {expected[worst].tolist()})"
        )
    return None


def load_checked(request: UpdateRequest, running_metadata, *, load=None):
    """Load the requested file and check it against the running policy's metadata; the new
    OnnxPolicy, or UpdateRefused with the first problem."""
    from rlcontrol.deploy import runtime

    load = load or runtime.load
    try:
        policy = load(request.path, expected_sha256=request.sha256)
    except runtime.PolicyFileError as exc:
        reason = str(exc) if str(request.path) in str(exc) else f"{request.path}: {exc}"
        raise UpdateRefused(f"cannot load: {reason}") from None
    problem = compatible_problem(running_metadata, policy.metadata)
    if problem:
        raise UpdateRefused(f"{request.path}: {problem}")
    bad = _weights_problem(request)
    if bad:
        raise UpdateRefused(f"{request.path}: {bad}")
    if request.probe is not None:
        problem = probe_problem(policy, request.probe, request.atol)
        if problem:
            raise UpdateRefused(f"{request.path}: {problem}")
    return policy


def _weights_problem(request: UpdateRequest) -> str | None:
    """Non-finite weights in the file. It is read again here (runtime.load keeps no model), and
    its digest checked again: both reads matched the requested sha256, so they are one file."""
    import onnx

    try:
        data = request.path.read_bytes()
    except OSError as exc:
        return f"cannot read it again to check its weights: {exc.strerror}"
    if hashlib.sha256(data).hexdigest() != request.sha256:
        return "the file changed while it was being checked (sha256 no longer matches)"
    try:
        model = onnx.load_from_string(data)
        bad = nonfinite_weights(model, request.path.resolve().parent)
    except Exception as exc:  # noqa: BLE001 - runtime.load parsed it; anything here is a broken file
        return f"cannot check its weights: {type(exc).__name__}: {exc}"
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return f"non-finite (NaN/inf) weights in {bad[:5]}{more}"
    return None


# ---------------------------------------------------------------------- bookkeeping


@dataclass
class Loaded:
    policy: Any  # an OnnxPolicy (anything with .sha256 and .path)
    version: int


class PolicyHistory:
    """The running policy, one previous one, and the counters of /policy/status.

    Not thread-safe: the node calls it under its own lock. version 0 is the policy the node
    was configured with (model_path).
    """

    def __init__(self, policy):
        self.current = Loaded(policy, 0)
        self.previous: Loaded | None = None
        self.accepted = 0
        self.refused = 0
        self.undone = 0
        self.last_refusal = ""
        self._just_undone = False  # the last change was an undo: a second one has nothing to go back to

    @property
    def version(self) -> int:
        return self.current.version

    def accept(self, policy, version: int):
        """The new policy runs, the running one becomes the previous; returns the one dropped (or None)."""
        if version <= self.current.version:  # re-checked here: an undo may have run meanwhile
            raise UpdateRefused(
                f"stale update: version {version} is not newer than the running version "
                f"{self.current.version}"
            )
        dropped = self.previous
        self.previous, self.current = self.current, Loaded(policy, version)
        self.accepted += 1
        self._just_undone = False
        return dropped.policy if dropped else None

    def undo(self):
        """Back to the previous policy (one level); returns the policy undone."""
        if self.previous is None:
            if self._just_undone:
                raise UpdateRefused(
                    f"nothing to undo: already undone to version {self.current.version}; "
                    "one level of undo is kept"
                )
            raise UpdateRefused(
                f"nothing to undo: version {self.current.version} is the configured model, "
                "no previous policy is kept"
            )
        undone, self.current, self.previous = self.current, self.previous, None
        self.undone += 1
        self._just_undone = True
        return undone.policy

    def refuse(self, reason: str) -> None:
        self.refused += 1
        self.last_refusal = one_line(reason)

    def status(self) -> dict:
        policy = self.current.policy
        return {
            "version": self.current.version,
            "sha256": policy.sha256,
            "path": str(policy.path),
            "previous_version": self.previous.version if self.previous else None,
            "accepted": self.accepted,
            "refused": self.refused,
            "undone": self.undone,
            "last_refusal": self.last_refusal,
        }
