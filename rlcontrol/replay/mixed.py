"""Offline data, then online: batches that mix a fixed offline replay file with the online replay.

QT-Opt (Kalashnikov et al. 2018) trained first on grasps collected earlier and then kept
mixing those with fresh on-robot experience. `replay.offline_replay: PATH` names a replay file
(`ReplayBuffer.save`, which is also what `rlcontrol bag-to-replay` writes) and
`replay.offline_ratio` the share of every batch drawn from it; the rest comes from the online
replay. Any agent trains on these batches: it only sees a `Batch`.

The offline file is read with safetensors (never unpickled), checked against the run's
observation layout and action size, and never written. A flat offline file (what
bag-to-replay writes) also serves a run with dict observations of the same total size: its
vectors are split into the run's parts (the flat order is the dict order).
"""

from __future__ import annotations

import json
import math
import os

import torch

from rlcontrol.replay.buffer import Batch, ReplayBuffer
from rlcontrol.replay.frame_pool import FrameReplayBuffer, PrioritizedFrameReplayBuffer
from rlcontrol.replay.obs_layout import ObsLayout
from rlcontrol.replay.prioritized import PrioritizedReplayBuffer
from rlcontrol.replay.safetensors_io import METADATA_KEY

_CLASSES = {cls.__name__: cls for cls in (ReplayBuffer, PrioritizedReplayBuffer, FrameReplayBuffer, PrioritizedFrameReplayBuffer)}


def load_replay_file(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> ReplayBuffer:
    """Load a saved replay of either class (the class named in the file's metadata).

    Raises FileNotFoundError for a missing file and ValueError for anything else that is not
    a complete, uncorrupted replay file (only the safetensors header is read to pick the class).
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"replay file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            name = json.loads((file.metadata() or {})[METADATA_KEY]).get("class")
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, AttributeError) as error:
        raise ValueError(f"{path}: not an rlcontrol replay file (truncated or corrupted?): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if name not in _CLASSES:
        raise ValueError(f"{path}: unknown replay class {name!r}")
    return _CLASSES[name].load(path, device=device)


def _split_flat(layout: ObsLayout, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, D) flat rows -> dict of (B, *part shape) views in layout order."""
    out, offset = {}, 0
    for name, part in layout.parts.items():
        size = math.prod(part.shape)
        out[name] = flat[:, offset:offset + size].reshape(-1, *part.shape)
        offset += size
    return out


def check_compatible(offline: ReplayBuffer, layout: ObsLayout, action_dim: int) -> bool:
    """Raise ValueError unless `offline` transitions fit a replay with `layout` and `action_dim`
    (the run's). Returns True when the offline observations are flat vectors to be split into
    the run's dict parts."""
    if offline.action_dim != action_dim:
        raise ValueError(f"it holds {offline.action_dim}-D actions, the task has {action_dim}")
    if len(offline) == 0:
        raise ValueError("it holds no transitions")
    mine, theirs = layout, offline.obs_layout
    if _structure(mine) == _structure(theirs):
        return False  # (float storage dtypes may differ: batches are cast to the run's)
    flat_size = sum(math.prod(p.shape) for p in mine.parts.values())
    if mine.is_dict and not theirs.is_dict and _structure(theirs) == {None: ((flat_size,), False)} \
            and not any(uint8 for _, uint8 in _structure(mine).values()):
        return True
    describe = lambda layout: {k or "obs": list(p.shape) for k, p in layout.parts.items()}  # noqa: E731
    raise ValueError(f"its observations {describe(theirs)} do not match the task's {describe(mine)}")


def _structure(layout: ObsLayout) -> dict:
    """part name -> (shape, stored as uint8)."""
    return {name: (part.shape, part.dtype == torch.uint8) for name, part in layout.parts.items()}


def check_normalized_actions(offline: ReplayBuffer) -> None:
    """The agents act in [-1, 1]^A; a recording whose actions were stored in physical units
    (bag-to-replay without the policy or action bounds) would teach them nonsense."""
    largest = float(offline._storage.read_field("action", len(offline)).abs().max())  # noqa: SLF001
    if largest > 1.0 + 1e-5:
        raise ValueError(f"its actions reach {largest:.3g}, outside [-1, 1]: they look physical, not normalized "
                         "(give bag-to-replay --policy or the action bounds)")


class MixedSampler:
    """Batches of `batch_size` with round(ratio * batch_size) offline transitions (sampled by the
    offline buffer: uniformly, or by its priorities) and the rest from the online replay.

    The online rows come first in every batch; `update_priorities` sends each part's new
    priorities back to its own buffer. Importance weights are each buffer's own (1 for uniform).
    """

    def __init__(self, online: ReplayBuffer, offline: ReplayBuffer, ratio: float):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"offline ratio must be in [0, 1], got {ratio}")
        self.online, self.offline, self.ratio = online, offline, float(ratio)
        self._split_offline = check_compatible(offline, online.obs_layout, online.action_dim)

    def counts(self, batch_size: int) -> tuple[int, int]:
        """(online rows, offline rows) of a batch of `batch_size`."""
        offline = int(round(self.ratio * batch_size))
        return batch_size - offline, offline

    def ready(self, batch_size: int) -> bool:
        """Enough online data for the online share (the loop's rule without offline data is
        len(replay) >= batch_size)."""
        return len(self.online) >= self.counts(batch_size)[0]

    def sample_offline(self, batch_size: int) -> Batch:
        """A batch from the offline data alone (pretraining), in the online replay's layout."""
        batch = self.offline.sample(batch_size)
        if not self._split_offline and self.offline.obs_layout.obs_dtype == self.online.obs_layout.obs_dtype:
            return batch
        return Batch(obs=self._as_online(batch.obs), action=batch.action, reward=batch.reward,
                     discount=batch.discount, next_obs=self._as_online(batch.next_obs), weights=batch.weights,
                     indices=batch.indices)

    def _as_online(self, obs):
        """Offline observations in the online replay's layout and storage dtypes."""
        layout = self.online.obs_layout
        if self._split_offline:
            obs = _split_flat(layout, obs)
        if isinstance(obs, dict):
            return {k: v.to(layout.parts[k].dtype) for k, v in obs.items()}
        return obs.to(layout.parts[None].dtype)

    def sample(self, batch_size: int) -> Batch:
        n_online, n_offline = self.counts(batch_size)
        if n_offline == 0:
            return self.online.sample(batch_size)
        if n_online == 0:
            return self.sample_offline(batch_size)
        a, b = self.online.sample(n_online), self.sample_offline(n_offline)
        cat = lambda x, y: torch.cat([x, y.to(x.device)])  # noqa: E731

        def join(x, y):
            return {k: cat(x[k], y[k]) for k in x} if isinstance(x, dict) else cat(x, y)

        return Batch(obs=join(a.obs, b.obs), action=cat(a.action, b.action), reward=cat(a.reward, b.reward),
                     discount=cat(a.discount, b.discount), next_obs=join(a.next_obs, b.next_obs),
                     weights=cat(a.weights, b.weights), indices=cat(a.indices, b.indices))

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities for a batch from `sample` (online rows first)."""
        n_online = len(indices) - self.counts(len(indices))[1]
        if hasattr(self.online, "update_priorities") and n_online:
            self.online.update_priorities(indices[:n_online], priorities[:n_online])
        if hasattr(self.offline, "update_priorities") and n_online < len(indices):
            self.offline.update_priorities(indices[n_online:], priorities[n_online:])

    def offline_observations(self, chunk: int = 16384):
        """Every offline observation (`obs` only) in chunks of rows, in the offline file's layout
        (a tensor, or a dict of tensors): for the running normalizer's statistics."""
        offline = self.offline
        for start in range(0, len(offline), chunk):
            indices = torch.arange(start, min(start + chunk, len(offline)), device=offline.device)
            yield offline.obs_layout.join("obs", offline._storage.gather(indices))  # noqa: SLF001

    # The offline buffer's sampling RNG is part of a run's state (a resumed run draws the same
    # offline rows); its transitions are not: they are re-read from the file.
    def rng_state(self) -> list[int]:
        return self.offline._generator.get_state().tolist()  # noqa: SLF001

    def set_rng_state(self, state: list[int]) -> None:
        self.offline._generator.set_state(torch.tensor(state, dtype=torch.uint8))  # noqa: SLF001
