"""Image encoders for the split networks: camera frames -> feature vectors that join the trunk.

"Learning to Drive in a Day" (Kendall et al. 2018) drove from a forward camera image, with the
convolutional encoder either trained with the actor-critic from raw pixels or pretrained as a
VAE (rlcontrol/vision/vae.py) and plugged in. Both are split-network encoders here
(networks/split.py: `agent.encoders.<part>.type: conv2d | vae`):

    conv2d: part (B, C*H*W) -> images (B, C, H, W) / 255 -> [Conv2d + ReLU] x len(hidden)
            -> flatten -> Linear(features) + ReLU -> (E, B, features)
    vae:    part (B, C*H*W) -> images (B, C, H, W) / 255 -> VAEEncoder.encode_mean
            -> (E, B, latent_dim), the posterior mean (deterministic, as exported)

The flat observation carries images as their raw 0..255 values (the learner's normalizer passes
image columns through), so the encoders scale by 1/255 themselves. 1/255 and then
`encode_mean` is bit for bit what `VAEEncoder.encode_mean(uint8 image)` computes.

Sharing across ensemble members: each network has ONE image encoder whose features are
expanded (a view, no copy) to its E members; the actor has its own, the critic ensemble its
own. Convolutions dominate an update on images, so E copies would cost E times as much, and
sharing the critic encoder between the twin critics is what DrQ and SAC-AE do; the members'
trunks (everything after the features) stay independent, so clipped double Q still has two
estimates. A shared encoder gets the sum of the members' gradients.

Frozen VAE (trainable: false): no gradients (requires_grad off, features computed under
no_grad, so autograd keeps no activations), always in eval mode, and its parameters are left
out of the optimizers and the Polyak update by the learner (which keeps only parameters that
require grad). Its weights remain in the network's state_dict, so checkpoints, policy.pt, eval
and the ONNX export carry and reproduce them. Fine-tuned (trainable: true): trained with the
network at the network's learning rate (no separate lr scale: FusedAdam has one lr); its
log-variance head, which the features never use, stays frozen.

Frozen features are computed once per batch and once per frame (`FrozenFeatureCache`): an update
runs the image through the actor, the critic, the target actor and the target critic, five encoder
passes of one function, since a frozen VAE is the same weights in all four networks; and replay
draws every frame into many batches over its life, each time asking for the same features. The cache is keyed
by the weights' content and compared on the input's content, so it needs no help from the
learner and cannot return features of other weights or other images.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from rlcontrol.vision.vae import VAEEncoder, VAEFileError, load_encoder

IMAGE_ENCODER_TYPES = ("conv2d", "vae")


def is_image_spec(spec) -> bool:
    """An image part: a uint8 array of shape (C, H, W) (what envs.make(pixels=True) gives)."""
    shape = tuple(getattr(spec, "shape", spec))
    return len(shape) == 3 and np.dtype(getattr(spec, "dtype", np.float32)) == np.uint8


def image_parts(obs_spec) -> list[str]:
    """Names of the image parts of an observation spec (none for a flat spec)."""
    if not isinstance(obs_spec, Mapping):
        return []
    return [name for name, spec in obs_spec.items() if is_image_spec(spec)]


def check_images_have_encoders(obs_spec, encoders: Mapping) -> None:
    """ValueError naming the first image part that has no image encoder.

    A flat MLP (or an mlp/conv1d encoder) on raw 0..255 pixels would train, badly and silently;
    the normalizer passes image columns through unscaled, so only an image encoder may read them.
    """
    for name in image_parts(obs_spec):
        enc = encoders.get(name)
        if enc is None or enc.type not in IMAGE_ENCODER_TYPES:
            shape = tuple(obs_spec[name].shape)
            raise ValueError(f"observation part {name!r} is an image (uint8 {shape}): give it an image encoder, "
                             f"agent.encoders.{name}: {{type: conv2d}} or {{type: vae, vae_path: FILE}}")


def to_images(part: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Flat raw pixels (B, C*H*W) with values 0..255 -> images (B, C, H, W) in [0, 1]."""
    return part.reshape(-1, *shape) * (1.0 / 255.0)


def _expand(features: torch.Tensor, ensemble_size: int) -> torch.Tensor:
    """(B, F) -> (E, B, F), a view: every member reads the same features."""
    return features.unsqueeze(0).expand(ensemble_size, -1, -1)


class Conv2dEncoder(nn.Module):
    """A conv stack trained with its network: part (B, C*H*W) raw pixels -> (E, B, features).

    Convolutions without padding ((n - kernel) // stride + 1 per layer), ReLU after each, then a
    linear projection to `features` with ReLU. One encoder shared by the E members (module doc).
    """

    def __init__(self, ensemble_size: int, image_shape: tuple[int, int, int], channels: Sequence[int], kernel: int,
                 stride: int, features: int):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        c, h, w = self.image_shape
        for c_out in channels:
            if min(h, w) < kernel:
                raise ValueError(f"conv2d encoder: a {h}x{w} feature map is smaller than the kernel ({kernel}); "
                                 "use fewer layers (hidden), a smaller kernel or stride, or larger images")
            layers += [nn.Conv2d(c, c_out, kernel, stride=stride), nn.ReLU()]
            c, h, w = c_out, (h - kernel) // stride + 1, (w - kernel) // stride + 1
        self.convs = nn.Sequential(*layers)
        self.project = nn.Linear(c * h * w, features)
        self.out_dim = features

    def forward(self, part: torch.Tensor) -> torch.Tensor:
        x = self.convs(to_images(part, self.image_shape)).flatten(1)  # (B, C_last * h * w)
        return _expand(torch.relu(self.project(x)), self.ensemble_size)


class FrozenFeatureCache:
    """Frozen encoders' features, remembered per batch and per frame, shared by all of them.

    Per batch: in one update the four networks (actor, critic and their targets) each hold a copy
    of the same frozen VAE, and see the same two batches (obs, next obs): 5 encoder passes of
    which 3 recompute features already computed. A hit needs the same weights (a digest of the
    parameter bytes, recomputed whenever a parameter is written: load_state_dict bumps its
    version) and an input equal element for element to a stored copy (torch.equal: a fraction
    of a millisecond, against tens for a pass).

    Per frame: replay hands every frame to the encoder again in each batch it is drawn into,
    ``batch x updates per transition`` times over its life (hundreds of times at a high replay
    ratio), and a frozen encoder gives the same features every time. So each frame's features are
    remembered, keyed by the weights' digest and a digest of the frame's bytes (BLAKE2b, 128 bits:
    ~2 ms for a batch of 128 64x64 frames, against ~2 x 10-30 ms of encoder passes), and a batch
    only encodes the frames it has not seen. Up to ``max_frames`` are kept (~0.3 kB each at 32
    latents), then the memory starts again empty. Frames must be raw 0..255 pixel values (what
    image parts are: the encoder scales them itself); anything else skips the per-frame memory.

    Inputs are copied in, features are returned as stored: consumers only read them (no_grad, no
    in-place ops in the trunks).
    """

    def __init__(self, max_entries: int = 4, max_frames: int = 200_000):
        self.max_entries = max_entries
        self.max_frames = max_frames
        self._entries: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self._frames: dict[tuple[str, bytes], torch.Tensor] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.frame_hits = 0
        self.frame_misses = 0

    @staticmethod
    def digest(module: nn.Module) -> str:
        """Content digest of a module's parameters and buffers, cached until one of them is written."""
        tensors = list(module.parameters()) + list(module.buffers())
        state = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = getattr(module, "_rlc_digest", None)
        if cached is None or cached[0] != state:
            h = hashlib.blake2b(digest_size=16)
            for t in tensors:
                h.update(str((tuple(t.shape), t.dtype)).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            cached = (state, h.hexdigest())
            object.__setattr__(module, "_rlc_digest", cached)
        return cached[1]

    def features(self, module: nn.Module, images: torch.Tensor, compute) -> torch.Tensor:
        """compute(images) under no_grad, or the stored result for equal weights and input."""
        key = self.digest(module)
        with self._lock:
            for entry_key, stored, features in self._entries:
                if entry_key == key and stored.shape == images.shape and stored.dtype == images.dtype \
                        and stored.device == images.device and torch.equal(stored, images):
                    self.hits += 1
                    return features
        with torch.no_grad():
            features = self._by_frame(key, images, compute)
        with self._lock:
            self.misses += 1
            if self.max_entries > 0:
                self._entries = [(key, images.detach().clone(), features)] + self._entries[:self.max_entries - 1]
        return features

    def _by_frame(self, key: str, images: torch.Tensor, compute) -> torch.Tensor:
        """compute(images), encoding only the rows (frames) not remembered for these weights."""
        if self.max_frames <= 0 or images.dim() != 2 or images.device.type != "cpu":
            return compute(images)
        pixels = images.to(torch.uint8)
        if not torch.equal(pixels.to(images.dtype), images):  # not raw pixel values: no per-frame key
            return compute(images)
        rows = pixels.numpy()
        keys = [(key, hashlib.blake2b(row.tobytes(), digest_size=16).digest()) for row in rows]
        with self._lock:
            known = [self._frames.get(k) for k in keys]
        missing = [i for i, f in enumerate(known) if f is None]
        self.frame_hits += len(keys) - len(missing)
        self.frame_misses += len(missing)
        if len(missing) == len(keys):
            out = compute(images)
        else:
            if missing:
                new = compute(images[missing])
                for j, i in enumerate(missing):
                    known[i] = new[j]
            out = torch.stack(known)
        with self._lock:
            if len(self._frames) + len(missing) > self.max_frames:
                self._frames = {}
            for i in missing:
                self._frames[keys[i]] = out[i].clone()
        return out

    def clear(self) -> None:
        with self._lock:
            self._entries = []
            self._frames = {}


FROZEN_FEATURES = FrozenFeatureCache()


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


class VAEImageEncoder(nn.Module):
    """A pretrained VAE's posterior mean: part (B, C*H*W) raw pixels -> (E, B, latent_dim).

    Frozen (trainable=False): computed once per call under no_grad and expanded to the E
    members, never trained, kept in eval mode whatever `train()` is asked.
    """

    def __init__(self, ensemble_size: int, encoder: VAEEncoder, trainable: bool):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.trainable = trainable
        self.image_shape = tuple(encoder.config.input_shape)
        self.encoder = encoder.requires_grad_(trainable).train(trainable)
        # encode_mean never reads the log-variance head: it stays as loaded (a parameter that
        # requires grad but is unused would make the learner's autograd.grad call fail).
        encoder.logvar.requires_grad_(False)
        self.out_dim = encoder.output_dim

    def train(self, mode: bool = True) -> VAEImageEncoder:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()
        return self

    def forward(self, part: torch.Tensor) -> torch.Tensor:
        if self.trainable:
            return _expand(self.encoder.encode_mean(to_images(part, self.image_shape)), self.ensemble_size)
        if _exporting() or part.shape[0] == 1:  # export traces the computation; acting gains nothing
            with torch.no_grad():
                return _expand(self.encoder.encode_mean(to_images(part, self.image_shape)), self.ensemble_size)
        features = FROZEN_FEATURES.features(
            self.encoder, part, lambda p: self.encoder.encode_mean(to_images(p, self.image_shape)))
        return _expand(features, self.ensemble_size)


def build_image_encoder(name: str, enc, spec, ensemble_size: int) -> nn.Module:
    """The encoder `enc` (an EncoderConfig of type conv2d or vae) for image part `name` of spec `spec`.

    ValueError (one line, naming the part) if the part is no uint8 (C, H, W) image, or the VAE
    file is missing, corrupted or made for another image shape (VAEFileError, also a ValueError).
    """
    shape = tuple(getattr(spec, "shape", spec))
    if not is_image_spec(spec):
        dtype = np.dtype(getattr(spec, "dtype", np.float32))
        raise ValueError(f"encoders.{name}: {enc.type} needs an image part (uint8 (C, H, W)), "
                         f"the part is {dtype} {shape}")
    if enc.type == "conv2d":
        return Conv2dEncoder(ensemble_size, shape, enc.hidden, enc.kernel, enc.stride, enc.features)
    if not enc.vae_path:
        raise ValueError(f"encoders.{name}: type vae needs vae_path (a file from `rlcontrol pretrain-vae`)")
    try:
        encoder = load_encoder(enc.vae_path, trainable=enc.trainable, expected_input_shape=shape)
    except VAEFileError as error:
        raise VAEFileError(f"encoders.{name}.vae_path: {error}") from None
    return VAEImageEncoder(ensemble_size, encoder, enc.trainable)
