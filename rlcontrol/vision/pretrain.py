"""Pretrain the VAE on frames from uniform random-action episodes (Kendall et al. 2018).

    python -m rlcontrol.vision.pretrain --env dmc:cartpole-swingup --frames 2000 --out vae.safetensors

writes vae.safetensors (weights + JSON header, `rlcontrol.vision.vae`) and vae.png (a grid:
originals on top, reconstructions below). Bad input prints one line `rlcontrol: error: ...`
on stderr and exits with code 2.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from rlcontrol.errors import UserError
from rlcontrol.vision.preprocess import ImagePreprocessing
from rlcontrol.vision.vae import VAE, VAEConfig, atomic_write, save_vae, vae_loss

__all__ = ["collect_frames", "main", "pretrain_vae", "save_reconstruction_grid", "train_vae"]

EXIT_USAGE = 2
_MAKE_RESERVED = ("seed", "pixels", "pixel_size")


def collect_frames(env_id: str, frames: int, *, seed: int, pixel_size: int = 64,
                   env_kwargs: Mapping[str, Any] | None = None,
                   preprocessing: ImagePreprocessing | None = None) -> np.ndarray:
    """Frames from episodes of uniform random actions in [-1, 1]^action_dim -> uint8 (N, C, H, W).

    Every observation counts, the reset one included, until `frames` are collected (pass
    env_kwargs={"max_episode_steps": T} for more, shorter episodes). Each rendered
    (3, pixel_size, pixel_size) frame goes through `preprocessing` (None: kept as is).
    Raises UserError if `env_id` is unknown or the env cannot be made with these arguments.
    """
    import envs  # lazily: importing the simulators is slow and only this function needs them

    if frames < 1:
        raise UserError(f"frames must be >= 1, got {frames}")
    env_kwargs = dict(env_kwargs or {})
    clash = sorted(set(env_kwargs) & set(_MAKE_RESERVED))
    if clash:
        raise ValueError(f"env_kwargs must not set {clash}: collect_frames sets them")
    try:
        env = envs.make(env_id, seed=seed, pixels=True, pixel_size=pixel_size, **env_kwargs)
    except (envs.UnknownEnvError, ValueError, TypeError) as error:
        raise UserError(f"cannot make env {env_id!r}: {' '.join(str(error).split())}") from None
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    try:
        while len(out) < frames:
            obs = env.reset()
            out.append(_prepare(obs["pixels"], preprocessing))
            done = False
            while not done and len(out) < frames:
                result = env.step(rng.uniform(-1.0, 1.0, size=env.spec.action_dim))
                out.append(_prepare(result.obs["pixels"], preprocessing))
                done = result.terminated or result.truncated
    finally:
        env.close()
    return np.stack(out)


def _prepare(frame_chw: np.ndarray, preprocessing: ImagePreprocessing | None) -> np.ndarray:
    return frame_chw if preprocessing is None else preprocessing.process_chw(frame_chw)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) == 0:
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be uint8 (N, C, H, W) with N >= 1, got {desc}")


def train_vae(frames: np.ndarray, config: VAEConfig, *, epochs: int = 10, steps: int | None = None,
              batch_size: int = 64, lr: float = 1e-3, seed: int = 0, threads: int = 1,
              augmentation: ImagePreprocessing | None = None, labels: np.ndarray | None = None,
              label_weight: float = 0.0) -> tuple[VAE, dict[str, list[float]]]:
    """Train a fresh VAE on uint8 frames (N, C, H, W) matching config.input_shape.

    With `labels` (N, K) and label_weight > 0, an auxiliary linear head reads the posterior mean
    and regresses the labels (standardized per column), and label_weight x its squared error
    (summed over the K columns, batch mean) joins the VAE loss: the latents must then encode
    what the labels say (in simulation: the privileged state a policy needs, such as where
    the object is) even where it covers too few pixels to matter to the reconstruction.
    The head is training scaffolding and is not part of the returned VAE.

    Runs `steps` Adam steps if given, else `epochs` passes over shuffled frames (the last
    batch of an epoch may be smaller). Deterministic for a seed and thread count: the
    weights, shuffling, reparameterization noise and `augmentation` (its `augment`) all draw
    from seeded generators, and the caller's global RNG state is left as it was.
    Returns (model in eval mode, history) with per-step lists "loss", "recon", "kl" (batch
    means, per image) and "epoch_loss" (mean loss of each completed epoch).
    """
    _check_frames(frames)
    if tuple(frames.shape[1:]) != tuple(config.input_shape):
        raise ValueError(f"frames are {tuple(frames.shape[1:])}, the config expects {tuple(config.input_shape)}")
    if batch_size < 1 or epochs < 1 or (steps is not None and steps < 1) or not lr > 0:
        raise ValueError("batch_size, epochs and steps must be >= 1 and lr > 0")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    use_labels = labels is not None and label_weight > 0
    if use_labels and (np.ndim(labels) != 2 or len(labels) != len(frames) or not np.isfinite(labels).all()):
        raise ValueError(f"labels must be finite (N, K) with N = {len(frames)} frames, got {np.shape(labels)}")
    history: dict[str, list[float]] = {"loss": [], "recon": [], "kl": [], "label": [], "epoch_loss": []}
    try:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            model = VAE(config)
            head = torch.nn.Linear(config.latent_dim, labels.shape[1]) if use_labels else None
        if use_labels:
            mean, std = labels.mean(axis=0), labels.std(axis=0) + 1e-6
            targets = torch.from_numpy(((labels - mean) / std).astype(np.float32))
        noise = torch.Generator().manual_seed(seed + 1)
        rng = np.random.default_rng(seed)
        params = list(model.parameters()) + (list(head.parameters()) if use_labels else [])
        optimizer = torch.optim.Adam(params, lr=lr)
        total = steps if steps is not None else epochs * -(-len(frames) // batch_size)
        model.train()
        while len(history["loss"]) < total:
            epoch_losses = []
            order = rng.permutation(len(frames))
            for start in range(0, len(frames), batch_size):
                if len(history["loss"]) >= total:
                    break
                rows = order[start:start + batch_size]
                batch = frames[rows]
                if augmentation is not None:
                    batch = augmentation.augment(batch, rng)
                x = torch.from_numpy(batch).to(torch.float32) * (1.0 / 255.0)
                recon, mu, logvar = model(x, generator=noise)
                loss, recon_term, kl_term = vae_loss(recon, x, mu, logvar, config.beta, config.reconstruction)
                if use_labels:
                    label_term = (head(mu) - targets[rows]).square().sum(dim=1).mean()
                    loss = loss + label_weight * label_term
                    history["label"].append(label_term.item())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in (("loss", loss), ("recon", recon_term), ("kl", kl_term)):
                    history[key].append(value.item())
                epoch_losses.append(history["loss"][-1])
            else:
                history["epoch_loss"].append(float(np.mean(epoch_losses)))
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval(), history


def save_reconstruction_grid(model: VAE, frames: np.ndarray, path_png: str | os.PathLike, n: int = 8) -> np.ndarray:
    """PNG of n frames (evenly spaced through `frames`) on top and decode(mu) of each below.

    Returns the grid, uint8 (2H, nW, C) RGB; written (as BGR for cv2) to a temp file, then
    renamed onto `path_png`.
    """
    _check_frames(frames)
    n = max(1, min(n, len(frames)))
    picked = frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]
    with torch.no_grad():
        recon = model.reconstruct(torch.from_numpy(picked))
    recon = np.clip(np.floor(recon.numpy() * 255.0 + 0.5), 0, 255).astype(np.uint8)
    rows = [np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=1) for images in (picked, recon)]
    grid = np.ascontiguousarray(np.concatenate(rows, axis=0))  # (2H, nW, C)
    bgr = grid if grid.shape[2] == 1 else cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)

    def write(temp: str) -> None:
        if not cv2.imwrite(temp, bgr):
            raise OSError(f"cv2.imwrite could not write {temp}")

    atomic_write(path_png, write, suffix=".tmp.png")
    return grid


def _check_outputs(out: Path, force: bool) -> Path:
    """The PNG path next to `out`; UserError for an unusable or already existing output."""
    if out.suffix.lower() == ".png":
        raise UserError(f"--out {out}: the weights file needs a suffix other than .png (e.g. .safetensors)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'vae.safetensors'}")
    if not out.parent.resolve().is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    png = out.with_suffix(".png")
    existing = [str(p) for p in (out, png) if p.exists()]
    if existing and not force:
        raise UserError(f"{' and '.join(existing)} already exist(s); pass --force to overwrite")
    return png


def pretrain_vae(env_id: str, frames: int, out: str | os.PathLike, *, pixel_size: int = 64, latent_dim: int = 32,
                 channels: Sequence[int] = (32, 64, 128, 256), epochs: int = 10, batch_size: int = 64,
                 lr: float = 1e-3, beta: float = 1.0, reconstruction: str = "bce", seed: int = 0, threads: int = 1,
                 preprocessing: ImagePreprocessing | None = None, env_kwargs: Mapping[str, Any] | None = None,
                 force: bool = False) -> dict[str, Any]:
    """collect_frames + train_vae + save_vae(out) + save_reconstruction_grid(out.png) -> summary.

    The outputs are checked before any work (UserError if `out`'s folder is missing or a
    file exists and not force). The header's preprocessing is the one applied to the
    rendered (pixel_size x pixel_size) frames; extra records env_id, pixel_size, frames,
    seed and the training settings.
    """
    out = Path(out)
    png = _check_outputs(out, force)
    if frames < 1:
        raise UserError(f"--frames must be >= 1, got {frames}")
    preprocessing = preprocessing or ImagePreprocessing()
    try:
        input_shape = preprocessing.output_shape((pixel_size, pixel_size))
        config = VAEConfig(input_shape=input_shape, latent_dim=latent_dim, channels=tuple(channels),
                           reconstruction=reconstruction, beta=beta)
    except ValueError as error:
        raise UserError(str(error)) from None

    started = time.perf_counter()
    data = collect_frames(env_id, frames, seed=seed, pixel_size=pixel_size, env_kwargs=env_kwargs,
                          preprocessing=preprocessing)
    collected = time.perf_counter()
    model, history = train_vae(data, config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, threads=threads)
    trained = time.perf_counter()
    extra = {"env_id": env_id, "pixel_size": pixel_size, "frames": int(len(data)), "seed": seed, "epochs": epochs,
             "batch_size": batch_size, "lr": lr, "final_loss": history["loss"][-1],
             "env_kwargs": dict(env_kwargs or {})}
    save_vae(model, out, preprocessing=preprocessing, extra=extra)
    save_reconstruction_grid(model, data, png)
    return {
        "out": str(out), "png": str(png), "bytes": out.stat().st_size, "env_id": env_id, "frames": int(len(data)),
        "input_shape": list(input_shape), "latent_dim": latent_dim, "epochs": epochs,
        "steps": len(history["loss"]), "initial_loss": history["loss"][0], "final_loss": history["loss"][-1],
        "final_recon": history["recon"][-1], "final_kl": history["kl"][-1], "epoch_loss": history["epoch_loss"],
        "collect_s": round(collected - started, 3), "train_s": round(trained - collected, 3),
    }


# --------------------------------------------------------------------------- CLI
# The flags and the handler live in rlcontrol/vision/pretrain_cli.py, which imports no torch,
# so `rlcontrol --help` stays fast.


def main(argv: list[str] | None = None) -> int:
    from rlcontrol.vision.pretrain_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
