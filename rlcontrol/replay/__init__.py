"""Experience replay for off-policy continuous control.

* :class:`NStepAccumulator` (actor side) turns 1-step transitions into n-step ones;
* :class:`ReplayBuffer` stores them and samples uniform :class:`Batch` es;
* :class:`PrioritizedReplayBuffer` samples proportionally to ``(|TD| + eps)^alpha`` via a
  :class:`SumTree` and returns importance weights;
* :class:`FrameReplayBuffer` / :class:`PrioritizedFrameReplayBuffer` store uint8 camera frames
  once (obs and next_obs, and overlapping frame stacks, share them by index);
* :func:`make_replay` picks one from config values (frame buffers for image observations);
* :class:`TransitionLog` appends 1-step transitions to a crash-safe on-disk log (live fine-tuning),
  :func:`read_log` / :class:`LogReader` read and follow it, and :func:`load_replay` /
  :class:`ReplayFeeder` move it into a replay buffer.

The learner's target for every batch is ``reward + discount * Q'(next_obs, .)``, whatever n was.
"""

from rlcontrol.replay.buffer import Batch, ReplayBuffer
from rlcontrol.replay.factory import make_replay
from rlcontrol.replay.frame_pool import FrameReplayBuffer, PrioritizedFrameReplayBuffer
from rlcontrol.replay.log_feed import ReplayFeeder, load_replay, replay_for_log
from rlcontrol.replay.nstep import NStepAccumulator
from rlcontrol.replay.prioritized import PrioritizedReplayBuffer
from rlcontrol.replay.sum_tree import SumTree
from rlcontrol.replay.transition_log import (
    LogCorruptError,
    LogReader,
    LogRecord,
    LogSchemaError,
    LogWriteError,
    TransitionLog,
    TransitionLogError,
    TransitionSchema,
    read_log,
)

__all__ = [
    "Batch",
    "FrameReplayBuffer",
    "LogCorruptError",
    "LogReader",
    "LogRecord",
    "LogSchemaError",
    "LogWriteError",
    "NStepAccumulator",
    "PrioritizedFrameReplayBuffer",
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "ReplayFeeder",
    "SumTree",
    "TransitionLog",
    "TransitionLogError",
    "TransitionSchema",
    "load_replay",
    "make_replay",
    "read_log",
    "replay_for_log",
]
