"""The on-disk transition log: round trips, kill -9, torn tails, corruption, fsync policies, disk full,
schema mismatches, following a log another process writes, and feeding the in-memory replay."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transition_log_helpers import check_record, make_schema, transition

from rlcontrol.errors import UserError
from rlcontrol.replay import (
    LogCorruptError,
    LogSchemaError,
    LogWriteError,
    NStepAccumulator,
    ReplayBuffer,
    ReplayFeeder,
    TransitionLog,
    TransitionLogError,
    TransitionSchema,
    load_replay,
    read_log,
    replay_for_log,
)
from rlcontrol.replay.log_format import encode_header, read_header

HELPERS = Path(__file__).with_name("transition_log_helpers.py")
REPO = Path(__file__).parents[2]


def write(directory, kind, count, start=0, **kwargs):
    schema = make_schema(kind)
    with TransitionLog.open(directory, schema, **kwargs) as log:
        for seq in range(start, start + count):
            assert log.append(transition(schema, seq)) == seq
    return schema


def read_all(directory, **kwargs):
    with read_log(directory, **kwargs) as reader:
        return list(reader), reader.report


def segment(directory, index=0):
    path = Path(directory) / f"segment-{index:06d}.rlclog"
    return path, read_header(path, index)


def helper(*args, **kwargs):
    return subprocess.Popen([sys.executable, str(HELPERS), *map(str, args)], cwd=REPO, text=True, **kwargs)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("kind", ["image", "state"])
def test_round_trip_across_segments_and_reopens(tmp_path, kind):
    schema = make_schema(kind)
    # Small segments: 40 records over ~7 segments, written by two writers one after the other.
    write(tmp_path, kind, 25, segment_bytes=6 * schema.record_bytes)
    write(tmp_path, kind, 15, start=25, segment_bytes=6 * schema.record_bytes)
    records, report = read_all(tmp_path)
    assert [r.seq for r in records] == list(range(40))
    for record in records:
        check_record(schema, record)
    assert report.torn_tail_bytes == 0 and report.skipped_records == 0 and report.segments > 5
    # Every finished segment holds whole records and at most segment_bytes.
    for path in sorted(tmp_path.glob("segment-*.rlclog")):
        header = read_header(path, int(path.stem.split("-")[1]))
        assert (path.stat().st_size - header.data_start) % schema.record_bytes == 0
        assert header.schema == schema


def test_records_are_raw_little_endian_bytes_in_schema_order(tmp_path):
    schema = write(tmp_path, "state", 2)
    path, header = segment(tmp_path)
    raw = path.read_bytes()
    assert json.loads(raw[16:header.data_start - 4])["first_seq"] == 0  # after magic, version, JSON length
    record = raw[header.data_start + schema.record_bytes:]  # record 1
    length, crc = np.frombuffer(record[:8], "<u4")
    assert length == schema.record_bytes - 8 and crc == zlib.crc32(record[8:schema.record_bytes])
    assert np.frombuffer(record[8:16], "<u8")[0] == 1  # the sequence number, then the fields in order
    np.testing.assert_array_equal(np.frombuffer(record[16:16 + 17 * 4], "<f4"), transition(schema, 1)["obs"])
    np.testing.assert_array_equal(np.frombuffer(record[16 + 17 * 4:16 + 23 * 4], "<f4"), transition(schema, 1)["action"])


def test_bad_transitions_are_refused_before_anything_is_written(tmp_path):
    schema = make_schema("image")
    with TransitionLog.open(tmp_path, schema) as log:
        log.append(transition(schema, 0))
        size = log.segment_path.stat().st_size
        good = transition(schema, 1)
        floats = {**good, "obs": {**good["obs"], "camera": good["obs"]["camera"] / 255.0}}
        bad = [floats, {**good, "action": np.zeros(3)}, {k: v for k, v in good.items() if k != "step"},
               {**good, "step": 1.5}, {**good, "extra": 1}, {**good, "terminated": 2}, {**good, "obs": np.zeros(3)}]
        for transition_ in bad:
            with pytest.raises(ValueError):
                log.append(transition_)
        assert log.next_seq == 1 and log.segment_path.stat().st_size == size
        assert log.append(good) == 1


def test_one_writer_at_a_time(tmp_path):
    schema = make_schema("state")
    with TransitionLog.open(tmp_path, schema):
        with pytest.raises(TransitionLogError, match="already open for appending"):
            TransitionLog.open(tmp_path, schema)
    TransitionLog.open(tmp_path).close()  # released on close; the existing schema is adopted


# ------------------------------------------------------------------------------ crashes
def _run_and_kill(directory, fsync, rng):
    """Start a writer, SIGKILL it at a random moment; returns the seqs it reported."""
    process = helper("append", directory, "image", fsync, stdout=subprocess.PIPE)
    opened_at = json.loads(process.stdout.readline())["opened_at"]
    reported, wanted = [], rng.randint(3, 40)
    while len(reported) < wanted:
        line = process.stdout.readline()
        assert line, "the writer died on its own"
        reported.append(int(line))
    time.sleep(rng.uniform(0, 0.03))
    process.send_signal(signal.SIGKILL)
    rest = process.stdout.read()  # lines printed before the kill are reported too
    process.wait()
    reported += [int(line) for line in rest.split()]
    assert reported == list(range(opened_at, opened_at + len(reported)))
    return reported


def test_kill_9_loses_nothing_reported_and_appending_continues(tmp_path):
    schema, rng = make_schema("image"), random.Random(0)
    reported = []
    # fsync="every" reports what is on disk; "none" shows a process crash loses nothing written either.
    for fsync in ("every", "every", "none", "every"):
        reported += _run_and_kill(tmp_path, fsync, rng)
        records, report = read_all(tmp_path)
        assert [r.seq for r in records] == list(range(len(records)))  # no gaps across kills
        assert set(reported) <= {r.seq for r in records}
        assert report.torn_tail_bytes < schema.record_bytes
        for record in records[-5:]:
            check_record(schema, record)
    # The next writer recovers the log and numbering continues after the last valid record.
    count = len(records)
    with TransitionLog.open(tmp_path, schema) as log:
        assert log.next_seq == count
        log.append(transition(schema, count))
    records, report = read_all(tmp_path)
    assert len(records) == count + 1 and report.torn_tail_bytes == 0
    for record in records:
        check_record(schema, record)


def test_torn_last_record_is_dropped_and_truncated_on_reopen(tmp_path, caplog):
    schema = write(tmp_path, "image", 10)
    path, header = segment(tmp_path)
    cut = header.data_start + 9 * schema.record_bytes + 1000
    os.truncate(path, cut)  # record 9 cut mid-write
    records, report = read_all(tmp_path)
    assert [r.seq for r in records] == list(range(9)) and report.torn_tail_bytes == 1000
    with caplog.at_level(logging.WARNING), TransitionLog.open(tmp_path, schema) as log:
        assert log.next_seq == 9
        assert path.stat().st_size == cut - 1000
        log.append(transition(schema, 9))
    assert "dropped a torn tail of 1000 bytes" in caplog.text
    records, report = read_all(tmp_path)
    assert [r.seq for r in records] == list(range(10)) and report.torn_tail_bytes == 0


@pytest.mark.parametrize("garbage", [37, "zeros", "records"])
def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path, garbage):
    schema = write(tmp_path, "state", 10)
    path, _ = segment(tmp_path)
    size = path.stat().st_size
    data = {37: os.urandom(37), "zeros": bytes(3 * schema.record_bytes + 5),  # a power loss can leave zeros
            "records": os.urandom(2 * schema.record_bytes)}[garbage]
    with open(path, "ab") as f:
        f.write(data)
    records, report = read_all(tmp_path)
    assert len(records) == 10 and report.torn_tail_bytes == len(data)
    with TransitionLog.open(tmp_path, schema) as log:
        assert log.next_seq == 10 and path.stat().st_size == size


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_corruption_in_the_middle_is_an_error_naming_segment_and_offset(tmp_path):
    schema = write(tmp_path, "state", 10)
    path, header = segment(tmp_path)
    offset = header.data_start + 3 * schema.record_bytes
    _flip_byte(path, offset + 30)
    with pytest.raises(LogCorruptError, match=rf"{path.name}: record at byte {offset} \(seq 3\)"):
        read_all(tmp_path)
    with pytest.raises(LogCorruptError, match="corrupted in the middle"):
        TransitionLog.open(tmp_path, schema)
    # Skipping is explicit, counted and says where.
    records, report = read_all(tmp_path, skip_corrupt=True)
    assert [r.seq for r in records] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert report.skipped_records == 1 and report.skipped == [f"{path.name}:{offset}"]


def test_a_bad_last_record_of_a_finished_segment_is_corruption_not_a_torn_tail(tmp_path):
    schema = write(tmp_path, "state", 12, segment_bytes=6 * schema_bytes("state"))
    path, header = segment(tmp_path, 0)
    last = (path.stat().st_size - header.data_start) // schema.record_bytes - 1  # its last record's seq
    _flip_byte(path, header.data_start + last * schema.record_bytes + 20)
    with pytest.raises(LogCorruptError, match="segment-000001.rlclog follows"):
        read_all(tmp_path)
    records, report = read_all(tmp_path, skip_corrupt=True)
    assert [r.seq for r in records] == [s for s in range(12) if s != last] and report.skipped_records == 1


def schema_bytes(kind):
    return make_schema(kind).record_bytes


# ------------------------------------------------------------------------------ fsync policies
def test_fsync_every_and_none(tmp_path):
    schema = make_schema("state")
    with TransitionLog.open(tmp_path / "every", schema, fsync="every") as log:
        for seq in range(5):
            log.append(transition(schema, seq))
            assert log.durable_seq == seq + 1
        assert log.fsync_count == 5
    with TransitionLog.open(tmp_path / "none", schema, fsync="none") as log:
        for seq in range(5):
            log.append(transition(schema, seq))
        time.sleep(0.2)
        assert log.durable_seq == 0 and log.fsync_count == 0
        assert log.flush() == 5


def test_fsync_interval_bounds_what_is_not_yet_durable(tmp_path):
    """Records appended more than interval (+ scheduling slack on a loaded machine) ago are
    durable, also once appends stop; fsyncs are amortized over many records."""
    schema, interval, slack = make_schema("state"), 0.05, 0.5
    appended = []  # (time, seq)
    with TransitionLog.open(tmp_path, schema, fsync="interval", fsync_interval_s=interval) as log:
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            appended.append((time.monotonic(), log.append(transition(schema, log.next_seq))))
            now, durable = time.monotonic(), log.durable_seq
            old = [seq for t, seq in appended if now - t > interval + slack]
            assert not old or durable > old[-1]
            time.sleep(0.001)
        deadline = time.monotonic() + interval + slack
        while log.durable_seq < log.next_seq and time.monotonic() < deadline:
            time.sleep(0.005)
        assert log.durable_seq == log.next_seq
        assert log.fsync_count <= 1.5 / interval + 5 and len(appended) > 4 * log.fsync_count


def test_fsync_records_triggers_an_early_fsync(tmp_path):
    schema = make_schema("state")
    with TransitionLog.open(tmp_path, schema, fsync="interval", fsync_interval_s=60, fsync_records=25) as log:
        for seq in range(100):
            log.append(transition(schema, seq))
        deadline = time.monotonic() + 5
        while log.durable_seq < 75 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.durable_seq >= 75


# ------------------------------------------------------------------------------ disk full
def test_file_size_limit_efbig_leaves_no_partial_record(tmp_path):
    schema = make_schema("image")
    limit = len(encode_header(schema, 0, 0)) + int(5.5 * schema.record_bytes)  # the 6th record is cut by the limit
    process = helper("fill", tmp_path, "image", limit, stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=120)
    result = json.loads(out)
    assert result["acked"] == 5
    for error in result["errors"]:
        assert error.startswith(f"replay log: file size limit reached while appending to {tmp_path}/segment-000000"
                                f".rlclog after 5 records; records up to seq 4 are intact")
    path, header = segment(tmp_path)
    assert path.stat().st_size == header.data_start + 5 * schema.record_bytes
    records, report = read_all(tmp_path)
    assert [r.seq for r in records] == list(range(5)) and report.torn_tail_bytes == 0
    write(tmp_path, "image", 2, start=5)  # without the limit, appending continues
    assert len(read_all(tmp_path)[0]) == 7


@pytest.mark.parametrize("segment_records", [1000, 2])  # the disk fills during an append / a segment roll
def test_disk_full_is_a_clear_error_and_nothing_earlier_is_lost(tiny_filesystem, segment_records):
    schema = make_schema("image")
    directory = tiny_filesystem / "log"
    with TransitionLog.open(directory, schema, segment_bytes=segment_records * schema.record_bytes) as log:
        with pytest.raises(LogWriteError, match=r"^replay log: disk full while (appending to|creating segment) "
                                                r".*segment-\d+\.rlclog after \d+ records; records up to seq") as info:
            for seq in range(1000):
                log.append(transition(schema, seq))
        acked = log.next_seq
        assert isinstance(info.value, UserError) and f"after {acked} records" in str(info.value)
        with pytest.raises(LogWriteError):  # still full: fails again, just as cleanly
            log.append(transition(schema, acked))
    records, report = read_all(directory)
    assert acked > 3 and [r.seq for r in records] == list(range(acked)) and report.torn_tail_bytes == 0
    for record in records:
        check_record(schema, record)
    for path in directory.glob("segment-*"):
        header = read_header(path, int(path.stem.split("-")[1]))
        assert (path.stat().st_size - header.data_start) % schema.record_bytes == 0
    assert not list(directory.glob(".segment-*"))


def test_partial_write_is_undone(tmp_path, monkeypatch):
    """Fault injection: os.write writes half a record, then the disk is full (or, second case, the
    rest of a short write goes through)."""
    schema = make_schema("image")
    real_write = os.write
    plan = []

    def faulty_write(fd, data):
        action = plan.pop(0) if plan and len(data) >= schema.record_bytes // 2 else None
        if action == "half":
            return real_write(fd, bytes(data)[:len(data) // 2])
        if action == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if action == "eio":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", faulty_write)
    with TransitionLog.open(tmp_path, schema, fsync="none") as log:
        for seq in range(5):
            log.append(transition(schema, seq))
        size = log.segment_path.stat().st_size
        plan[:] = ["half", "full"]
        with pytest.raises(LogWriteError, match="disk full while appending .* after 5 records; records up to seq 4"):
            log.append(transition(schema, 5))
        assert log.segment_path.stat().st_size == size and log.next_seq == 5
        plan[:] = ["half"]  # a short write whose rest succeeds is a complete record
        assert log.append(transition(schema, 5)) == 5
        plan[:] = ["eio"]
        with pytest.raises(LogWriteError, match=r"write failed \(Input/output error\)"):
            log.append(transition(schema, 6))
        assert log.append(transition(schema, 6)) == 6
    records, report = read_all(tmp_path)
    assert [r.seq for r in records] == list(range(7)) and report.torn_tail_bytes == 0
    for record in records:
        check_record(schema, record)


# ------------------------------------------------------------------------------ schemas
def test_schema_mismatch(tmp_path):
    write(tmp_path / "a", "state", 12, segment_bytes=6 * schema_bytes("state"))
    other = TransitionSchema.for_transitions((18,), 6)
    with pytest.raises(LogSchemaError, match=r"field obs float32\[17\] vs obs float32\[18\]"):
        TransitionLog.open(tmp_path / "a", other)
    with pytest.raises(LogSchemaError, match="differs from the schema expected"):
        list(read_log(tmp_path / "a", other))
    # A segment of another log (another schema) in the middle of this one.
    with TransitionLog.open(tmp_path / "b", other, segment_bytes=6 * other.record_bytes) as log:
        for seq in range(12):
            log.append({**transition(make_schema("state"), seq), "obs": np.zeros(18), "next_obs": np.zeros(18)})
    os.replace(tmp_path / "b" / "segment-000001.rlclog", tmp_path / "a" / "segment-000001.rlclog")
    with pytest.raises(LogSchemaError, match="segment-000001.rlclog: its schema differs from that of segment-000000"):
        list(read_log(tmp_path / "a"))


def test_schema_json_round_trip_and_obs_spec():
    schema = make_schema("image")
    assert TransitionSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema
    names = [f.name for f in schema.fields]
    assert names == ["obs/camera", "obs/joints", "action", "reward", "next_obs/camera", "next_obs/joints",
                     "terminated", "truncated", "intervention", "episode", "step", "time"]
    spec = schema.obs_spec()
    assert spec["camera"].shape == (3, 64, 64) and spec["camera"].dtype == np.uint8
    assert not TransitionSchema.for_transitions((3,), 1, intervention=False).has_intervention


# ------------------------------------------------------------------------------ following a live log
def test_tail_follows_a_log_another_process_writes(tmp_path):
    schema = make_schema("small_image")
    tmp_path.mkdir(exist_ok=True)
    reader = read_log(tmp_path)
    process = helper("stream", tmp_path, "small_image", 400)
    got, deadline = [], time.monotonic() + 120
    while len(got) < 400 and time.monotonic() < deadline:
        got += reader.tail(max_records=37)
        time.sleep(0.001)
    assert process.wait(timeout=60) == 0
    assert [r.seq for r in got] == list(range(400))
    for record in got:
        check_record(schema, record)
    assert reader.report.segments == len(list(tmp_path.glob("segment-*.rlclog"))) > 10 and reader.tail() == []


# ------------------------------------------------------------------------------ into the replay
def _reference_replay(schema, transitions_and_flags, n, gamma):
    """The slow reference: the same 1-step stream straight through NStepAccumulator."""
    replay = ReplayBuffer(100, schema.obs_spec(), schema.action_dim)
    accumulator = NStepAccumulator(n, gamma)
    for t, terminated, truncated in transitions_and_flags:
        reward = float(np.float32(t["reward"]))  # as logged
        for out in accumulator.add(t["obs"], t["action"], reward, t["next_obs"], terminated, truncated):
            replay.add(out)
    return replay


def _same_rows(a, b):
    (ta, ma), (tb, mb) = a.state_dict(), b.state_dict()
    assert ma["size"] == mb["size"]
    for name in ta:
        if name != "rng_state":
            torch.testing.assert_close(ta[name], tb[name], rtol=0, atol=0)


def test_load_replay_is_n_step_over_the_logged_episodes(tmp_path):
    schema = write(tmp_path, "state", 50)  # episodes of 20: terminated, truncated, and 10 steps of a third
    replay = replay_for_log(schema, 100)
    feeder = load_replay(tmp_path, replay, n_step=3, gamma=0.9)
    stream = [(transition(schema, s), transition(schema, s)["terminated"],
               transition(schema, s)["truncated"] or s == 49) for s in range(50)]
    _same_rows(replay, _reference_replay(schema, stream, 3, 0.9))
    assert feeder.records == 50 and feeder.added == 50 and feeder.cuts == 1  # the unfinished last episode


def test_a_gap_in_an_episode_cuts_it_there(tmp_path):
    schema = make_schema("state")
    seqs = [0, 1, 2, 3, 4, 7, 8, 9]  # the learner was down for steps 5 and 6 of episode 0
    with TransitionLog.open(tmp_path, schema) as log:
        for s in seqs:
            log.append(transition(schema, s))
    replay = ReplayBuffer(100, schema.obs_spec(), schema.action_dim)
    feeder = load_replay(tmp_path, replay, n_step=2, gamma=0.5)
    assert feeder.cuts == 2
    stream = [(transition(schema, s), False, s in (4, 9)) for s in seqs]
    _same_rows(replay, _reference_replay(schema, stream, 2, 0.5))
    # By hand: step 3's window is steps 3, 4 (not 3, 7): reward 0.3 + 0.5 * 0.4, discount 0.25.
    rows, _ = replay.state_dict()
    assert rows["reward"][3].item() == pytest.approx(0.5) and rows["discount"][3].item() == 0.25
    assert rows["reward"][4].item() == pytest.approx(0.4) and rows["discount"][4].item() == 0.5


def test_skip_interventions(tmp_path):
    schema = write(tmp_path, "state", 20)  # seq 12 is an intervention
    replay = ReplayBuffer(100, schema.obs_spec(), schema.action_dim)
    feeder = load_replay(tmp_path, replay, n_step=1, gamma=0.9, skip_interventions=True)
    assert feeder.skipped == 1 and feeder.added == 19 and feeder.cuts == 1
    rows, _ = replay.state_dict()
    assert 1.2 not in [round(r, 4) for r in rows["reward"].tolist()]
    assert rows["discount"][11].item() == pytest.approx(0.9)  # seq 11: cut, truncated: bootstraps


@pytest.mark.parametrize("prioritized", [False, True])
def test_feeder_polls_new_records_into_uniform_and_prioritized_replay(tmp_path, prioritized):
    schema = make_schema("small_image")
    replay = replay_for_log(schema, 100, prioritized=prioritized)
    assert type(replay).__name__ == ("PrioritizedFrameReplayBuffer" if prioritized else "FrameReplayBuffer")
    with TransitionLog.open(tmp_path, schema, fsync="none") as log:
        feeder = ReplayFeeder(tmp_path, replay, n_step=1, gamma=0.99)
        assert feeder.poll() == 0
        for seq in range(10):
            log.append(transition(schema, seq))
        assert feeder.poll() == 9  # the newest is held until the next shows whether its episode goes on
        for seq in range(10, 15):
            log.append(transition(schema, seq))
        assert feeder.poll() == 5 and feeder.flush() == 1
    assert len(replay) == 15
    batch = replay.sample(8)
    assert batch.obs["camera"].dtype == torch.uint8 and batch.action.shape == (8, 2)


def test_feeder_refuses_a_replay_of_other_shapes(tmp_path):
    write(tmp_path, "state", 3)
    with pytest.raises(LogSchemaError, match="do not fit the replay"):
        load_replay(tmp_path, ReplayBuffer(10, (16,), 6))
