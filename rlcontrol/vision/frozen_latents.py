"""A frozen pretrained image encoder whose latents replace the image in replay.

Why: a Q update on raw images runs a conv stack over every image of the batch (and, for the
Bellman target, every next image): 70-110 ms an update on this 2-core CPU for QT-Opt's pixel
network (docs/benchmarks.md, "QT-Opt grasping"). An encoder pretrained beforehand and then
frozen gives the same features for a frame whenever it is computed, so each frame is encoded
once, when it arrives, and replay stores its latent vector instead of the image: an update
then costs what a state update costs, and replay holds ~100 bytes a frame instead of 12 kB.

    observation  {"pixels": uint8 (C, H, W), "state": (S,)}        what the env and the robot give
    replay       {"latent_<digest>": float32 (L,), "state": (S,)}  what the learner trains on

The latent part's name carries the first 12 hex digits of the encoder's content digest, so a
replay file (offline data, a checkpoint's replay) whose latents came from another encoder does
not fit the run's layout, and `check_latent_digest` says so in one line. The acting policy and
its ONNX export start from the image: the encoder is a module inside the policy (its weights
travel in policy.pt and the graph), so deployment feeds camera frames, never latents.

Encoder files are VAE files (`rlcontrol pretrain-vae`; the posterior mean is the latent) or
spatial-softmax keypoint encoders (rlcontrol/vision/keypoints.py; the keypoints are the latent),
both made by scripts/grasp_offline_replay.py --pretrain-encoder for the grasping task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from envs.core import ArraySpec
from rlcontrol.networks.image_encoders import image_parts, to_images
from rlcontrol.networks.split import part_slices
from rlcontrol.vision.keypoints import is_keypoint_file, load_keypoints
from rlcontrol.vision.vae import VAEEncoder, VAEFileError, load_encoder

LATENT_PREFIX = "latent_"


def encoder_digest(encoder: nn.Module) -> str:
    """blake2b of the encoder's parameter and buffer bytes, in state_dict order (hex, 32 digits)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in encoder.state_dict().items():
        h.update(name.encode())
        h.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latent_part(digest: str) -> str:
    return f"{LATENT_PREFIX}{digest[:12]}"


class FrozenImageEncoder(nn.Module):
    """uint8 images (B, C*H*W) raw 0..255 (as in the flat observation) -> latents (B, L), no gradient."""

    def __init__(self, encoder: VAEEncoder):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.image_shape = tuple(encoder.config.input_shape)
        self.latent_dim = encoder.output_dim

    def train(self, mode: bool = True) -> FrozenImageEncoder:
        super().train(mode)
        self.encoder.eval()  # frozen: always in eval mode
        return self

    def forward(self, flat_images: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_mean(to_images(flat_images, self.image_shape))


def load_frozen_encoder(path: str, obs_spec) -> tuple[str, FrozenImageEncoder]:
    """(image part name, encoder) for the one image part of `obs_spec`; ValueError (one line) if
    the observation has no single image part or the file is missing, damaged or made for
    another image shape (VAEFileError)."""
    parts = image_parts(obs_spec)
    if len(parts) != 1:
        raise ValueError(f"frozen_encoder needs an observation with exactly one image part, got {parts or 'none'}")
    shape = tuple(obs_spec[parts[0]].shape)
    try:
        if is_keypoint_file(path):
            encoder = load_keypoints(path, expected_input_shape=shape)
        else:
            encoder = load_encoder(path, trainable=False, expected_input_shape=shape)
    except VAEFileError as error:
        raise VAEFileError(f"frozen_encoder: {error}") from None
    return parts[0], FrozenImageEncoder(encoder)


def replay_spec(obs_spec: Mapping, image: str, latent_dim: int, digest: str) -> dict:
    """obs_spec with the image part replaced, in place, by the float32 latent part."""
    return {(latent_part(digest) if name == image else name):
            (ArraySpec((latent_dim,), np.float32) if name == image else spec) for name, spec in obs_spec.items()}


def check_latent_digest(file_parts, run_parts, path: str) -> None:
    """ValueError (one line) when a replay file's latent part came from another encoder than the run's."""
    mine = [p for p in run_parts if p and p.startswith(LATENT_PREFIX)]
    theirs = [p for p in file_parts if p and p.startswith(LATENT_PREFIX)]
    if mine and theirs and mine != theirs:
        raise ValueError(f"{path} holds latents of another encoder (digest {theirs[0][len(LATENT_PREFIX):]}, this "
                         f"run's frozen_encoder is {mine[0][len(LATENT_PREFIX):]}): make the file again with this "
                         "encoder")
    if mine and not theirs:
        raise ValueError(f"{path} holds no cached latents (parts {sorted(p or 'obs' for p in file_parts)}); the run "
                         f"stores {mine[0]}: make the file with the run's config (frozen_encoder set)")


class ObservationEncoder(nn.Module):
    """Raw flat observation (B, D) -> replay-space flat observation (B, D'): the image columns
    replaced by the frozen encoder's latents, the other parts passed through, in spec order."""

    def __init__(self, obs_spec: Mapping, image: str, encoder: FrozenImageEncoder):
        super().__init__()
        self.image_encoder = encoder
        self.segments = [(a, b, name == image) for name, (a, b, _) in part_slices(obs_spec).items()]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.image_encoder(flat[:, a:b]) if is_image else flat[:, a:b]
                          for a, b, is_image in self.segments], dim=-1)


class CachedLatents:
    """The replay-space form of raw dict observations, one frame at a time, each frame encoded once.

    The loop hands the same observation object twice (as next obs of one step and obs of the
    next), so the last result is kept and returned for the identical object.
    """

    def __init__(self, obs_spec: Mapping, image: str, encoder: FrozenImageEncoder, digest: str):
        self.image, self.encoder, self.name = image, encoder, latent_part(digest)
        self._last: tuple[object, dict] | None = None

    def __call__(self, obs: Mapping) -> dict:
        if self._last is not None and self._last[0] is obs:
            return self._last[1]
        device = next(self.encoder.parameters()).device
        with torch.inference_mode():
            pixels = torch.as_tensor(np.asarray(obs[self.image])).reshape(1, -1).to(device, torch.float32)
            latent = self.encoder(pixels)[0].cpu().numpy().astype(np.float32)
        out = {(self.name if k == self.image else k): (latent if k == self.image else v) for k, v in obs.items()}
        self._last = (obs, out)
        return out
