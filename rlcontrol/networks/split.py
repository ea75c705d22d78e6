"""Split ("parkour") networks: observation parts enter the network at different layers.

Heess et al. (2017, seed 003 "Parkour networks"): proprioception and terrain carry different
information, so the terrain goes through its own encoder (an MLP, or a 1-D convolution over
a height profile) and joins the proprioceptive stream at a later layer, in both the actor
and the critic. Camera images get a 2-D conv stack or a pretrained VAE encoder
(networks/image_encoders.py), which join the same way.

Every network here still takes the *flat* observation vector the rest of rlcontrol uses
(dict parts concatenated in spec order, normalized as one vector) and slices the parts back
out. That keeps replay, the running normalizer, checkpoints and the ONNX export unchanged:
the exported graph receives named inputs, concatenates them, and this module splits them.

Layer indexing: a trunk with hidden widths (h_1, ..., h_L) has L+1 affine layers. A part
that `join`s at j is concatenated to the input of layer j: 0 is the trunk's input (where
parts without an encoder, and the critic's action, enter), j in 1..L is the output of
hidden layer j. Everything is evaluated for E ensemble members at once (EnsembleLinear and
grouped convolutions), so TD3's twin critics stay one batched call per layer; image encoders
are the exception: one per network, its features shared by the E members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from rlcontrol.networks.critic import hidden_step
from rlcontrol.networks.ensemble_linear import EnsembleLayerNorm, EnsembleLinear
from rlcontrol.networks.image_encoders import IMAGE_ENCODER_TYPES, build_image_encoder


def part_slices(obs_spec: Mapping) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """name -> (start, stop, shape) of each part inside the flat observation vector (spec order)."""
    out, offset = {}, 0
    for name, spec in obs_spec.items():
        shape = tuple(getattr(spec, "shape", spec))
        size = int(np.prod(shape)) if shape else 1
        out[name] = (offset, offset + size, shape)
        offset += size
    return out


class MLPEncoder(nn.Module):
    """E parallel MLPs (ReLU after every layer): part (B, D) -> features (E, B, hidden[-1])."""

    def __init__(self, ensemble_size: int, in_dim: int, hidden: Sequence[int]):
        super().__init__()
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


class Conv1dEncoder(nn.Module):
    """E parallel 1-D conv stacks over a profile (e.g. terrain heights ahead of the body).

    part (B, L) -> features (E, B, C_last * L_out). The E members are the groups of one
    grouped convolution per layer, so an ensemble costs one kernel call, as with EnsembleLinear.
    """

    def __init__(self, ensemble_size: int, length: int, channels: Sequence[int], kernel: int, stride: int):
        super().__init__()
        self.ensemble_size = ensemble_size
        layers, c_in, n = [], 1, length
        for c_out in channels:
            if n < kernel:
                raise ValueError(f"conv1d encoder: a profile of length {n} is shorter than the kernel ({kernel}); "
                                 "use fewer layers, a smaller kernel or stride, or an mlp encoder")
            layers.append(nn.Conv1d(ensemble_size * c_in, ensemble_size * c_out, kernel, stride=stride,
                                    groups=ensemble_size))
            c_in, n = c_out, (n - kernel) // stride + 1
        self.layers = nn.ModuleList(layers)
        self.out_dim = c_in * n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        x = x.reshape(batch, 1, -1).expand(batch, self.ensemble_size, -1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        # (B, E*C, L) -> (E, B, C*L): group g's channels are g*C .. (g+1)*C - 1
        return x.reshape(batch, self.ensemble_size, -1).transpose(0, 1)


class SplitTrunk(nn.Module):
    """E parallel trunks over a flat observation whose parts join at the layers `encoders` name.

    forward(obs (B, D), extra (B, X) or None) -> (E, B, out_dim). `extra` (the critic's
    action) enters at the input with the parts that have no encoder.
    """

    def __init__(self, obs_spec: Mapping, encoders: Mapping, hidden: Sequence[int], out_dim: int,
                 ensemble_size: int = 1, extra_dim: int = 0, *, layer_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        # The trunk's hidden layers as EnsembleCritic's: Linear -> Dropout -> LayerNorm -> ReLU.
        self.dropout_p = float(dropout)
        self.dropout_generator: torch.Generator | None = None  # set by the agent
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, w) for w in hidden) if layer_norm else None
        slices = part_slices(obs_spec)
        unknown = sorted(set(encoders) - set(slices))
        if unknown:
            raise ValueError(f"encoders name observation parts {unknown} that the environment does not have "
                             f"(its parts: {list(slices)})")
        depth = len(hidden)
        self.ensemble_size = ensemble_size
        self.direct = [(a, b) for name, (a, b, _) in slices.items() if name not in encoders]
        self.encoder_names = [name for name in slices if name in encoders]
        self.encoder_slices = [slices[name][:2] for name in self.encoder_names]
        self.joins = []
        encoder_modules, join_dims = [], [0] * (depth + 1)
        for name in self.encoder_names:
            enc = encoders[name]
            if enc.join > depth:
                raise ValueError(f"encoders.{name}.join is {enc.join}, but the trunk has only {depth} hidden "
                                 f"layers (join must be 0..{depth})")
            start, stop, shape = slices[name]
            if enc.type in IMAGE_ENCODER_TYPES:  # conv2d / vae: one encoder shared by the E members
                module = build_image_encoder(name, enc, obs_spec[name], ensemble_size)
            elif enc.type == "conv1d":
                if len(shape) != 1:
                    raise ValueError(f"encoders.{name}: conv1d needs a 1-D profile, the part has shape {shape}")
                module = Conv1dEncoder(ensemble_size, stop - start, enc.hidden, enc.kernel, enc.stride)
            else:
                module = MLPEncoder(ensemble_size, stop - start, enc.hidden)
            encoder_modules.append(module)
            self.joins.append(enc.join)
            join_dims[enc.join] += module.out_dim
        self.encoders = nn.ModuleList(encoder_modules)
        input_dim = sum(b - a for a, b in self.direct) + extra_dim
        if input_dim + join_dims[0] == 0:
            raise ValueError("split network: nothing enters the trunk's first layer; give at least one part "
                             "no encoder, or join an encoder at 0")
        dims_in = [input_dim + join_dims[0]] + [h + join_dims[j + 1] for j, h in enumerate(hidden)]
        dims_out = [*hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, obs: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        e, batch = self.ensemble_size, obs.shape[0]
        joining: list[list[torch.Tensor]] = [[] for _ in self.layers]
        for (a, b), module, join in zip(self.encoder_slices, self.encoders, self.joins):
            joining[join].append(module(obs[:, a:b]))
        inputs = [obs[:, a:b] for a, b in self.direct]
        if extra is not None:
            inputs.append(extra)
        x = torch.cat(inputs, dim=-1) if inputs else obs.new_zeros(batch, 0)
        x = x.unsqueeze(0).expand(e, batch, x.shape[-1])
        last = len(self.layers) - 1
        for j, layer in enumerate(self.layers):
            if joining[j]:
                x = torch.cat([x, *joining[j]], dim=-1)
            x = layer(x)
            if j < last:
                norm = self.norms[j] if self.norms is not None else None
                x = hidden_step(x, norm, self.dropout_p, self.dropout_generator, self.training)
        return x


class SplitActor(nn.Module):
    """a = tanh(trunk(s)), the split counterpart of DeterministicActor: flat obs (B, D) -> (B, A)."""

    def __init__(self, obs_spec: Mapping, encoders: Mapping, action_dim: int, hidden: Sequence[int] = (256, 256),
                 *, layer_norm: bool = False):
        super().__init__()
        self.obs_dim = part_slices_total(obs_spec)
        self.action_dim = action_dim
        self.trunk = SplitTrunk(obs_spec, encoders, hidden, action_dim, ensemble_size=1, layer_norm=layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.trunk(obs)[0])


class SplitMLP(nn.Module):
    """One split trunk with a linear output: flat obs (B, D) -> (B, out_dim). SAC's Gaussian actor
    uses it as its body (out_dim = 2A: mean and log-std)."""

    def __init__(self, obs_spec: Mapping, encoders: Mapping, out_dim: int, hidden: Sequence[int] = (256, 256),
                 *, layer_norm: bool = False):
        super().__init__()
        self.trunk = SplitTrunk(obs_spec, encoders, hidden, out_dim, ensemble_size=1, layer_norm=layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(obs)[0]


class SplitEnsembleCritic(nn.Module):
    """The split counterpart of EnsembleCritic: (obs (B, D), action (B, A)) -> (E, B, out_dim)."""

    def __init__(self, obs_spec: Mapping, encoders: Mapping, action_dim: int, hidden: Sequence[int] = (256, 256),
                 ensemble_size: int = 2, out_dim: int = 1, *, layer_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.ensemble_size = ensemble_size
        self.out_dim = out_dim
        self.trunk = SplitTrunk(obs_spec, encoders, hidden, out_dim, ensemble_size=ensemble_size,
                                extra_dim=action_dim, layer_norm=layer_norm, dropout=dropout)

    @property
    def dropout_generator(self) -> torch.Generator | None:
        return self.trunk.dropout_generator

    @dropout_generator.setter
    def dropout_generator(self, generator: torch.Generator | None) -> None:
        self.trunk.dropout_generator = generator

    def forward(self, obs: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        # All members are evaluated even for `member=i` (one grouped call per layer; slicing
        # the grouped weights per member would cost more than it saves).
        out = self.trunk(obs, action)
        return out if member is None else out[member]


def part_slices_total(obs_spec: Mapping) -> int:
    slices = part_slices(obs_spec)
    return max((b for _, b, _ in slices.values()), default=0)
