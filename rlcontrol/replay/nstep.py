"""n-step transition aggregation on the actor side (the "adder" of Acme).

Storing transitions already aggregated means the learner needs no knowledge of n, episode
boundaries or time limits: its target is always ``reward + discount * Q'(next_obs, .)``.
(n-step returns of off-policy data are biased towards the behaviour policy for n > 1; see the
lecture notes' caveat. That is the usual accepted trade for faster reward propagation.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlcontrol.replay.obs_layout import FIELD_SEPARATOR


def _copy_obs(obs: Any) -> np.ndarray | dict[str, np.ndarray]:
    """Own copy of an observation: environments may reuse (and overwrite) their output arrays."""
    if isinstance(obs, Mapping):
        return {name: np.array(part, copy=True) for name, part in obs.items()}
    return np.array(obs, copy=True)


@dataclass(frozen=True)
class _PendingStep:
    obs: np.ndarray | dict[str, np.ndarray]
    action: np.ndarray
    reward: float


class NStepAccumulator:
    """Turns a stream of 1-step transitions from ONE actor into n-step transitions.

    For each step t it eventually emits ``(obs_t, action_t, R, discount, next_obs)`` where
    ``R = sum_{k=0}^{m-1} gamma^k r_{t+k}``, ``m = min(n, steps until the episode ended)``,
    ``discount = gamma^m`` if the window ended without termination (truncation, or simply n steps),
    ``0.0`` if it ended at a termination, and ``next_obs = obs_{t+m}``. Truncated episodes bootstrap
    (discount ``gamma^m``), terminated ones do not. Windows never span two episodes.

    Observations may be arrays or dicts of arrays (named parts); they are copied on arrival.
    Emitted transitions are dicts with keys ``obs``, ``action`` (as given, copied), ``reward``
    (python float), ``discount`` (python float) and ``next_obs``: exactly what
    :meth:`ReplayBuffer.add` takes. Transitions flushed together at an episode end share one
    ``next_obs`` object (the final observation): treat emitted arrays as read-only.
    """

    def __init__(self, n: int, gamma: float) -> None:
        if int(n) < 1 or int(n) != n:
            raise ValueError(f"n must be an integer >= 1, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self._n = int(n)
        self._gamma = float(gamma)
        self._gamma_powers = [self._gamma**k for k in range(self._n + 1)]
        self._pending: deque[_PendingStep] = deque()

    @property
    def n(self) -> int:
        return self._n

    @property
    def gamma(self) -> float:
        return self._gamma

    def __len__(self) -> int:
        """Number of steps waiting for their window to complete (always < n between calls)."""
        return len(self._pending)

    def add(
        self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool
    ) -> list[dict]:
        """Record step ``(obs, action, reward, next_obs)`` and return the transitions it completes:
        none or one mid-episode; at an episode end (``terminated`` or ``truncated``) every pending
        one, oldest first. ``terminated`` wins if both flags are set."""
        self._pending.append(_PendingStep(_copy_obs(obs), np.array(action, copy=True), float(reward)))
        next_obs = _copy_obs(next_obs)
        if terminated or truncated:
            bootstrap = not terminated
            return [self._emit_oldest(next_obs, bootstrap) for _ in range(len(self._pending))]
        if len(self._pending) == self._n:
            return [self._emit_oldest(next_obs, bootstrap=True)]
        return []

    def _emit_oldest(self, next_obs: Any, bootstrap: bool) -> dict:
        """Pop the oldest pending step; its window is everything pending (m steps)."""
        window = len(self._pending)
        n_step_return = sum(self._gamma_powers[k] * step.reward for k, step in enumerate(self._pending))
        oldest = self._pending.popleft()
        return {
            "obs": oldest.obs,
            "action": oldest.action,
            "reward": n_step_return,
            "discount": self._gamma_powers[window] if bootstrap else 0.0,
            "next_obs": next_obs,
        }

    def reset(self) -> None:
        """Drop pending steps (at an episode start after an episode cut without an end flag)."""
        self._pending.clear()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, np.ndarray]:
        """The pending window as arrays (safetensors-friendly, no pickle). K = pending steps:
        ``n`` int64 (1,), ``gamma`` float64 (1,), ``reward`` float64 (K,), and when K > 0
        ``action`` (K, A) and ``obs`` (K, ...) or ``obs/<part>`` (K, ...) for dict observations."""
        state = {
            "n": np.array([self._n], dtype=np.int64),
            "gamma": np.array([self._gamma], dtype=np.float64),
            "reward": np.array([step.reward for step in self._pending], dtype=np.float64),
        }
        if self._pending:
            state["action"] = np.stack([step.action for step in self._pending])
            first_obs = self._pending[0].obs
            if isinstance(first_obs, dict):
                for name in first_obs:
                    state[f"obs{FIELD_SEPARATOR}{name}"] = np.stack(
                        [step.obs[name] for step in self._pending]
                    )
            else:
                state["obs"] = np.stack([step.obs for step in self._pending])
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict`; raises ValueError if it is malformed or was made with a
        different n or gamma (the pending returns would mean something else)."""
        try:
            n, gamma = (
                int(np.asarray(state["n"]).reshape(-1)[0]),
                float(np.asarray(state["gamma"]).reshape(-1)[0]),
            )
            rewards = np.asarray(state["reward"], dtype=np.float64).reshape(-1)
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"malformed NStepAccumulator state: {error}") from error
        if (n, gamma) != (self._n, self._gamma):
            raise ValueError(
                f"NStepAccumulator state is for n={n}, gamma={gamma}; this one has n={self._n}, gamma={self._gamma}"
            )
        count = rewards.size
        if count >= self._n:
            raise ValueError(
                f"NStepAccumulator state has {count} pending steps; at most n-1={self._n - 1} are possible"
            )
        steps = []
        if count:
            obs_rows, actions = _pending_arrays(state, count)
            for i in range(count):
                obs = (
                    {name: rows[i].copy() for name, rows in obs_rows.items()}
                    if isinstance(obs_rows, dict)
                    else obs_rows[i].copy()
                )
                steps.append(_PendingStep(obs, actions[i].copy(), float(rewards[i])))
        self._pending = deque(steps)


def _pending_arrays(
    state: Mapping[str, np.ndarray], count: int
) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
    """The stacked pending observations (array, or dict part -> array) and actions of a state
    with ``count`` pending steps; ValueError if they are missing or of the wrong length."""
    prefix = f"obs{FIELD_SEPARATOR}"
    obs_parts = {
        key[len(prefix) :]: np.asarray(value) for key, value in state.items() if key.startswith(prefix)
    }
    if "action" not in state or ("obs" in state) == bool(obs_parts):
        raise ValueError(
            "malformed NStepAccumulator state: needs 'action' and either 'obs' or 'obs/<part>' arrays"
        )
    obs_rows = np.asarray(state["obs"]) if "obs" in state else obs_parts
    actions = np.asarray(state["action"])
    arrays = [actions, *(obs_parts.values() if obs_parts else [obs_rows])]
    if any(array.ndim == 0 or len(array) != count for array in arrays):
        raise ValueError(f"malformed NStepAccumulator state: obs/action arrays do not have {count} rows")
    return obs_rows, actions
