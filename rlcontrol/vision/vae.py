"""A convolutional VAE whose encoder pretrains image features ("Learning to Drive in a Day").

Architecture (derived from `VAEConfig.input_shape` and `channels`; defaults for (3, 64, 64)):

    VAEEncoder: x (N, C, H, W) in [0, 1] -> [Conv2d(k4, s2, p1) + ReLU] x len(channels)
                -> flatten (N, feature_dim) -> mu, logvar (N, latent_dim) each
                64x64: 32x32x32 -> 16x16x64 -> 8x8x128 -> 4x4x256, feature_dim 4096
                84x84: 42 -> 21 -> 10 -> 5 (5x5x256, feature_dim 6400)
    VAEDecoder: z (N, latent_dim) -> Linear -> (N, 256, 4, 4) -> the mirrored
                ConvTranspose2d stack (output_padding restores odd sizes exactly)
                -> sigmoid -> (N, C, H, W) in [0, 1]

padding=1 halves the size exactly at each layer, so small frames (32x32) also work with
four layers (World Models used padding 0, which needs at least 64x64 for four).

Loss (`vae_loss`): reconstruction summed over pixels (Bernoulli/BCE or MSE) + beta * KL to
N(0, I), both averaged over the batch.

Files (`save_vae` / `load_vae`): plain safetensors (tensors only, never pickle) whose string
metadata holds the JSON header "rlcontrol.vae" (format, config, input shape, preprocessing,
extra) and "rlcontrol.vae.crc32" (CRC-32 of each tensor's bytes, which catches flipped data
bytes that safetensors' own length checks let through). Saving is atomic. Any problem with a
file on load is one `VAEFileError` (a ValueError) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from rlcontrol.errors import UserError

__all__ = [
    "VAE", "VAEConfig", "VAEDecoder", "VAEEncoder", "VAEFileError", "kl_divergence", "load_encoder",
    "load_vae", "read_vae_metadata", "reconstruction_loss", "save_vae", "to_unit_float", "vae_loss",
]

FORMAT = "rlcontrol.vae/1"
METADATA_KEY = "rlcontrol.vae"
CHECKSUM_KEY = "rlcontrol.vae.crc32"
RECONSTRUCTIONS = ("bce", "mse")


class VAEFileError(UserError, ValueError):
    """A VAE file that is missing, unreadable, corrupted or does not match what was asked for.
    A UserError too, so the command line shows it as one line."""


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss of a `VAE`; everything needed to rebuild it from a file.

    input_shape is (C, H, W); channels the encoder's conv widths (the decoder mirrors them);
    reconstruction "bce" (targets in [0, 1] read as Bernoulli probabilities) or "mse".
    """

    input_shape: tuple[int, int, int] = (3, 64, 64)
    latent_dim: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 256)
    kernel_size: int = 4
    stride: int = 2
    padding: int = 1
    reconstruction: str = "bce"
    beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "channels", tuple(self.channels))
        ints = {"latent_dim": (self.latent_dim,), "kernel_size": (self.kernel_size,), "stride": (self.stride,),
                "input_shape": self.input_shape, "channels": self.channels}
        for name, values in ints.items():
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be positive whole numbers, got {getattr(self, name)!r}")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding must be a whole number >= 0, got {self.padding!r}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {self.reconstruction!r}")
        if not isinstance(self.beta, (int, float)) or not 0.0 <= self.beta < float("inf"):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))
        self.conv_shapes()  # raises if the input is too small for the conv stack

    def conv_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) after each encoder conv layer; ValueError if a layer would have no output."""
        _, height, width = self.input_shape
        shapes = []
        for layer, channels in enumerate(self.channels, start=1):
            height, width = (_conv_out(d, self.kernel_size, self.stride, self.padding) for d in (height, width))
            if height < 1 or width < 1:
                raise ValueError(
                    f"input {self.input_shape[1]}x{self.input_shape[2]} is too small for {len(self.channels)} conv "
                    f"layers (kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}): layer "
                    f"{layer} has no output; use fewer channels or larger frames"
                )
            shapes.append((channels, height, width))
        return shapes

    @property
    def feature_dim(self) -> int:
        """Size of the flattened output of the last conv layer."""
        c, h, w = self.conv_shapes()[-1]
        return c * h * w

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {**data, "input_shape": list(self.input_shape), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, Mapping) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"not a VAE config (unknown keys {extra})")
        return cls(**data)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float32 in [0, 1]; float tensors pass through unchanged."""
    return x.to(torch.float32) * (1.0 / 255.0) if x.dtype == torch.uint8 else x


class VAEEncoder(nn.Module):
    """q(z | x): (N, C, H, W) images -> (mu, logvar), each (N, latent_dim).

    Accepts float in [0, 1] or uint8 0..255 (converted). `output_dim` == latent_dim is the
    size of `encode_mean`, the features an actor/critic uses; `feature_dim` is the size of
    the flattened conv features (`features`) for a head that wants more than the latent.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = config.input_shape[0]
        for out_channels in config.channels:
            layers += [nn.Conv2d(in_channels, out_channels, config.kernel_size, config.stride, config.padding),
                       nn.ReLU()]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.feature_dim = config.feature_dim
        self.output_dim = config.latent_dim
        self.mu = nn.Linear(self.feature_dim, config.latent_dim)
        self.logvar = nn.Linear(self.feature_dim, config.latent_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> flattened conv features (N, feature_dim)."""
        return self.convs(to_unit_float(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic features: the posterior mean, (N, latent_dim)."""
        return self.mu(self.features(x))


class VAEDecoder(nn.Module):
    """p(x | z): (N, latent_dim) -> images (N, C, H, W) in [0, 1], mirroring the encoder."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        shapes = config.conv_shapes()
        self.start_shape = shapes[-1]
        self.fc = nn.Linear(config.latent_dim, config.feature_dim)
        # Layer i of the decoder undoes encoder layer n-1-i; output_padding adds back the
        # row/column the strided conv dropped, so the output size equals the input size.
        sizes_in = [config.input_shape] + shapes[:-1]  # what each encoder layer received
        layers: list[nn.Module] = []
        for index in reversed(range(len(shapes))):
            target = sizes_in[index]
            out_channels = target[0]
            paddings = tuple((d + 2 * config.padding - config.kernel_size) % config.stride for d in target[1:])
            layers.append(nn.ConvTranspose2d(shapes[index][0], out_channels, config.kernel_size, config.stride,
                                             config.padding, output_padding=paddings))
            if index > 0:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) -> pre-sigmoid outputs (N, C, H, W)."""
        h = F.relu(self.fc(z)).view(-1, *self.start_shape)
        return self.deconvs(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))


class VAE(nn.Module):
    """Encoder + reparameterization + decoder. forward(x) -> (recon, mu, logvar)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = VAEEncoder(config)
        self.decoder = VAEDecoder(config)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from `generator` (reproducible)."""
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """x (N, C, H, W) -> recon (N, C, H, W) in [0, 1], mu and logvar (N, latent_dim)."""
        mu, logvar = self.encoder(x)
        return self.decoder(self.reparameterize(mu, logvar, generator)), mu, logvar

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, latent_dim) posterior means."""
        return self.encoder.encode_mean(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction decode(mu): (N, C, H, W) -> (N, C, H, W) in [0, 1]."""
        return self.decoder(self.encode_mean(x))


# ---------------------------------------------------------------------------- losses
def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Per-sample reconstruction error summed over pixels: (N, ...) x2 -> (N,).

    "bce": -[t log r + (1 - t) log(1 - r)] (log clamped at -100 as torch does);
    "mse": (r - t)**2. Both take recon and target in [0, 1].
    """
    if kind not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {kind!r}")
    if recon.shape != target.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
    if kind == "bce":
        per_pixel = F.binary_cross_entropy(recon, target, reduction="none")
    else:
        per_pixel = (recon - target) ** 2
    return per_pixel.flatten(1).sum(dim=1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample: (N, L) x2 -> (N,); zero at mu=0, logvar=0."""
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def vae_loss(recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0, reconstruction: str = "bce") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, recon_term, kl_term), scalars averaged over the batch: loss = recon + beta * kl."""
    recon_term = reconstruction_loss(recon, target, reconstruction).mean()
    kl_term = kl_divergence(mu, logvar).mean()
    return recon_term + beta * kl_term, recon_term, kl_term


# ----------------------------------------------------------------------------- files
def _crc32(tensor: torch.Tensor) -> int:
    if tensor.numel() == 0:
        return zlib.crc32(b"")
    return zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, suffix: str = ".tmp") -> None:
    """Call write(temp_path as str) for a temp file in `path`'s folder, then fsync and rename it
    onto `path` (rlcontrol.training.atomic): the old file or the complete new one, never a
    partial write; the temp file is removed if anything fails."""
    from rlcontrol.training.atomic import atomic_write as write_atomically

    write_atomically(path, lambda temp: write(str(temp)), suffix=suffix)


def save_vae(model: VAE, path: str | os.PathLike, *, preprocessing: Any = None,
             extra: Mapping[str, Any] | None = None) -> None:
    """Write `model`'s weights and JSON header to `path` (safetensors, atomically).

    preprocessing: an `ImagePreprocessing` (or its dict) describing how frames were made,
    so deployment can rebuild the same pipeline; extra: any JSON-able facts (env id, ...).
    """
    if hasattr(preprocessing, "to_dict"):
        preprocessing = preprocessing.to_dict()
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    header = {"format": FORMAT, "config": model.config.to_dict(), "input_shape": list(model.config.input_shape),
              "preprocessing": preprocessing, "extra": dict(extra or {})}
    metadata = {METADATA_KEY: json.dumps(header),
                CHECKSUM_KEY: json.dumps({name: _crc32(t) for name, t in tensors.items()})}
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def _read(path: str | os.PathLike, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict, dict]:
    return read_checked_file(path, with_tensors, what="VAE", metadata_key=METADATA_KEY, checksum_key=CHECKSUM_KEY,
                             file_format=FORMAT)


def read_checked_file(path: str | os.PathLike, with_tensors: bool, *, what: str, metadata_key: str,
                      checksum_key: str, file_format: str) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, JSON header, per-tensor CRC-32s) of an rlcontrol safetensors file whose header
    (`metadata_key`) says `file_format`; every problem is one VAEFileError line naming `what` the
    file should be. The checksums are returned, not checked (the caller checks what it loads)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VAEFileError(f"{what} file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            raw = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()} if with_tensors else {}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise VAEFileError(f"{path}: not a readable safetensors file (truncated or corrupted?): "
                           f"{_one_line(error)}") from None
    if metadata_key not in raw or checksum_key not in raw:
        raise VAEFileError(f"{path}: a safetensors file but not an rlcontrol {what} (no {metadata_key!r} header)")
    try:
        header, checksums = json.loads(raw[metadata_key]), json.loads(raw[checksum_key])
    except json.JSONDecodeError as error:
        raise VAEFileError(f"{path}: {what} header is not valid JSON: {_one_line(error)}") from None
    if not isinstance(header, dict) or not isinstance(checksums, dict) or header.get("format") != file_format:
        raise VAEFileError(f"{path}: unsupported {what} header (expected format {file_format!r})")
    return tensors, header, checksums


def read_vae_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a VAE file (format, config, input_shape, preprocessing, extra)
    without reading the weights."""
    return _read(path, with_tensors=False)[1]


def load_vae(path: str | os.PathLike, *, expected_input_shape: tuple[int, int, int] | None = None
             ) -> tuple[VAE, dict[str, Any]]:
    """Rebuild a VAE from `save_vae`'s file -> (model in eval mode, header dict).

    Raises VAEFileError (one line) if the file is missing, truncated, corrupted, not a VAE
    file, its weights do not fit its config, or its input shape is not `expected_input_shape`.
    """
    tensors, header, checksums = _read(path, with_tensors=True)
    try:
        config = VAEConfig.from_dict(header.get("config"))
    except (TypeError, ValueError) as error:
        raise VAEFileError(f"{path}: bad VAE config in header: {_one_line(error)}") from None
    if expected_input_shape is not None and tuple(config.input_shape) != tuple(expected_input_shape):
        raise VAEFileError(f"{path}: VAE takes input {tuple(config.input_shape)}, "
                           f"expected {tuple(expected_input_shape)}")
    if set(checksums) != set(tensors):
        raise VAEFileError(f"{path}: tensors do not match the checksummed names (corrupted header?)")
    corrupted = sorted(name for name, tensor in tensors.items() if _crc32(tensor) != checksums[name])
    if corrupted:
        raise VAEFileError(f"{path}: checksum mismatch (corrupted data) in {corrupted[:3]}"
                           f"{' and more' if len(corrupted) > 3 else ''}")
    model = VAE(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        differing = sorted(n for n in set(expected) | set(found) if expected.get(n) != found.get(n))
        raise VAEFileError(f"{path}: weights do not fit the config in its header (differ: {differing[:3]})")
    model.load_state_dict(tensors)
    return model.eval(), header


def load_encoder(path: str | os.PathLike, *, trainable: bool = False,
                 expected_input_shape: tuple[int, int, int] | None = None) -> VAEEncoder:
    """The pretrained encoder alone, to plug into an actor/critic. trainable=False freezes it
    (requires_grad off, eval mode) for frozen features; True leaves it to be fine-tuned."""
    encoder = load_vae(path, expected_input_shape=expected_input_shape)[0].encoder
    encoder.requires_grad_(trainable)
    return encoder.train(trainable)
