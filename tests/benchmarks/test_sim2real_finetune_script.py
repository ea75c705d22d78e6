"""benchmarks/sim2real_finetune.py: gap closed per version over robot time, the finetune.jsonl -> robot
time mapping, the cached per-version evaluation, and the --compare table (no ROS, no training)."""

import json

import pytest

from benchmarks import sim2real_finetune as s2r


def point(version, robot_s, gap_closed, mean=0.0):
    return {"version": version, "robot_s": robot_s, "wall_s": robot_s / 4, "mean": mean, "std": 0.0,
            "gap_closed": gap_closed}


def test_gap_share_is_zero_on_the_stand_in_and_one_in_sim():
    assert s2r.gap_share(480.0, 480.0, 1000.0) == 0.0
    assert s2r.gap_share(1000.0, 480.0, 1000.0) == 1.0
    assert s2r.gap_share(740.0, 480.0, 1000.0) == pytest.approx(0.5)
    assert s2r.gap_share(300.0, 480.0, 1000.0) < 0  # worse than the sim policy on the stand-in
    assert s2r.gap_share(900.0, 1000.0, 1000.0) is None  # no gap: nothing to close


def test_time_to_50_and_90_percent_is_the_first_crossing_in_robot_time():
    curve = [point(0, 0.0, 0.0), point(1, 20.0, 0.3), point(2, 40.0, 0.55), point(3, 60.0, 0.4),
             point(4, 80.0, 0.9), point(5, 100.0, 0.97), point(6, 120.0, 0.8)]
    summary = s2r.curve_summary(list(reversed(curve)))  # order of the list does not matter
    assert summary["time_to_gap_closed"]["0.5"]["robot_s"] == 40.0  # later dips are ignored
    assert summary["time_to_gap_closed"]["0.5"]["version"] == 2
    assert summary["time_to_gap_closed"]["0.9"]["robot_s"] == 80.0  # equality counts
    assert summary["best"]["version"] == 5 and summary["best"]["gap_closed"] == 0.97
    assert summary["final"]["version"] == 6 and summary["final"]["gap_closed"] == 0.8


def test_never_closing_gives_none_and_unscored_points_are_skipped():
    curve = [point(0, 0.0, 0.0), point(1, 20.0, 0.49), point(2, 40.0, None), point(3, 60.0, 0.2)]
    summary = s2r.curve_summary(curve)
    assert summary["time_to_gap_closed"] == {"0.5": None, "0.9": None}
    assert summary["best"]["version"] == 1
    assert summary["final"]["version"] == 3
    assert s2r.curve_summary([])["best"] is None


def test_a_crossing_at_version_0_takes_no_robot_time():
    curve = [point(0, 0.0, 0.95), point(1, 20.0, 1.0)]
    assert s2r.first_crossing(curve, 0.5)["robot_s"] == 0.0
    assert s2r.first_crossing(curve, 0.9)["version"] == 0


def test_finetune_jsonl_maps_versions_to_robot_seconds(tmp_path):
    rows = [{"version": 1, "updates": 500, "transitions": 1500, "replay": 1500, "wall_s": 19.4, "critic_loss": 1.0},
            {"version": 2, "updates": 1000, "transitions": 2000, "replay": 2000, "wall_s": 24.6},
            {"version": 2, "updates": 1000, "transitions": 2600, "replay": 2600, "wall_s": 3.1},  # a restart's repeat
            {"note": "not an export"}]
    (tmp_path / "finetune.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"version": 3, "tra')
    times = s2r.export_times(tmp_path, 0.04)
    assert sorted(times) == [1, 2]  # the torn last line is dropped
    assert times[1] == {"robot_s": 60.0, "wall_s": 19.4, "transitions": 1500, "updates": 500}
    assert times[2]["robot_s"] == 80.0 and times[2]["wall_s"] == 24.6  # the first row of a version
    assert s2r.export_times(tmp_path / "missing", 0.04) == {}


def test_robot_clock_is_the_stand_ins_control_period():
    assert s2r.control_period() == pytest.approx(0.01 * s2r.ACTION_REPEAT)


def test_version_files_and_every_kth_version(tmp_path):
    for name in ("policy-v0000.onnx", "policy-v0001.onnx", "policy-v0002.onnx", "policy-v0010.onnx",
                 "policy-v0003.onnx.tmp", "learner.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert list(s2r.version_files(tmp_path)) == [1, 2, 10]  # v0000 is the sim policy's own export
    assert s2r.select_versions([1, 2, 3, 4, 5, 6, 7], 1) == [1, 2, 3, 4, 5, 6, 7]
    assert s2r.select_versions([1, 2, 3, 4, 5, 6, 7], 3) == [3, 6, 7]  # the last one always
    assert s2r.select_versions([1, 2, 3, 4, 5, 6], 3) == [3, 6]
    assert s2r.select_versions([], 3) == []


def test_per_version_evaluation_builds_the_curve_and_reuses_its_cache(tmp_path, monkeypatch):
    tuned = tmp_path / "finetune"
    tuned.mkdir()
    for v in (1, 2, 3):
        (tuned / f"policy-v{v:04d}.onnx").write_bytes(f"weights {v}".encode())
    rows = [{"version": v, "updates": 500 * v, "transitions": 1000 + 500 * v, "wall_s": 10.0 * v} for v in (1, 2, 3)]
    (tuned / "finetune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    means = {1: 500.0, 2: 740.0, 3: 960.0}
    calls = []
    monkeypatch.setattr(s2r, "onnx_policy", lambda path: int(path.name[8:12]))
    monkeypatch.setattr(s2r, "returns", lambda version, stand_in, task=None: calls.append(version) or [means[version]] * 2)
    v0, in_sim = [480.0, 480.0], [1000.0, 1000.0]
    curve, by_version, eval_s = s2r.evaluate_versions(tmp_path, tuned, 1, v0, in_sim, 0.04)
    assert [p["version"] for p in curve] == [0, 1, 2, 3] and calls == [1, 2, 3] and eval_s is not None
    assert curve[0] == {"version": 0, "robot_s": 0.0, "wall_s": 0.0, "transitions": 0, "updates": 0,
                        "mean": 480.0, "std": 0.0, "gap_closed": 0.0}
    assert [p["robot_s"] for p in curve] == [0.0, 60.0, 80.0, 100.0]
    assert curve[2]["gap_closed"] == pytest.approx(0.5) and by_version[3] == [960.0, 960.0]
    summary = s2r.curve_summary(curve)
    assert summary["time_to_gap_closed"]["0.5"]["robot_s"] == 80.0
    assert summary["time_to_gap_closed"]["0.9"]["robot_s"] == 100.0
    # Recomputed from the same --out: nothing is evaluated again, unless a file changed.
    again, _, eval_s = s2r.evaluate_versions(tmp_path, tuned, 1, v0, in_sim, 0.04)
    assert again == curve and calls == [1, 2, 3] and eval_s is None
    (tuned / "policy-v0002.onnx").write_bytes(b"other weights")
    s2r.evaluate_versions(tmp_path, tuned, 1, v0, in_sim, 0.04)
    assert calls == [1, 2, 3, 2]


def result(agent, k, t50, t90, final, best):
    curve = [point(0, 0.0, 0.0)]
    return {"agent": agent, "updates_per_transition": k, "exploration_std": 0.2, "gap": 518.3,
            "returns": {"sim policy in sim": {"mean": 997.4}, "sim policy on stand-in": {"mean": 479.1}},
            "curve": curve, "final": {"version": 45, "robot_s": 960.0, "gap_closed": final},
            "best": {"version": 30, "robot_s": 640.0, "gap_closed": best},
            "time_to_gap_closed": {"0.5": None if t50 is None else {"robot_s": t50},
                                   "0.9": None if t90 is None else {"robot_s": t90}}}


def test_compare_prints_a_markdown_table_with_the_ratio_of_the_90_percent_times(tmp_path, capsys):
    a, b, c = tmp_path / "td3.json", tmp_path / "sac.json", tmp_path / "old.json"
    a.write_text(json.dumps(result("td3", 1.0, 200.0, 400.0, 0.97, 0.99)))
    b.write_text(json.dumps(result("sac", 2.0, 100.0, 300.0, 0.95, 0.98)))
    s2r.main(["--compare", str(a), str(b)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| result | agent |") and set(lines[1]) <= set("|-: ")
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:3] == ["sac.json", "sac", "2.0"]
    assert cells[4] == "518.3 (997.4 - 479.1)"
    assert cells[5:] == ["95%", "98% (v30, 640)", "100", "300", "0.75"]
    assert [c.strip() for c in lines[2].strip("|").split("|")][-1] == "1.00"
    # A result that never closed 90%, and one from before the per-version curve.
    b.write_text(json.dumps(result("sac", 2.0, 100.0, None, 0.6, 0.85)))
    c.write_text(json.dumps({"gap": 518.3, "returns": {}, "gap_closed": {"live fine-tuning 240 s": 0.97}}))
    s2r.main(["--compare", str(c), str(b)])
    lines = capsys.readouterr().out.strip().splitlines()
    old = [x.strip() for x in lines[2].strip("|").split("|")]
    new = [x.strip() for x in lines[3].strip("|").split("|")]
    assert old[5] == "97%" and old[7] == "n/a (no per-version curve)" and old[-1] == "n/a"
    assert new[7:] == ["100", "never", "n/a"]
