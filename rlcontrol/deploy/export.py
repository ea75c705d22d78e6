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

Image observations (uint8 (C, H, W)) are uint8 graph inputs, cast to float inside the graph,
so a camera frame is fed as it arrives.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcontrol import __version__
from rlcontrol.deploy.metadata import ObservationInput, PolicyMetadata
from rlcontrol.deploy.runtime import graph_digest, sha256_file
from rlcontrol.errors import UserError

OPSET = 17
FLAT_INPUT = "observation"
PARITY_TOLERANCE = 1e-5
# Argmax policies (QT-Opt's CEM): a decision between candidates whose scores differ by float
# rounding can go the other way in ONNX Runtime. Such observations (relative score gap below
# TIE_MARGIN at some CEM decision) are reported as near-tie flips instead of failures, unless
# there are more than MAX_TIE_FLIP_FRACTION of them (a wrong graph differs almost everywhere).
TIE_MARGIN = 1e-4
MAX_TIE_FLIP_FRACTION = 0.01


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


def build_metadata(config, env_spec, checkpoint_sha256: str, extra: dict | None = None) -> PolicyMetadata:
    shapes, dtypes = input_shapes(env_spec.observation), input_dtypes(env_spec.observation)
    flat = not isinstance(env_spec.observation, Mapping)
    observations = tuple(
        ObservationInput(name, shape, dtypes[name], history=1, components=env_spec.obs_layout if flat else ())
        for name, shape in shapes.items())
    return PolicyMetadata(
        algorithm=config.algo, env_id=config.env.id, observations=observations,
        action_names=tuple(env_spec.action_names), action_low=tuple(float(x) for x in env_spec.action_low),
        action_high=tuple(float(x) for x in env_spec.action_high), control_period=float(env_spec.control_period),
        config_sha256=config.digest(), checkpoint_sha256=checkpoint_sha256, version=__version__,
        obs_normalization="in-graph" if config.agent.obs_norm else "none", extra=dict(extra or {}))


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


def export_run(run_dir: str | Path, out: str | Path, *, parity_samples: int = 1000, seed: int = 0) -> dict:
    """Export RUN_DIR's policy.pt to `out` (written atomically) and prove parity. Returns a summary."""
    from rlcontrol.training.atomic import atomic_write
    from rlcontrol.training.evaluate_run import load_policy_agent
    from rlcontrol.training.loop import POLICY_FILE

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'policy.onnx'}")
    config, env, agent = load_policy_agent(run_dir)
    checkpoint = run_dir / POLICY_FILE
    meta = build_metadata(config, env.spec, sha256_file(checkpoint),
                          extra={"source_run": str(run_dir.resolve()),
                                 "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    shapes = input_shapes(env.spec.observation)
    module = DeployedPolicy(agent.policy(), shapes, env.spec.action_low, env.spec.action_high)
    data = to_onnx_bytes(module, shapes, meta)
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    parity = check_parity(agent, env, out, samples=parity_samples, seed=seed)
    env.close()
    summary = {"out": str(out), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
               "algorithm": config.algo, "env_id": config.env.id, "inputs": {k: list(v) for k, v in shapes.items()},
               "action_dim": env.spec.action_dim, "parity": parity}
    if not parity["ok"]:
        ties = f", {parity['near_tie_flips']} near-tie flips" if parity.get("near_tie_flips") else ""
        raise UserError(f"exported {out}, but ONNX and PyTorch actions differ by {parity['max_abs_diff']:.2e} "
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


def check_parity(agent, env, onnx_path: str | Path, *, samples: int = 1000, seed: int = 0) -> dict:
    """Max |ONNX - PyTorch| physical action over `samples` random and `samples` recorded observations,
    through the deployment runtime (both its batch path and, on a subset, its single-observation path).

    For a policy with `tie_margin` (QT-Opt), observations that differ because a CEM decision was a
    float-level tie are counted in `near_tie_flips` (and their largest difference in
    `max_abs_diff_at_ties`) rather than in `max_abs_diff`; see TIE_MARGIN."""
    from rlcontrol.deploy import runtime

    policy = runtime.load(onnx_path, warmup=1)
    tie_margin = getattr(agent.policy(), "tie_margin", None)
    rng = np.random.default_rng(seed)
    result = {"samples_per_set": samples, "tolerance": PARITY_TOLERANCE}
    flips, at_ties = 0, 0.0
    for name, batch in (("random", random_observations(env.spec.observation, samples, rng)),
                        ("recorded", recorded_observations(env, agent, samples, seed))):
        reference = torch_physical_actions(agent, env.spec, batch)
        diff = np.abs(policy.act_batch(batch) - reference).max(axis=-1)  # (samples,)
        single = np.stack([policy.act({k: v[i] for k, v in batch.items()} if isinstance(batch, Mapping)
                                      else batch[i]).copy() for i in range(min(samples, 100))])
        diff[:len(single)] = np.maximum(diff[:len(single)], np.abs(single - reference[:len(single)]).max(axis=-1))
        if tie_margin is not None:
            ties = (diff > PARITY_TOLERANCE) & (_tie_margins(tie_margin, batch) < TIE_MARGIN)
            flips, at_ties = flips + int(ties.sum()), max(at_ties, float(diff[ties].max(initial=0.0)))
            diff = np.where(ties, 0.0, diff)
        result[f"max_abs_diff_{name}"] = float(diff.max())
    result["max_abs_diff"] = max(result["max_abs_diff_random"], result["max_abs_diff_recorded"])
    result["ok"] = result["max_abs_diff"] <= PARITY_TOLERANCE
    if tie_margin is not None:
        result.update(near_tie_flips=flips, max_abs_diff_at_ties=at_ties)
        result["ok"] = result["ok"] and flips <= MAX_TIE_FLIP_FRACTION * 2 * samples
    return result


def _tie_margins(tie_margin, batch) -> np.ndarray:
    """The PyTorch policy's relative CEM tie margins (samples,) for a batch of raw observations."""
    from rlcontrol.agents.learner import flatten_obs

    obs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()} if isinstance(batch, Mapping) \
        else torch.from_numpy(np.asarray(batch))
    return tie_margin(flatten_obs(obs, 1)).numpy()


def _batch_size(batch) -> int:
    return len(next(iter(batch.values()))) if isinstance(batch, Mapping) else len(batch)
