"""`rlcontrol export RUN_DIR --out policy.onnx`: the trained policy as one self-describing ONNX file.

The graph is the whole deployed computation, so the robot needs nothing else:

    named observation inputs (B, ...)  --concat in spec order-->  running-statistics
    normalization (frozen)  -->  actor  -->  a in [-1, 1]^A  -->  physical action
    low * (1 - t) + high * t,  t = (a + 1) / 2          (the same map as envs.core.scale_action)

The batch dimension is dynamic. Metadata (rlcontrol.deploy.metadata) records the
observation contract, action names and bounds, control period, algorithm, task, config
digest, the checkpoint's sha256 and a digest of the graph itself. After writing, the
export is proven against the PyTorch policy on random and recorded observations (parity).

Each agent kind exports through `agent.policy()`: a module from the flat raw observation
to the normalized action. Agents added later (D4PG, QT-Opt, encoder chains) provide the
same method and are exported by this same code; QT-Opt's is normalizer + Q network + a fixed
number of CEM iterations over a fixed noise buffer (no random ops in the graph).

Image observations (uint8 (C, H, W)) are uint8 graph inputs at the training size, cast to
float inside the graph. With a camera (`--camera-size HxW`, `CameraInput`), each becomes the
camera's frame instead, uint8 (N, H_cam, W_cam, 3) RGB in the camera's own HWC layout (what
sensor_msgs/Image rgb8 carries), and the graph does the rest:

    frame (N, H_cam, W_cam, 3) --crop (--crop-top/bottom/left/right, fractions)--> grayscale if
    the policy's image has one channel --> cv2.INTER_AREA resize to the training (H, W)
    (rlcontrol.vision.TorchPreprocess, bit-exact with OpenCV for shrinking) --> (N, C, H, W)
    --> the policy above.

The metadata records, per image input, its layout ("CHW" or "HWC"), the camera frame's shape
and the `ImagePreprocessing` settings; the parity check then feeds onnxruntime random and
rendered camera frames and the PyTorch policy `ImagePreprocessing(frame)` from OpenCV, the
numpy path of training and deployment, so a graph that read the channels or the layout
wrongly fails it.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcontrol import __version__
from rlcontrol.deploy.metadata import ObservationInput, PolicyMetadata, is_image
from rlcontrol.deploy.runtime import graph_digest, sha256_file
from rlcontrol.errors import UserError

OPSET = 17
FLAT_INPUT = "observation"
PARITY_TOLERANCE = 1e-5  # per unit of action half-range above 1 (see parity_units)
# Argmax policies (QT-Opt's CEM): a decision between candidates whose scores differ by float
# rounding can go the other way in ONNX Runtime. Such observations (relative score gap below
# TIE_MARGIN at some CEM decision) are reported as near-tie flips instead of failures, unless
# there are more than MAX_TIE_FLIP_FRACTION of them (a wrong graph differs almost everywhere).
TIE_MARGIN = 1e-4
MAX_TIE_FLIP_FRACTION = 0.01
# Camera frames are checked this many at a time: 1000 frames of 480x640 would hold ~0.9 GB.
CAMERA_CHUNK = 50
CROP_EDGES = ("top", "bottom", "left", "right")


class DeployedPolicy(nn.Module):
    """Named observation tensors -> physical action: what the ONNX graph computes.

    Kept to the fewest graph nodes, since onnxruntime's per-node cost is a large part of a
    single-observation call: no reshape for inputs that are already (B, D), no cast for
    float32 inputs, and the bound map as one multiply-add, a = mid + half_range * a_norm,
    followed by a clamp to [low, high] so that rounding can never leave the bounds.
    """

    def __init__(self, policy: nn.Module, input_shapes: Mapping[str, tuple[int, ...]], low: np.ndarray,
                 high: np.ndarray):
        super().__init__()
        self.policy = policy
        self.input_names = list(input_shapes)
        self._flat = [len(shape) == 1 for shape in input_shapes.values()]
        low64, high64 = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.register_buffer("low", torch.tensor(low64, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high64, dtype=torch.float32))
        self.register_buffer("half_range", torch.tensor((high64 - low64) / 2, dtype=torch.float32))
        self.register_buffer("mid", torch.tensor((high64 + low64) / 2, dtype=torch.float32))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = [x if flat else x.flatten(1) for x, flat in zip(inputs, self._flat)]
        parts = [x if x.dtype == torch.float32 else x.float() for x in parts]
        obs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        action = self.policy(obs) * self.half_range + self.mid
        return torch.minimum(torch.maximum(action, self.low), self.high)


@dataclass(frozen=True)
class CameraInput:
    """Export image inputs as camera frames of `size` (height, width), cropped by the given
    fractions of the frame at each edge, then resized to the training size inside the graph."""

    size: tuple[int, int]
    crop_top: float = 0.0
    crop_bottom: float = 0.0
    crop_left: float = 0.0
    crop_right: float = 0.0

    @property
    def crop(self) -> dict[str, float]:
        return {edge: getattr(self, f"crop_{edge}") for edge in CROP_EDGES}

    def preprocessing(self, name: str, image_shape: tuple[int, ...]):
        """The ImagePreprocessing that makes this camera's frame into the policy's (C, H, W)
        image `name`; raises UserError for crops that leave nothing or a frame too small."""
        from rlcontrol.vision.preprocess import ImagePreprocessing

        channels, height, width = image_shape
        if channels not in (1, 3):
            raise UserError(f"image input {name!r} has {channels} channels; a camera input needs 1 (grayscale) or 3 (RGB)")
        try:
            prep = ImagePreprocessing(**{f"crop_{e}": v for e, v in self.crop.items()}, out_size=(height, width),
                                      grayscale=channels == 1)
            y0, y1, x0, x1 = prep.crop_box(self.size)
        except ValueError as exc:
            raise UserError(f"--camera-size {self.size[0]}x{self.size[1]} with the crops: {exc}") from None
        if y1 - y0 < height or x1 - x0 < width:
            raise UserError(f"--camera-size {self.size[0]}x{self.size[1]}: the cropped frame is {y1 - y0}x{x1 - x0}, "
                            f"smaller than the policy's {height}x{width} image {name!r}; the graph only shrinks "
                            "(enlarging cannot match OpenCV exactly): use a larger camera or smaller crops")
        return prep


def parse_camera_size(text: str) -> tuple[int, int]:
    """"480x640" -> (480, 640): height x width in pixels; ValueError with the reason otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected HEIGHTxWIDTH in pixels such as 480x640, got {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise ValueError(f"expected a positive height and width, got {text!r}")
    return height, width


class CameraPolicy(nn.Module):
    """DeployedPolicy behind camera preprocessing: named inputs, of which those in `preprocess`
    are uint8 (N, H_cam, W_cam, 3) frames made into the policy's (N, C, H, W) images."""

    def __init__(self, policy: DeployedPolicy, preprocess: Mapping[str, nn.Module]):
        super().__init__()
        self.policy = policy
        self.preprocess = nn.ModuleDict(dict(preprocess))
        self.input_names = policy.input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.policy(*(self.preprocess[name](x) if name in self.preprocess else x
                             for name, x in zip(self.input_names, inputs)))


def camera_preprocessing(meta: PolicyMetadata) -> dict:
    """name -> ImagePreprocessing of each camera (HWC) input recorded in the metadata."""
    from rlcontrol.vision.preprocess import ImagePreprocessing

    return {o.name: ImagePreprocessing.from_dict(o.preprocessing) for o in meta.observations if o.is_camera}


def input_shapes(obs_spec) -> dict[str, tuple[int, ...]]:
    """Graph input names and shapes (without batch): the dict keys, or one flat input."""
    if isinstance(obs_spec, Mapping):
        return {name: tuple(spec.shape) for name, spec in obs_spec.items()}
    return {FLAT_INPUT: tuple(obs_spec.shape)}


def input_dtypes(obs_spec) -> dict[str, str]:
    """Graph input name -> "uint8" for images (fed as the camera delivers them), else "float32"."""
    specs = obs_spec if isinstance(obs_spec, Mapping) else {FLAT_INPUT: obs_spec}
    return {name: "uint8" if np.dtype(getattr(spec, "dtype", np.float32)) == np.uint8 else "float32"
            for name, spec in specs.items()}


def build_metadata(config, env_spec, checkpoint_sha256: str, extra: dict | None = None,
                   camera: CameraInput | None = None) -> PolicyMetadata:
    shapes, dtypes = input_shapes(env_spec.observation), input_dtypes(env_spec.observation)
    flat = not isinstance(env_spec.observation, Mapping)
    observations = []
    for name, shape in shapes.items():
        obs = ObservationInput(name, shape, dtypes[name], history=1, components=env_spec.obs_layout if flat else (),
                               layout="CHW" if is_image(dtypes[name], shape) else "")
        if camera is not None and obs.layout:
            frame = (*camera.size, 3)
            obs = ObservationInput(name, frame, "uint8", history=1, layout="HWC", camera_shape=frame,
                                   preprocessing=camera.preprocessing(name, shape).to_dict())
        observations.append(obs)
    if camera is not None and not any(o.is_camera for o in observations):
        raise UserError("--camera-size: this policy has no image input (uint8 (C, H, W)) to take camera frames")
    return PolicyMetadata(
        algorithm=config.algo, env_id=config.env.id, observations=tuple(observations),
        action_names=tuple(env_spec.action_names), action_low=tuple(float(x) for x in env_spec.action_low),
        action_high=tuple(float(x) for x in env_spec.action_high), control_period=float(env_spec.control_period),
        config_sha256=config.digest(), checkpoint_sha256=checkpoint_sha256, version=__version__,
        obs_normalization="in-graph" if config.agent.obs_norm else "none", extra=dict(extra or {}))


def deployed_module(agent, env_spec, meta: PolicyMetadata) -> nn.Module:
    """The module the graph is traced from: DeployedPolicy, behind the camera preprocessing
    that `meta` records for camera inputs."""
    shapes = input_shapes(env_spec.observation)
    module = DeployedPolicy(agent.policy(), shapes, env_spec.action_low, env_spec.action_high)
    cameras = camera_preprocessing(meta)
    if not cameras:
        return module
    frames = {o.name: o.shape[:2] for o in meta.observations if o.is_camera}
    return CameraPolicy(module, {name: prep.torch_module(frames[name], layout="NHWC")
                                 for name, prep in cameras.items()})


def graph_shapes(meta: PolicyMetadata) -> dict[str, tuple[int, ...]]:
    """Graph input name -> shape without the batch: camera frames for camera inputs."""
    return {o.name: tuple(o.shape) for o in meta.observations}


def to_onnx_bytes(module: DeployedPolicy, shapes: Mapping[str, tuple[int, ...]], metadata: PolicyMetadata) -> bytes:
    """Trace `module` to ONNX, attach the metadata and graph digest, and run the full checker."""
    import onnx

    names = list(shapes)
    dtypes = {o.name: getattr(torch, o.dtype) for o in metadata.observations}
    example = tuple(torch.zeros((1, *shape), dtype=dtypes[name]) for name, shape in shapes.items())
    dynamic = {name: {0: "batch"} for name in [*names, metadata.action_output]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 marks the TorchScript exporter deprecated; it needs no onnxscript and
        # traces these fixed-shape MLP graphs exactly (parity is checked after every export).
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, input_names=names,
                          output_names=[metadata.action_output], dynamic_axes=dynamic, opset_version=OPSET,
                          do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name, model.producer_version = "rlcontrol", __version__
    model.doc_string = f"rlcontrol {metadata.algorithm} policy for {metadata.env_id}"
    stamped = PolicyMetadata(**{**metadata.__dict__, "graph_sha256": graph_digest(model)})
    for key, value in stamped.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def export_run(run_dir: str | Path, out: str | Path, *, parity_samples: int = 1000, seed: int = 0,
               camera: CameraInput | None = None) -> dict:
    """Export RUN_DIR's policy.pt to `out` (written atomically) and prove parity. Returns a summary.
    With `camera`, image inputs take camera frames (see the module docstring)."""
    from rlcontrol.training.atomic import atomic_write
    from rlcontrol.training.evaluate_run import load_policy_agent
    from rlcontrol.training.loop import POLICY_FILE

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'policy.onnx'}")
    config, env, agent = load_policy_agent(run_dir)
    checkpoint = run_dir / POLICY_FILE
    meta = build_metadata(config, env.spec, sha256_file(checkpoint),
                          # The run's name, not the trainer's directory layout: the file is shipped and
                          # shared; checkpoint_sha256 identifies the weights exactly.
                          extra={"source_run": run_dir.resolve().name,
                                 "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
                          camera=camera)
    shapes = graph_shapes(meta)
    data = to_onnx_bytes(deployed_module(agent, env.spec, meta), shapes, meta)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    parity = check_parity(agent, env, out, samples=parity_samples, seed=seed)
    env.close()
    summary = {"out": str(out), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
               "algorithm": config.algo, "env_id": config.env.id, "inputs": {k: list(v) for k, v in shapes.items()},
               "action_dim": env.spec.action_dim, "parity": parity}
    if camera is not None:
        summary["camera"] = {"size": list(camera.size), "crop": camera.crop, "layout": "HWC",
                             "network_inputs": {o.name: list(o.network_shape) for o in meta.observations if o.is_camera}}
    if not parity["ok"]:
        ties = f", {parity['near_tie_flips']} near-tie flips" if parity.get("near_tie_flips") else ""
        per = " per unit of action half-range" if "action_units" in parity else ""
        raise UserError(f"exported {out}, but ONNX and PyTorch actions differ by {parity['max_abs_diff']:.2e}{per} "
                        f"(tolerance {PARITY_TOLERANCE:.0e}{ties}); do not deploy this file")
    return summary


# ---------------------------------------------------------------------- parity


def torch_physical_actions(agent, env_spec, obs_batch) -> np.ndarray:
    """What the trainer's own code would command: agent.act on each observation, then
    envs.core.scale_action. One observation at a time, exactly as training acts."""
    from envs.core import scale_action

    n = _batch_size(obs_batch)
    out = np.empty((n, env_spec.action_dim), dtype=np.float64)
    for i in range(n):
        obs = {k: v[i] for k, v in obs_batch.items()} if isinstance(obs_batch, Mapping) else obs_batch[i]
        out[i] = scale_action(agent.act(obs, explore=False), env_spec.action_low, env_spec.action_high)
    return out


def random_observations(obs_spec, n: int, rng: np.random.Generator, scale: float = 3.0):
    """Standard-normal observations times `scale`: wider than most states, so the clip in the
    normalizer and the tanh saturation are exercised too. Images: uniform uint8."""
    shapes, dtypes = input_shapes(obs_spec), input_dtypes(obs_spec)
    batch = {k: rng.integers(0, 256, (n, *s), dtype=np.uint8) if dtypes[k] == "uint8"
             else (rng.standard_normal((n, *s)) * scale).astype(np.float32) for k, s in shapes.items()}
    return batch if isinstance(obs_spec, Mapping) else batch[FLAT_INPUT]


def recorded_observations(env, agent, n: int, seed: int):
    """Observations visited by the policy with its exploration noise, over as many episodes as needed."""
    from rlcontrol.training.evaluate import episode_seed

    seen, episode = [], 0
    while len(seen) < n:
        obs = env.reset(seed=episode_seed(seed, 4, episode))
        agent.reset_noise()
        episode += 1
        while len(seen) < n:
            seen.append(obs)
            result = env.step(agent.act(obs, explore=True))
            obs = result.obs
            if result.terminated or result.truncated:
                break
    if isinstance(seen[0], Mapping):  # images stay uint8, everything else becomes float32
        stacked = {k: np.stack([o[k] for o in seen]) for k in seen[0]}
        return {k: v if v.dtype == np.uint8 else v.astype(np.float32) for k, v in stacked.items()}
    return np.stack(seen).astype(np.float32)


def parity_units(env_spec) -> np.ndarray:
    """Per action, the unit differences are measured in: max(1, half the action's range). float32
    rounding grows with the size of the output, so a speed command in [0, 10] m/s carries ~5x the
    rounding of a normalized one; in these units the tolerance means the same for every action."""
    low, high = np.asarray(env_spec.action_low, np.float64), np.asarray(env_spec.action_high, np.float64)
    return np.maximum(1.0, (high - low) / 2.0)


def check_parity(agent, env, onnx_path: str | Path, *, samples: int = 1000, seed: int = 0) -> dict:
    """Max |ONNX - PyTorch| physical action over `samples` random and `samples` recorded observations,
    through the deployment runtime (both its batch path and, on a subset, its single-observation path),
    each action's difference in `parity_units` (physical units for actions whose half-range is <= 1).

    Camera inputs (layout HWC in the file's metadata) get camera frames: uniform random ones, and
    ones rendered at the camera size along the recorded episodes. PyTorch sees what training and
    the numpy deployment path make of each frame, `ImagePreprocessing(frame)` with OpenCV, with
    the settings the metadata records; onnxruntime sees the frame.

    For a policy with `tie_margin` (QT-Opt), observations that differ because a CEM decision was a
    float-level tie are counted in `near_tie_flips` (and their largest difference in
    `max_abs_diff_at_ties`) rather than in `max_abs_diff`; see TIE_MARGIN."""
    from rlcontrol.deploy import runtime

    policy = runtime.load(onnx_path, warmup=1)
    cameras = camera_preprocessing(policy.metadata)
    tie_margin = getattr(agent.policy(), "tie_margin", None)
    rng = np.random.default_rng(seed)
    units = parity_units(env.spec)
    result = {"samples_per_set": samples, "tolerance": PARITY_TOLERANCE}
    if (units > 1).any():
        result["action_units"] = units.tolist()
    if cameras:
        result["camera_inputs"] = sorted(cameras)
        frames = {o.name: tuple(o.shape) for o in policy.metadata.observations if o.is_camera}
        sets = (("random", _random_camera_sets(env.spec.observation, samples, rng, frames, cameras)),
                ("recorded", _recorded_camera_sets(env, agent, samples, seed, frames, cameras)))
    else:
        sets = (("random", _whole(random_observations(env.spec.observation, samples, rng))),
                ("recorded", _whole(recorded_observations(env, agent, samples, seed))))
    flips, at_ties, rounding, rounding_max = 0, 0.0, 0, 0.0
    for name, chunks in sets:
        diffs, single_left = [], min(samples, 100)
        for feed, obs in chunks:  # feed: what onnxruntime gets; obs: what the PyTorch policy gets
            reference = torch_physical_actions(agent, env.spec, obs)
            onnx = [policy.act_batch(feed).copy()]
            diff = (np.abs(onnx[0] - reference) / units).max(axis=-1)  # (chunk,)
            k = min(single_left, len(diff))
            if k:
                single = np.stack([policy.act(_row(feed, i)).copy() for i in range(k)])
                diff[:k] = np.maximum(diff[:k], (np.abs(single - reference[:k]) / units).max(axis=-1))
                onnx.append(single)
                single_left -= k
            if tie_margin is not None:
                ties = (diff > PARITY_TOLERANCE) & (_tie_margins(tie_margin, obs) < TIE_MARGIN)
                flips, at_ties = flips + int(ties.sum()), max(at_ties, float(diff[ties].max(initial=0.0)))
                diff = np.where(ties, 0.0, diff)
            elif (diff > PARITY_TOLERANCE).any():
                exempt = _float32_rounding(agent, env.spec, obs, reference, onnx, diff > PARITY_TOLERANCE)
                rounding += int(exempt.sum())
                rounding_max = max(rounding_max, float(diff[exempt].max(initial=0.0)))
                diff = np.where(exempt, 0.0, diff)
            diffs.append(diff)
        result[f"max_abs_diff_{name}"] = float(np.concatenate(diffs).max())
    result["max_abs_diff"] = max(result["max_abs_diff_random"], result["max_abs_diff_recorded"])
    result["ok"] = result["max_abs_diff"] <= PARITY_TOLERANCE
    if rounding:
        result.update(float32_rounding=rounding, max_abs_diff_at_rounding=rounding_max)
    if tie_margin is not None:
        result.update(near_tie_flips=flips, max_abs_diff_at_ties=at_ties)
        result["ok"] = result["ok"] and flips <= MAX_TIE_FLIP_FRACTION * 2 * samples
    return result


def _float32_rounding(agent, env_spec, obs, reference: np.ndarray, onnx: list[np.ndarray],
                      rows: np.ndarray) -> np.ndarray:
    """Which of `rows` (bool (chunk,)) differ only by float32 rounding: the exact answer, the
    policy evaluated in float64, is at least as close to onnxruntime's actions as twice PyTorch's
    own float32 error (plus the tolerance). Far outside the training data (the random set, 3 sigma
    per entry) activations grow and two correct float32 implementations can disagree by a little
    more than 1e-5; a wrong graph is far from the float64 answer where PyTorch is close to it.
    All False where the policy has no float64 form (then only the tolerance counts)."""
    from envs.core import scale_action
    from rlcontrol.agents.learner import flatten_obs

    exempt = np.zeros(len(rows), dtype=bool)
    index = np.flatnonzero(rows)
    pick = {k: v[index] for k, v in obs.items()} if isinstance(obs, Mapping) else obs[index]
    try:
        module = agent.policy().double()
        with torch.no_grad():
            tensors = {k: torch.as_tensor(v) for k, v in pick.items()} if isinstance(pick, Mapping) else torch.as_tensor(pick)
            normalized = module(flatten_obs(tensors, 1).double()).numpy()
    except (RuntimeError, TypeError, ValueError):
        return exempt
    exact = np.stack([scale_action(a, env_spec.action_low, env_spec.action_high) for a in normalized])
    units = parity_units(env_spec)
    torch_error = (np.abs(reference[index] - exact) / units).max(axis=-1)
    onnx_error = (np.abs(onnx[0][index] - exact) / units).max(axis=-1)  # the batch path; then the single one
    for single in onnx[1:]:
        covered = index < len(single)
        onnx_error[covered] = np.maximum(onnx_error[covered],
                                         (np.abs(single[index[covered]] - exact[covered]) / units).max(axis=-1))
    exempt[index] = onnx_error <= 2 * torch_error + PARITY_TOLERANCE
    return exempt


def _whole(batch) -> Iterator[tuple]:
    """One chunk in which onnxruntime and PyTorch get the same observations."""
    yield batch, batch


def _random_camera_sets(obs_spec, n: int, rng: np.random.Generator, frames: Mapping[str, tuple],
                        cameras: Mapping) -> Iterator[tuple[dict, dict]]:
    """(feed, obs) chunks: uniform random camera frames (feed) and their OpenCV preprocessing (obs),
    other inputs as in `random_observations`."""
    for start in range(0, n, CAMERA_CHUNK):
        k = min(CAMERA_CHUNK, n - start)
        obs = random_observations(obs_spec, k, rng)
        feed = dict(obs)
        for name, prep in cameras.items():
            feed[name] = rng.integers(0, 256, (k, *frames[name]), dtype=np.uint8)
            obs[name] = np.stack([prep(frame) for frame in feed[name]])
        yield feed, obs


def _recorded_camera_sets(env, agent, n: int, seed: int, frames: Mapping[str, tuple],
                          cameras: Mapping) -> Iterator[tuple[dict, dict]]:
    """(feed, obs) chunks along episodes driven as `recorded_observations` drives them: the task's
    camera rendered at the camera size (feed) and its OpenCV preprocessing (obs), with the task's
    other observations. The policy acts on its own, training-size, observations."""
    from rlcontrol.training.evaluate import episode_seed

    render = _camera_renderer(env)
    feeds, seen_obs, seen, episode = [], [], 0, 0
    while seen < n:
        obs = env.reset(seed=episode_seed(seed, 4, episode))
        agent.reset_noise()
        episode += 1
        while seen < n:
            shot = {name: render(frames[name][:2]) for name in cameras}
            feeds.append({**obs, **shot})
            seen_obs.append({**obs, **{name: cameras[name](frame) for name, frame in shot.items()}})
            seen += 1
            if len(feeds) == CAMERA_CHUNK or seen == n:
                yield _stack(feeds), _stack(seen_obs)
                feeds, seen_obs = [], []
            if seen == n:
                break
            result = env.step(agent.act(obs, explore=True))
            obs = result.obs
            if result.terminated or result.truncated:
                break


def _camera_renderer(env):
    """(height, width) -> the task's camera frame uint8 (height, width, 3) RGB at that size, from
    the camera its pixel observations come from."""
    from envs.wrappers import PixelObservation

    layer = env
    while not isinstance(layer, PixelObservation):
        layer = getattr(layer, "inner", None)
        if layer is None:
            raise UserError("a camera-input export checks parity on rendered frames, which needs a pixel task "
                            "(env.pixels: true)")
    return lambda hw: layer.inner.render(int(hw[0]), int(hw[1]), layer.camera)


def _stack(rows: list[dict]) -> dict:
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return {k: v if v.dtype == np.uint8 else v.astype(np.float32) for k, v in stacked.items()}


def _row(batch, i: int):
    return {k: v[i] for k, v in batch.items()} if isinstance(batch, Mapping) else batch[i]


def _tie_margins(tie_margin, batch) -> np.ndarray:
    """The PyTorch policy's relative CEM tie margins (samples,) for a batch of raw observations."""
    from rlcontrol.agents.learner import flatten_obs

    obs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()} if isinstance(batch, Mapping) \
        else torch.from_numpy(np.asarray(batch))
    return tie_margin(flatten_obs(obs, 1)).numpy()


def _batch_size(batch) -> int:
    return len(next(iter(batch.values()))) if isinstance(batch, Mapping) else len(batch)
