"""From a transition log (:mod:`rlcontrol.replay.transition_log`) into the in-memory replay.

The log holds 1-step transitions; :class:`ReplayFeeder` turns them into n-step ones with one
:class:`NStepAccumulator` and adds them to any :class:`ReplayBuffer` (uniform, prioritized, frame
pool), once for what is already in the log and then incrementally with :meth:`ReplayFeeder.poll`.

Episode boundaries come from the records: ``terminated`` ends a window without bootstrapping,
``truncated`` (time limits, safety interventions) with it. A record is held back until the next
one shows whether its episode goes on (same ``episode``, ``step + 1``); when it does not (the
learner crashed mid-episode, records were skipped, an intervention was dropped) the held record
is fed as truncated: its windows stop there and bootstrap from its ``next_obs``, exact for the
steps they hold, and no window ever spans a gap.

Undo records (an operator withdrew an episode, ``log_format.undo_record``) are collected in
``undone``; the records of ``excluded`` episodes are left out. A feeder cannot take rows back out
of a replay, so the owner of the replay rebuilds it when ``undone`` grows (sim2real.finetune
does: a new replay fed from the whole log with ``excluded=undone``).
"""

from __future__ import annotations

import os
from typing import Any

from rlcontrol.replay.buffer import ReplayBuffer
from rlcontrol.replay.factory import make_replay
from rlcontrol.replay.log_format import LogRecord, LogSchemaError, TransitionSchema
from rlcontrol.replay.nstep import NStepAccumulator
from rlcontrol.replay.transition_log import LogReader


def replay_for_log(schema: TransitionSchema, capacity: int, *, prioritized: bool = False, **kwargs: Any) -> ReplayBuffer:
    """:func:`make_replay` for a log's observations and actions (``kwargs`` go to it as given)."""
    return make_replay(capacity, schema.obs_spec(), schema.action_dim, prioritized=prioritized, **kwargs)


def _check_fits(schema: TransitionSchema, replay: ReplayBuffer) -> None:
    """LogSchemaError unless the log's observation parts and action size are the replay's."""
    layout = replay.obs_layout
    log_parts = {name: field.shape for name, field in schema.obs_parts.items()}
    replay_parts = {name: part.shape for name, part in layout.parts.items()}
    if log_parts != replay_parts or schema.action_dim != replay.action_dim:
        raise LogSchemaError(f"replay log observations {log_parts} / action_dim {schema.action_dim} do not fit "
                             f"the replay's {replay_parts} / {replay.action_dim}")


class ReplayFeeder:
    """Moves log records into ``replay`` as n-step transitions (``n_step``, ``gamma``).

    ``skip_interventions``: leave out records labelled ``intervention`` (the safety layer's
    command, not the policy's); they cut the episode like a gap does.
    """

    def __init__(self, log: LogReader | str | os.PathLike, replay: ReplayBuffer, *, n_step: int = 1,
                 gamma: float = 0.99, skip_interventions: bool = False, excluded: set[int] | None = None) -> None:
        self.reader = log if isinstance(log, LogReader) else LogReader(log)
        self.replay = replay
        self.skip_interventions = skip_interventions
        self._accumulator = NStepAccumulator(n_step, gamma)
        self._held: LogRecord | None = None
        self._checked = False
        self.records = 0  # records read from the log
        self.added = 0  # n-step transitions added to the replay
        self.cuts = 0  # episodes cut without an end flag (gaps, dropped interventions, flush)
        self.skipped = 0  # intervention records left out
        self.excluded = set(excluded or ())  # episodes whose records are left out
        self.undone: set[int] = set()  # episodes withdrawn by undo records read so far
        self.left_out = 0  # records of excluded episodes
        self.undos = 0  # undo records read

    def poll(self, max_records: int | None = None) -> int:
        """Read what was appended since the last call into the replay; returns transitions added."""
        records = self.reader.tail(max_records)
        if records and not self._checked:
            _check_fits(self.reader.schema, self.replay)
            self._checked = True
        before = self.added
        for record in records:
            self._take(record)
        self.records += len(records)
        return self.added - before

    def flush(self) -> int:
        """Feed the held-back last record as an episode end (truncated, unless it terminated):
        for a log at rest, or before training on a replay that must hold every record."""
        before = self.added
        if self._held is not None:
            self._feed(self._held, cut=True)
            self._held = None
        return self.added - before

    def _take(self, record: LogRecord) -> None:
        held = self._held
        if record.undo:
            self.undone.add(record.episode)
            self.undos += 1
            return
        if record.episode in self.excluded:
            self.left_out += 1
            return
        if self.skip_interventions and record.intervention:
            self.skipped += 1
            self.flush()
            return
        if held is not None:
            continues = record.episode == held.episode and record.step == held.step + 1
            self._feed(held, cut=not continues)
        self._held = record

    def _feed(self, record: LogRecord, cut: bool) -> None:
        ended = record.terminated or record.truncated
        if cut and not ended:
            self.cuts += 1
        truncated = record.truncated or (cut and not record.terminated)
        for transition in self._accumulator.add(record.obs, record.action, record.reward, record.next_obs,
                                                record.terminated, truncated):
            self.replay.add(transition)
            self.added += 1


def load_replay(log: LogReader | str | os.PathLike, replay: ReplayBuffer, *, n_step: int = 1,
                gamma: float = 0.99, skip_interventions: bool = False) -> ReplayFeeder:
    """Fill ``replay`` with everything in the log now (the last record included, see
    :meth:`ReplayFeeder.flush`); the returned feeder's :meth:`~ReplayFeeder.poll` continues with
    the records appended later."""
    feeder = ReplayFeeder(log, replay, n_step=n_step, gamma=gamma, skip_interventions=skip_interventions)
    feeder.poll()
    feeder.flush()
    return feeder
