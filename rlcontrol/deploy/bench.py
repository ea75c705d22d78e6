"""`rlcontrol bench-policy policy.onnx`: per-call latency of single-observation inference,
onnxruntime (the deployment runtime's `act`) against eager PyTorch, in the same process.

Both sides get the same observations and the same conditions: one thread each (what a
control loop on a robot uses, and the fastest setting for one small observation on this
CPU), garbage collection frozen during timing (a control loop does that too; the ROS node
handles GC explicitly), and the calls interleaved in blocks so a noisy machine slows both
alike. Latency is wall time around one call: observation in, physical action out.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from rlcontrol.errors import UserError

TARGET_P99_US = 100.0
TARGET_SPEEDUP = 3.0


def percentiles(latencies_ns: np.ndarray) -> dict:
    us = latencies_ns / 1e3
    return {"calls": int(us.size), "p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max()), "mean_us": float(us.mean())}


def _time_block(fn: Callable, observations: list, out: np.ndarray, start: int) -> None:
    clock = time.perf_counter_ns
    n = len(observations)
    for i in range(out.size):
        obs = observations[(start + i) % n]
        t0 = clock()
        fn(obs)
        out[i] = clock() - t0


def torch_eager_policy(run_dir: str | Path, expected_checkpoint_sha256: str | None, meta=None):
    """The exported run's PyTorch policy, as a deployment without ONNX would call it:
    numpy in, torch forward under inference_mode, physical numpy action out. With the file's
    metadata `meta`, camera inputs get the same in-graph preprocessing (TorchPreprocess, eager)."""
    import torch

    from rlcontrol.deploy.export import DeployedPolicy, deployed_module, input_shapes
    from rlcontrol.deploy.runtime import sha256_file
    from rlcontrol.training.evaluate_run import load_policy_agent
    from rlcontrol.training.loop import POLICY_FILE

    run_dir = Path(run_dir)
    if expected_checkpoint_sha256 and (run_dir / POLICY_FILE).is_file():
        if sha256_file(run_dir / POLICY_FILE) != expected_checkpoint_sha256:
            raise UserError(f"{run_dir / POLICY_FILE} is not the checkpoint this policy was exported from "
                            "(sha256 differs); pass --run with the right run folder")
    config, env, agent = load_policy_agent(run_dir)
    shapes = input_shapes(env.spec.observation)
    if meta is not None:
        module = deployed_module(agent, env.spec, meta).eval()
    else:
        module = DeployedPolicy(agent.policy(), shapes, env.spec.action_low, env.spec.action_high).eval()
    env.close()
    names = list(shapes)

    def act(obs):
        with torch.inference_mode():
            if isinstance(obs, Mapping):
                inputs = [torch.from_numpy(obs[n]).unsqueeze(0) for n in names]
            else:
                inputs = [torch.from_numpy(obs).unsqueeze(0)]
            return module(*inputs)[0].numpy()

    return act


def _recorded_run(policy_path: Path, name: str | None) -> Path | None:
    """The run folder the policy records by name (source_run), where it usually is: the policy's own
    folder (exported into the run), a sibling of it, or runs/NAME. None when not found."""
    if not name:
        return None
    for folder in (policy_path.resolve().parent, policy_path.resolve().parent / name, Path("runs") / name):
        if folder.name == name and (folder / "config.yaml").is_file():
            return folder
    return None


def bench_policy(path: str | Path, *, calls: int = 10_000, run_dir: str | Path | None = None, blocks: int = 10,
                 seed: int = 0) -> dict:
    from rlcontrol.deploy import runtime

    if calls < blocks:
        raise UserError(f"--calls must be at least {blocks}")
    policy = runtime.load(path, warmup=200)
    meta = policy.metadata
    rng = np.random.default_rng(seed)
    observations = []
    # 256 different observations, or 16 of camera frames (256 of 480x640 would take 236 MB).
    count = 16 if any(o.is_camera for o in meta.observations) else 256
    for _ in range(count):
        obs = {o.name: rng.integers(0, 256, o.shape, dtype=np.uint8) if o.dtype == "uint8"  # camera images
               else rng.standard_normal(o.shape).astype(np.float32) for o in meta.observations}
        observations.append(obs if len(obs) > 1 else next(iter(obs.values())))

    backends: dict[str, Callable] = {"onnxruntime": policy.act}
    torch_note = None
    source = run_dir or _recorded_run(Path(path), meta.extra.get("source_run"))
    if source and Path(source).is_dir():
        import torch

        torch.set_num_threads(1)
        backends["torch_eager"] = torch_eager_policy(source, meta.checkpoint_sha256, meta)
        # Sanity: both backends compute the same action before their speed is compared.
        diff = float(np.abs(backends["torch_eager"](observations[0]) - policy.act(observations[0])).max())
        if diff > 1e-4:
            raise UserError(f"the PyTorch policy in {source} and {path} disagree by {diff:.2e}; wrong --run?")
    else:
        torch_note = ("eager PyTorch not measured: the source run folder was not found "
                      f"({source or 'not recorded'}; the policy records the run's name only); pass --run RUN_DIR")

    per_block = calls // blocks
    samples = {name: np.empty(per_block * blocks, dtype=np.int64) for name in backends}
    for fn in backends.values():  # warm both paths before timing
        for obs in observations:
            fn(obs)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for b in range(blocks):
            for name, fn in backends.items():
                _time_block(fn, observations, samples[name][b * per_block:(b + 1) * per_block], b * per_block)
    finally:
        gc.enable()
        gc.unfreeze()

    result = {"policy": str(path), "provider": policy.provider, "threads": 1, "calls_per_backend": per_block * blocks,
              **{name: percentiles(s) for name, s in samples.items()}}
    if "torch_eager" in result:
        ort_, pt = result["onnxruntime"], result["torch_eager"]
        result["speedup_p50"] = pt["p50_us"] / ort_["p50_us"]
        result["speedup_p99"] = pt["p99_us"] / ort_["p99_us"]
    else:
        result["note"] = torch_note
    result["targets"] = {"p99_us_max": TARGET_P99_US, "speedup_min": TARGET_SPEEDUP,
                         "p99_met": result["onnxruntime"]["p99_us"] <= TARGET_P99_US,
                         "speedup_met": result.get("speedup_p50", 0.0) >= TARGET_SPEEDUP}
    return result
