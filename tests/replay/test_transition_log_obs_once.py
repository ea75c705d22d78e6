"""The observations-once transition log (camera policies on a robot): each frame is written once,
readers rebuild whole transitions, and what a crash or a corrupt record costs is bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcontrol.replay.log_feed import load_replay, replay_for_log
from rlcontrol.replay.transition_log import LogWriteError, TransitionLog, TransitionSchema, read_log

SPEC = {"camera": np.zeros((3, 8, 8), np.uint8), "speed": (1,)}


def observation(k: int) -> dict:
    return {"camera": ((np.arange(192) + 7 * k) % 251).astype(np.uint8).reshape(3, 8, 8),
            "speed": np.array([k / 10], np.float32)}


def episodes(lengths, ends=("terminated", "truncated")) -> list[tuple[dict, dict]]:
    """(two-image record, observations-once records) per step of consecutive episodes; observation
    k is a function of a running counter, so every frame differs."""
    out, k = [], 0
    for e, length in enumerate(lengths):
        first = {"next_obs": observation(k), "action": np.zeros(2, np.float32), "reward": 0.0, "terminated": False,
                 "truncated": False, "first": True, "episode": e, "step": -1}
        out.append((None, first))
        for step in range(length):
            last = step == length - 1
            flags = {"terminated": last and ends[e % 2] == "terminated",
                     "truncated": last and ends[e % 2] == "truncated"}
            common = {"action": np.array([step, -step], np.float32) / 10, "reward": 0.5 + step, **flags,
                      "episode": e, "step": step}
            out.append(({"obs": observation(k), "next_obs": observation(k + 1), **common},
                        {"next_obs": observation(k + 1), **common}))
            k += 1
        k += 1  # the next episode's first frame is new
    return out


def write_both(tmp_path, stream):
    whole = TransitionSchema.for_transitions(SPEC, 2)
    once = TransitionSchema.for_transitions(SPEC, 2, obs_once=True)
    with TransitionLog.open(tmp_path / "whole", whole, fsync="none") as a, \
            TransitionLog.open(tmp_path / "once", once, fsync="none") as b:
        for record, record_once in stream:
            if record is not None:
                a.append(record)
            b.append(record_once)
    return whole, once


def same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    else:
        np.testing.assert_array_equal(a, b)


def test_readers_rebuild_the_same_transitions_from_half_the_bytes(tmp_path):
    stream = episodes([5, 3, 4])
    whole, once = write_both(tmp_path, stream)
    # One camera frame per record instead of two (plus one first record per episode): at 64x64,
    # 12.4 kB a record instead of 24.7 kB.
    camera = {"camera": np.zeros((3, 64, 64), np.uint8), "speed": (1,)}
    assert TransitionSchema.for_transitions(camera, 2, obs_once=True).record_bytes < \
        0.51 * TransitionSchema.for_transitions(camera, 2).record_bytes
    with read_log(tmp_path / "whole") as r:
        expected = list(r)
    with read_log(tmp_path / "once") as r:
        got = list(r)
        assert r.report.records == len(stream) and r.report.unjoined == 0
    assert len(got) == len(expected) == 12
    for a, b in zip(expected, got):
        same(a.obs, b.obs)
        same(a.next_obs, b.next_obs)
        assert (a.episode, a.step, a.terminated, a.truncated, a.reward) == (b.episode, b.step, b.terminated,
                                                                           b.truncated, b.reward)
        assert not b.first


def test_the_learner_replay_is_the_same_as_from_the_two_image_log(tmp_path):
    write_both(tmp_path, episodes([6, 5]))
    replays = []
    for name in ("whole", "once"):
        replay = replay_for_log(TransitionSchema.for_transitions(SPEC, 2), 50)
        feeder = load_replay(tmp_path / name, replay, n_step=3, gamma=0.9)
        assert feeder.added == 11 and feeder.cuts == 0
        replays.append(replay)
    (rows_a, meta_a), (rows_b, meta_b) = (r.state_dict() for r in replays)
    assert meta_a["size"] == meta_b["size"] == 11
    for name in rows_a:
        if name != "rng_state":
            torch.testing.assert_close(rows_a[name], rows_b[name], rtol=0, atol=0)


def test_a_lost_record_costs_itself_and_the_next_one_only(tmp_path):
    stream = episodes([6])
    once = TransitionSchema.for_transitions(SPEC, 2, obs_once=True)
    with TransitionLog.open(tmp_path, once, fsync="none") as log:
        for i, (_, record) in enumerate(stream):
            if i != 3:  # step 2 of the episode never reached the log (the node was down)
                log.append(record)
    with read_log(tmp_path) as reader:
        got = list(reader)
        assert reader.report.unjoined == 1
    assert [r.step for r in got] == [0, 1, 4, 5]  # step 3 lacks its starting frame; 4 chains on from 3
    same(got[2].obs, observation(4))
    replay = replay_for_log(once, 20)
    feeder = load_replay(tmp_path, replay, n_step=2, gamma=0.5)
    assert feeder.added == 4 and feeder.cuts == 1  # no n-step window spans the gap


def test_a_first_record_alone_and_bad_records_are_refused(tmp_path):
    once = TransitionSchema.for_transitions(SPEC, 2, obs_once=True)
    with TransitionLog.open(tmp_path, once, fsync="none") as log:
        with pytest.raises(ValueError, match="must not carry 'obs'"):
            log.append(episodes([1])[1][0])  # a two-image record
        log.append(episodes([1])[0][1])
        assert log.next_seq == 1
    with read_log(tmp_path) as reader:
        assert list(reader) == [] and reader.report.records == 1
    with pytest.raises(ValueError, match="observations-once"):
        TransitionSchema(tuple(TransitionSchema.for_transitions(SPEC, 2).fields)
                         + tuple(f for f in once.fields if f.name == "first"))


def test_disk_full_keeps_every_earlier_frame(tiny_filesystem):
    once = TransitionSchema.for_transitions({"camera": np.zeros((3, 64, 64), np.uint8), "speed": (1,)}, 2,
                                            obs_once=True)
    frame = {"camera": np.full((3, 64, 64), 9, np.uint8), "speed": np.zeros(1, np.float32)}
    written = 0
    with TransitionLog.open(tiny_filesystem / "log", once, fsync="none", segment_bytes=2**20) as log:
        log.append({"next_obs": frame, "action": np.zeros(2, np.float32), "reward": 0.0, "terminated": False,
                    "truncated": False, "first": True, "episode": 0, "step": -1})
        with pytest.raises(LogWriteError):
            for step in range(10_000):
                log.append({"next_obs": frame, "action": np.zeros(2, np.float32), "reward": 1.0,
                            "terminated": False, "truncated": False, "episode": 0, "step": step})
                written += 1
    with read_log(tiny_filesystem / "log") as reader:
        got = list(reader)
    assert written > 10 and len(got) == written and [r.step for r in got] == list(range(written))


def test_an_undo_record_passes_through_without_breaking_the_chain(tmp_path):
    from rlcontrol.replay.log_format import undo_record

    once = TransitionSchema.for_transitions(SPEC, 2, obs_once=True, undo=True)
    stream = [r for _, r in episodes([3, 3])]
    with TransitionLog.open(tmp_path, once, fsync="none") as log:
        for i, record in enumerate(stream):
            log.append(record)
            if i == 5:  # episode 0 ended (first + 3 steps), episode 1 begun: the operator undoes episode 0
                log.append(undo_record(once, 0))
    with read_log(tmp_path) as reader:
        got = list(reader)
        assert reader.report.unjoined == 0
    assert [(r.episode, r.step, r.undo) for r in got] == [(0, 0, False), (0, 1, False), (0, 2, False), (1, 0, False),
                                                          (0, -2, True), (1, 1, False), (1, 2, False)]
    replay = replay_for_log(once, 20)
    feeder = load_replay(tmp_path, replay, n_step=1, gamma=0.9)
    assert feeder.undone == {0} and feeder.added == 6  # the feeder reports it; its owner rebuilds without it
    with pytest.raises(ValueError, match="no undo field"):
        undo_record(TransitionSchema.for_transitions(SPEC, 2), 0)
