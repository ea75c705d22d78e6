"""Deterministic transitions for the transition-log tests, and the writer process they kill.

Every field of transition ``seq`` is a function of ``seq``, so a record read back after crashes
and reopens can be checked on its own. As a script (run by the tests in a subprocess):

    python transition_log_helpers.py append DIR KIND FSYNC   # append forever, print each seq
    python transition_log_helpers.py fill DIR KIND LIMIT     # RLIMIT_FSIZE=LIMIT, append until it fails
    python transition_log_helpers.py stream DIR KIND COUNT   # append COUNT records in small bursts
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

EPISODE_STEPS = 20


def make_schema(kind: str):
    from rlcontrol.replay.transition_log import TransitionSchema

    if kind == "image":  # dict observation: a uint8 camera image and joint readings
        return TransitionSchema.for_transitions({"camera": np.zeros((3, 64, 64), np.uint8), "joints": (7,)}, 2)
    if kind == "small_image":
        return TransitionSchema.for_transitions({"camera": np.zeros((3, 8, 8), np.uint8), "joints": (3,)}, 2)
    return TransitionSchema.for_transitions((17,), 6)  # flat state


def _obs(schema, seq: int) -> dict | np.ndarray:
    parts = {}
    for name, field in schema.obs_parts.items():
        if field.dtype == "uint8":
            parts[name] = ((np.arange(np.prod(field.shape)) + seq) % 251).astype(np.uint8).reshape(field.shape)
        else:
            parts[name] = (seq + np.arange(np.prod(field.shape)) / 8).astype(field.dtype).reshape(field.shape)
    return parts[None] if None in parts else parts


def transition(schema, seq: int) -> dict:
    step = seq % EPISODE_STEPS
    episode = seq // EPISODE_STEPS
    last = step == EPISODE_STEPS - 1
    return {"obs": _obs(schema, seq), "next_obs": _obs(schema, seq + 1),
            "action": np.full(schema.action_dim, seq / 1000, np.float32), "reward": seq / 10,
            "terminated": last and episode % 2 == 0, "truncated": last and episode % 2 == 1,
            "intervention": seq % 13 == 12, "episode": episode, "step": step, "time": 1e9 + seq}


def check_record(schema, record) -> None:
    """AssertionError unless ``record`` holds exactly transition(record.seq)."""
    expected = transition(schema, record.seq)
    for key in ("obs", "next_obs"):
        got, want = getattr(record, key), expected[key]
        if isinstance(want, dict):
            assert got.keys() == want.keys()
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
                assert got[name].dtype == want[name].dtype
        else:
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(record.action, expected["action"])
    assert record.reward == np.float32(expected["reward"])
    for key in ("terminated", "truncated", "intervention", "episode", "step", "time"):
        assert getattr(record, key) == expected[key], (key, record.seq)


def _append_forever(directory: str, kind: str, fsync: str) -> None:
    from rlcontrol.replay.transition_log import TransitionLog

    schema = make_schema(kind)
    with TransitionLog.open(directory, schema, fsync=fsync, segment_bytes=2**20) as log:
        print(json.dumps({"opened_at": log.next_seq}), flush=True)
        while True:
            seq = log.append(transition(schema, log.next_seq))
            print(seq, flush=True)  # after append: fsynced for "every", written for "none"


def _fill(directory: str, kind: str, limit: int) -> None:
    import resource

    from rlcontrol.replay.transition_log import LogWriteError, TransitionLog

    schema = make_schema(kind)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    errors = []
    with TransitionLog.open(directory, schema, fsync="none") as log:
        while len(errors) < 2:  # the second failure must leave the file as clean as the first
            try:
                log.append(transition(schema, log.next_seq))
            except LogWriteError as error:
                errors.append(str(error))
        acked = log.next_seq
    print(json.dumps({"acked": acked, "errors": errors}), flush=True)


def _stream(directory: str, kind: str, count: int) -> None:
    from rlcontrol.replay.transition_log import TransitionLog

    schema = make_schema(kind)
    with TransitionLog.open(directory, schema, fsync="interval", segment_bytes=20 * schema.record_bytes) as log:
        for seq in range(count):
            log.append(transition(schema, seq))
            if seq % 7 == 0:
                time.sleep(0.002)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    mode, directory, kind, arg = sys.argv[1:5]
    if mode == "append":
        _append_forever(directory, kind, arg)
    elif mode == "fill":
        _fill(directory, kind, int(arg))
    else:
        _stream(directory, kind, int(arg))
