"""QT-Opt's Q networks: E estimates of Q(s, a) evaluated together, split into encode and head.

CEM scores N candidate actions for every state, so a network is split where the action
enters: `encode(obs)` does the per-state work once, `head(features, action)` the per-pair
work, and `score_candidates` runs the head on all B x N pairs in one call. For a state MLP
nothing can be done before the action joins (encode is the identity); for images the conv
encoder runs once per image, not once per candidate, which is what makes CEM over an image
Q-function affordable.

Both return raw outputs ("logits"): Q itself for the squared loss, the logit of Q for the
cross-entropy loss (Q = sigmoid(logit), losses.q_value). CEM maximizes the raw output,
which has the same argmax either way.

Shapes: E ensemble members (2 for clipped double Q), B states, A action dims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rlcontrol.networks.critic import EnsembleCritic
from rlcontrol.networks.ensemble_linear import EnsembleLinear
from rlcontrol.networks.image_encoders import image_parts as pixel_parts  # uint8 (C, H, W) parts
from rlcontrol.networks.split import part_slices


def tile(features: torch.Tensor, n: int) -> torch.Tensor:
    """(..., B, F) -> (..., B*n, F): every state's row repeated n times, consecutively
    (expand + reshape, so the batch size stays dynamic in an ONNX trace)."""
    lead, width = features.shape[:-2], features.shape[-1]
    expanded = features.unsqueeze(-2).expand(*([-1] * (features.dim() - 1)), n, width)
    return expanded.reshape(*lead, -1, width)


class CandidateScoring(nn.Module):
    """The part common to both networks: score (B, N, A) candidates with one head call."""

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, features: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """obs (B, D) normalized flat observation, action (B, A) -> (E, B), or (B,) for `member`."""
        return self.head(self.encode(obs), action, member)

    def score_candidates(self, features: torch.Tensor, candidates: torch.Tensor, member: int = 0) -> torch.Tensor:
        """features from `encode` for B states, candidates (B, N, A) -> member's outputs (B, N)."""
        samples, action_dim = candidates.shape[1], candidates.shape[2]
        out = self.head(tile(features, samples), candidates.reshape(-1, action_dim), member)
        return out.reshape(-1, samples)


class StateQNetwork(CandidateScoring):
    """E MLPs on [s, a] (one batched matmul per layer: EnsembleCritic)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], ensemble_size: int):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.critic = EnsembleCritic(obs_dim, action_dim, hidden, ensemble_size=ensemble_size, out_dim=1)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return obs  # (B, D): the first layer mixes s and a, so nothing is per-state only

    def head(self, features: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        return self.critic(features, action, member)[..., 0]


class PixelQNetwork(CandidateScoring):
    """Q(image, state, a): a conv encoder per member on the image, then the state vector and
    the action join the image features and an MLP gives Q.

    QT-Opt (Kalashnikov et al. 2018, Fig. 6) convolves the camera image and merges the action
    and the gripper state after the first conv block (tiled and added to the feature map,
    then more convolutions). Here they join after the whole encoder, at the flat feature
    vector: CEM evaluates B x N pairs, and everything after the merge runs for every pair, so
    a merge into the feature map would run convolutions N (64) times per image.

    The flat observation carries the image as raw 0..255 values (the normalizer passes image
    columns through); the encoder scales it to [0, 1]. Each member has its own encoder (one
    grouped convolution per layer), so the E estimates stay independent, as in clipped double Q.
    """

    def __init__(self, obs_spec: Mapping, action_dim: int, hidden: Sequence[int], ensemble_size: int,
                 channels: Sequence[int] = (32, 32, 32), kernel: int = 3, stride: int = 2, features: int = 64):
        super().__init__()
        names = pixel_parts(obs_spec)
        if len(names) != 1:
            raise ValueError(f"a pixel Q network needs exactly one image part (uint8 (C, H, W)), got {names}")
        slices = part_slices(obs_spec)
        start, stop, (c_in, height, width) = slices[names[0]]
        self.ensemble_size = ensemble_size
        self.image_slice = (start, stop)
        self.image_shape = (c_in, height, width)
        self.state_slices = [(a, b) for name, (a, b, _) in slices.items() if name != names[0]]
        state_dim = sum(b - a for a, b in self.state_slices)
        convs, c, h, w = [], c_in, height, width
        for c_out in channels:
            if min(h, w) < kernel:
                raise ValueError(f"conv encoder: a {h}x{w} feature map is smaller than the kernel ({kernel}); "
                                 "use fewer conv_channels, a smaller conv_kernel or conv_stride, or larger images")
            convs.append(nn.Conv2d(ensemble_size * c, ensemble_size * c_out, kernel, stride=stride,
                                   groups=ensemble_size))
            c, h, w = c_out, (h - kernel) // stride + 1, (w - kernel) // stride + 1
        self.convs = nn.ModuleList(convs)
        self.conv_channels = c
        self.project = EnsembleLinear(ensemble_size, c * h * w, features)
        dims = [features + state_dim + action_dim, *hidden, 1]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims[:-1], dims[1:]))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (B, D) -> (E, B, features + state_dim)."""
        a, b = self.image_slice
        image = obs[:, a:b].reshape(-1, *self.image_shape) * (1.0 / 255.0)
        x = image.repeat(1, self.ensemble_size, 1, 1)  # (B, E*C, H, W): member g reads group g
        for conv in self.convs:
            x = torch.relu(conv(x))
        # (B, E*C, h, w) -> (E, B, C*h*w): group g's channels are g*C .. (g+1)*C - 1
        x = x.unflatten(1, (self.ensemble_size, self.conv_channels)).flatten(2).transpose(0, 1)
        x = torch.relu(self.project(x))
        if not self.state_slices:
            return x
        state = torch.cat([obs[:, a:b] for a, b in self.state_slices], dim=-1)
        return torch.cat([x, state.unsqueeze(0).expand(self.ensemble_size, -1, -1)], dim=-1)

    def head(self, features: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        *hidden, last = self.layers
        if member is not None:
            x = torch.cat([features[member], action], dim=-1)
            for layer in hidden:
                x = torch.relu(torch.addmm(layer.bias[member], x, layer.weight[member]))
            return torch.addmm(last.bias[member], x, last.weight[member])[:, 0]
        x = torch.cat([features, action.unsqueeze(0).expand(self.ensemble_size, -1, -1)], dim=-1)
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x)[..., 0]


def build_q_network(cfg, obs_spec, obs_dim: int, action_dim: int) -> CandidateScoring:
    """A PixelQNetwork when the observation has an image part, else a StateQNetwork on the flat vector."""
    if pixel_parts(obs_spec):
        return PixelQNetwork(obs_spec, action_dim, cfg.q_hidden, cfg.n_critics, channels=cfg.conv_channels,
                             kernel=cfg.conv_kernel, stride=cfg.conv_stride, features=cfg.conv_features)
    return StateQNetwork(obs_dim, action_dim, cfg.q_hidden, cfg.n_critics)
