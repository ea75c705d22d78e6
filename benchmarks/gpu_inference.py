"""On-board inference: which onnxruntime provider a policy gets, its parity with the CPU, and its
batch-1 latency, for an MLP policy and a camera policy; fp16 TensorRT measured, not assumed.

    python -m benchmarks.gpu_inference [--calls 5000] [--out DIR]

Two policies, exported untrained (latency does not depend on the weights' values): TD3's 2x256 MLP
on dm_control cartpole-balance (configs/td3_cartpole_balance.yaml) and the camera policy of
configs/ddpg_lane_following_vae.yaml (64x64 RGB frame + speed/steering through the VAE encoder, a
randomly initialised VAE of the config's size). For each: `runtime.load` with the default
provider order (TensorRT, CUDA, CPU: the provider it chose is reported), the CPU provider alone,
and where TensorRT exists fp16 (`runtime.fp16_parity`: the largest action error as a share of the
action range). Latency: `policy.act(obs)` on one observation, p50/p99 over --calls calls after
warm-up, in one process. Parity: the largest absolute action difference from the CPU session on
256 random observations. Runs anywhere; on a CPU-only machine only the CPU rows exist.
Writes OUT/gpu_inference.json (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]


def export_untrained(config_path: str, folder: Path, vae: Path | None = None) -> Path:
    import yaml

    from rlcontrol.deploy.export import export_run
    from rlcontrol.training.untrained import write_untrained_run

    data = yaml.safe_load((ROOT / config_path).read_text())
    if vae is not None:
        data["agent"]["encoders"]["pixels"]["vae_path"] = str(vae)
    run = write_untrained_run(data, folder / Path(config_path).stem)
    export_run(run, run / "policy.onnx", parity_samples=8)
    return run / "policy.onnx"


def latency(policy, obs: list[dict], calls: int) -> dict:
    for o in obs[:50]:
        policy.act(o)
    times = np.empty(calls)
    for i in range(calls):
        o = obs[i % len(obs)]
        t = time.perf_counter()
        policy.act(o)
        times[i] = time.perf_counter() - t
    return {"p50_us": round(float(np.percentile(times, 50)) * 1e6, 1),
            "p99_us": round(float(np.percentile(times, 99)) * 1e6, 1), "calls": calls}


def parity(policy, reference, obs: list[dict]) -> float:
    return float(max(np.abs(policy.act(o).astype(np.float64) - reference.act(o)).max() for o in obs))


def measure(path: Path, calls: int) -> dict:
    import onnxruntime as ort

    from rlcontrol.deploy import runtime

    cpu = runtime.load(path, providers=["CPUExecutionProvider"])
    obs = runtime.random_inputs(cpu.metadata, 256)
    rows = {"cpu": {"provider": cpu.provider, **latency(cpu, obs, calls)}}
    chosen = runtime.load(path)  # the default order: what a robot gets
    if chosen.provider != "CPUExecutionProvider":
        rows["default"] = {"provider": chosen.provider, "max_abs_diff_vs_cpu": parity(chosen, cpu, obs),
                           **latency(chosen, obs, calls)}
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        half = runtime.load(path, precision="fp16")
        rows["fp16"] = {"provider": half.provider, "parity": runtime.fp16_parity(path),
                        **latency(half, obs, calls)}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import onnxruntime as ort

    from rlcontrol.vision.vae import VAE, VAEConfig, save_vae

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_vae(VAE(VAEConfig()), folder / "vae.safetensors")
        policies = {"mlp_td3_cartpole": export_untrained("configs/td3_cartpole_balance.yaml", folder),
                    "camera_ddpg_lane_vae": export_untrained("configs/ddpg_lane_following_vae.yaml", folder,
                                                             folder / "vae.safetensors")}
        result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
                  "available_providers": ort.get_available_providers(),
                  "policies": {name: measure(path, args.calls) for name, path in policies.items()}}
    try:
        import torch

        result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        result["device"] = "unknown"
    out = Path(args.out) / "gpu_inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
