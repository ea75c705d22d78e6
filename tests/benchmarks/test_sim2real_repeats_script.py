"""benchmarks/sim2real_repeats.py: what a session ended on (by the policy node's file, re-pushes
included), its regret against the best version, and the summary over sessions (no ROS, no training)."""

import json

import pytest

from benchmarks import sim2real_finetune as s2r
from benchmarks import sim2real_repeats as rep


@pytest.fixture
def session(tmp_path, monkeypatch):
    """A finished session folder: versions 1-3 exported, each 'evaluated' to a fixed mean."""
    folder = tmp_path / "repeat-s0"
    folder.mkdir()
    means = {1: 700.0, 2: 950.0, 3: 900.0}
    rows = [{"version": v, "updates": 500 * v, "transitions": 1000 + 500 * v, "wall_s": 5.0 * v} for v in means]
    rows += [{"event": "push", "version": v, "path": f"policy-v{v:04d}.onnx"} for v in means]  # each ran on the robot
    (folder / "finetune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for v in means:
        (folder / f"policy-v{v:04d}.onnx").write_bytes(f"weights {v}".encode())
    by_name = {f"policy-v{v:04d}.onnx": m for v, m in means.items()}
    monkeypatch.setattr(s2r, "onnx_policy", lambda path: by_name[path.name])
    monkeypatch.setattr(s2r, "returns", lambda mean, stand_in, task=None: [mean] * 10)
    monkeypatch.setattr(s2r, "control_period", lambda: 0.04)
    return tmp_path


def test_a_session_left_on_a_re_push_of_the_best_has_no_regret(session):
    # keep-best ended by re-pushing v2's file as v5: the node runs v2's weights.
    tuned = {"policy_status": {"version": 5, "path": str(session / "repeat-s0" / "policy-v0002.onnx")},
             "final": {"version": 5, "reason": "best by the rule"}, "wall_s": 30.0}
    row = rep.session_row(session, "repeat", 0, tuned, v0=[500.0] * 10, in_sim=[1000.0] * 10)
    assert row["final_version"] == 2 and row["final_gap_closed"] == pytest.approx(0.9)
    assert row["best_version"] == 2 and row["regret"] == pytest.approx(0.0)
    assert row["last_version"] == 3 and row["last_gap_closed"] == pytest.approx(0.8)


def test_ending_on_the_last_version_counts_the_drop_from_the_best(session):
    tuned = {"policy_status": {"version": 3, "path": str(session / "repeat-s0" / "policy-v0003.onnx")}}
    row = rep.session_row(session, "repeat", 0, tuned, v0=[500.0] * 10, in_sim=[1000.0] * 10)
    assert row["final_version"] == 3 and row["regret"] == pytest.approx(0.1)
    summary = rep.summarize([row, {**row, "final_gap_closed": 0.95, "regret": 0.0}])
    assert summary["sessions_at_target"] == 1 and summary["sessions_within_regret_bound"] == 1
    assert summary["final_gap_closed"]["min"] == pytest.approx(0.8)
    assert "| 0 | v3 | 900.0 | 80% | v2 (90%) | 10% | v3 (80%) |" in rep.table([row])


def test_a_session_on_an_unknown_file_is_an_error(session):
    tuned = {"policy_status": {"version": 9, "path": "/elsewhere/model.onnx"}}
    with pytest.raises(SystemExit, match="model.onnx"):
        rep.session_row(session, "repeat", 0, tuned, v0=[500.0] * 10, in_sim=[1000.0] * 10)


def test_an_export_the_robot_never_ran_is_not_the_sessions_best(session):
    # A plateau stopped the pushes after v1: v2 and v3 were exported but never pushed.
    log = session / "repeat-s0" / "finetune.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                           if '"event": "push"' not in line or '"version": 1,' in line))
    tuned = {"policy_status": {"version": 1, "path": str(session / "repeat-s0" / "policy-v0001.onnx")},
             "stopped_by": "plateau"}
    row = rep.session_row(session, "repeat", 0, tuned, v0=[500.0] * 10, in_sim=[1000.0] * 10)
    assert (row["final_version"], row["best_version"], row["regret"]) == (1, 1, 0.0)
    assert row["stopped_by"] == "plateau" and row["last_version"] == 3
