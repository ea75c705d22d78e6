"""Helpers for the keep-best tests (tests/sim2real/test_keep_best.py, tests/ros/test_ros_keep_best.py):
a fine-tunable run without training, and policies of known quality exported from it.

On dm_control cartpole-balance with 100-step episodes (action repeat 4), exploration std 0.1, the
constant-zero policy scores about 190-250 (the pole falls slowly from upright) and the policy that
always pushes the cart one way (+1) about 65 (it falls at once), so the first is clearly better.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

CONFIG = "configs/td3_cartpole_balance.yaml"


def make_finetune_run(root: Path) -> Path:
    """A TD3 cartpole-balance run folder with config.yaml, policy.pt and a complete checkpoint
    (untrained weights, empty replay): everything `rlcontrol finetune` needs to start its learner."""
    from rlcontrol.training.untrained import write_untrained_run

    return write_untrained_run(Path(__file__).resolve().parents[2] / CONFIG, Path(root) / "run")


def export_constant_policy(run: Path, out: Path, action: float) -> Path:
    """Export ``run``'s policy with its last layer replaced so that it always commands ``action``
    (normalized, in (-1, 1)): the same inputs and outputs as the run's own export."""
    import torch

    from rlcontrol.deploy.export import export_run
    from rlcontrol.training.checkpoint import load_torch

    variant = Path(out).parent / f"{Path(out).stem}-run"
    if variant.exists():
        shutil.rmtree(variant)
    variant.mkdir(parents=True)
    shutil.copy(run / "config.yaml", variant / "config.yaml")
    payload = load_torch(run / "policy.pt")
    actor = payload["policy"]["actor"]
    last = max(int(key.split(".")[1]) for key in actor if key.startswith("net."))
    actor[f"net.{last}.weight"] = torch.zeros_like(actor[f"net.{last}.weight"])
    actor[f"net.{last}.bias"] = torch.full_like(actor[f"net.{last}.bias"], math.atanh(action))
    torch.save(payload, variant / "policy.pt")
    export_run(variant, out, parity_samples=8)
    return Path(out)


PIXEL_CONFIG = "configs/ddpg_lane_following_vae.yaml"


def make_pixel_finetune_run(root: Path) -> Path:
    """A fine-tunable camera run: DDPG + PER on rlc:lane-following's 64x64 front camera and its
    speed/steering state, through a VAE encoder (an untrained one, written to root/vae.safetensors),
    with config.yaml, policy.pt and a complete checkpoint, no training."""
    import torch
    import yaml

    from rlcontrol.training.untrained import write_untrained_run
    from rlcontrol.vision.vae import VAE, VAEConfig, save_vae

    run = Path(root) / "pixel-run"
    run.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_vae(VAE(VAEConfig(input_shape=(3, 64, 64), channels=(8, 16, 32, 32))), run / "vae.safetensors")
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / PIXEL_CONFIG).read_text())
    data["agent"]["encoders"]["pixels"]["vae_path"] = str(run / "vae.safetensors")
    data["replay"]["capacity"] = 5000
    return write_untrained_run(data, run)
