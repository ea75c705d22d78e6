"""A spatial-softmax keypoint encoder, pretrained to read positions off images.

Why: a robot grasps where an object is, to within millimetres, and a VAE's latents (rlcontrol/
vision/vae.py) spend their capacity on reconstructing the whole frame: on rlc:grasp frames a
VAE whose latents also had to predict the object's position explained only ~60-70% of its
variance (docs/grasp.md). The spatial softmax of Levine, Finn et al. (2016, "End-to-end training
of deep visuomotor policies"; Finn et al. 2016, "Deep spatial autoencoders") turns each conv
feature map into the expected image coordinates of where it fires, a representation made of
positions:

    x (N, C, H, W) in [0, 1] -> [Conv2d + ReLU] x len(channels) -> maps (N, K, h, w)
      -> softmax over the h*w cells of each map -> expected (u, v) in [-1, 1] per map
      -> keypoints (N, 2K), the encoder's output (`encode_mean`, as a VAE encoder's)

It is pretrained by regressing labels (in simulation: the privileged state, e.g. the object's
pose) through a linear head that is training scaffolding only; the file holds the conv stack.

Files: safetensors (tensors only, never pickle) with the JSON header "rlcontrol.keypoints"
(format, config, extra) and per-tensor CRC-32s, written atomically; any problem on load is one
VAEFileError line, as for VAE files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rlcontrol.vision.vae import VAEFileError, _crc32, atomic_write, read_checked_file, to_unit_float

FORMAT = "rlcontrol.keypoints/1"
METADATA_KEY = "rlcontrol.keypoints"
CHECKSUM_KEY = "rlcontrol.keypoints.crc32"


@dataclass(frozen=True)
class KeypointConfig:
    """input_shape (C, H, W); channels of each conv (the last one is the number of keypoints K);
    the first conv has stride 2 (kernel 5), the others stride 1 (kernel 3): fine maps, fine positions."""

    input_shape: tuple[int, int, int] = (3, 64, 64)
    channels: tuple[int, ...] = (16, 32, 32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError(f"bad keypoint encoder config: input {self.input_shape}, channels {self.channels}")
        if self.map_size()[0] < 2 or self.map_size()[1] < 2:
            raise ValueError(f"input {self.input_shape[1:]} is too small for {len(self.channels)} conv layers")

    def map_size(self) -> tuple[int, int]:
        h, w = (self.input_shape[1] - 5) // 2 + 1, (self.input_shape[2] - 5) // 2 + 1
        for _ in self.channels[1:]:
            h, w = h - 2, w - 2
        return h, w


class KeypointEncoder(nn.Module):
    """(N, C, H, W) images (float in [0, 1] or uint8) -> keypoints (N, 2K): expected (u, v) per map."""

    def __init__(self, config: KeypointConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.input_shape[0]
        for i, out in enumerate(config.channels):
            layers += [nn.Conv2d(c, out, 5 if i == 0 else 3, stride=2 if i == 0 else 1), nn.ReLU()]
            c = out
        self.convs = nn.Sequential(*layers[:-1])  # no ReLU on the last maps: the softmax takes logits
        h, w = config.map_size()
        self.register_buffer("grid_u", torch.linspace(-1.0, 1.0, w).repeat(h), persistent=False)
        self.register_buffer("grid_v", torch.linspace(-1.0, 1.0, h).repeat_interleave(w), persistent=False)
        self.output_dim = 2 * config.channels[-1]

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.convs(to_unit_float(x)).flatten(2)  # (N, K, h*w)
        attention = torch.softmax(maps, dim=-1)
        return torch.cat([attention @ self.grid_u, attention @ self.grid_v], dim=-1)  # (N, 2K)

    forward = encode_mean


def train_keypoints(frames: np.ndarray, labels: np.ndarray, config: KeypointConfig, *, epochs: int = 10,
                    batch_size: int = 64, lr: float = 1e-3, seed: int = 0, threads: int = 1):
    """Fit a KeypointEncoder + linear head to standardized `labels` (N, K) from uint8 `frames`
    (N, C, H, W) by squared error. Deterministic for a seed. -> (encoder in eval mode, losses)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != config.input_shape:
        raise ValueError(f"frames must be uint8 (N, {config.input_shape}), got {frames.dtype} {frames.shape}")
    if labels.ndim != 2 or len(labels) != len(frames) or not np.isfinite(labels).all():
        raise ValueError(f"labels must be finite (N, K) with N = {len(frames)}, got {labels.shape}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = KeypointEncoder(config)
            head = nn.Linear(encoder.output_dim, labels.shape[1])
        targets = torch.from_numpy(((labels - labels.mean(0)) / (labels.std(0) + 1e-6)).astype(np.float32))
        optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(frames))
            for start in range(0, len(frames), batch_size):
                rows = order[start:start + batch_size]
                loss = (head(encoder.encode_mean(torch.from_numpy(frames[rows]))) - targets[rows]).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(previous)
    return encoder.eval(), losses


def save_keypoints(encoder: KeypointEncoder, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in encoder.state_dict().items()}
    config = asdict(encoder.config)
    header = {"format": FORMAT, "config": {k: list(v) for k, v in config.items()}, "extra": dict(extra or {})}
    metadata = {METADATA_KEY: json.dumps(header), CHECKSUM_KEY: json.dumps({n: _crc32(t) for n, t in tensors.items()})}
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def is_keypoint_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable safetensors file with a keypoint-encoder header (no other checks)."""
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as file:
            return METADATA_KEY in (file.metadata() or {})
    except (SafetensorError, OSError, RuntimeError, ValueError):
        return False


def load_keypoints(path: str | os.PathLike, *, expected_input_shape=None) -> KeypointEncoder:
    """The encoder of `save_keypoints`'s file, frozen and in eval mode; VAEFileError (one line) if
    the file is missing, damaged, or made for another image shape."""
    path = os.fspath(path)
    tensors, header, checksums = read_checked_file(path, True, what="keypoint encoder", metadata_key=METADATA_KEY,
                                                   checksum_key=CHECKSUM_KEY, file_format=FORMAT)
    try:
        config = KeypointConfig(**header["config"])
    except (ValueError, KeyError, TypeError) as error:
        raise VAEFileError(f"{path}: not a readable keypoint encoder file: {' '.join(str(error).split())}") from None
    if expected_input_shape is not None and config.input_shape != tuple(expected_input_shape):
        raise VAEFileError(f"{path}: encoder takes input {config.input_shape}, expected {tuple(expected_input_shape)}")
    if set(checksums) != set(tensors) or any(_crc32(t) != checksums[n] for n, t in tensors.items()):
        raise VAEFileError(f"{path}: checksum mismatch (corrupted data)")
    encoder = KeypointEncoder(config)
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as error:
        raise VAEFileError(f"{path}: weights do not fit the config in its header: {str(error).splitlines()[0]}") from None
    return encoder.requires_grad_(False).eval()
