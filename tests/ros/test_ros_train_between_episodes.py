"""Training between episodes, as Learning to Drive in a Day did: `rlcontrol finetune
--train-between-episodes` makes the simulated robot hold after each episode until the learner node
reports (/finetune/trained_through) that it has done every update that episode's transitions allow.
Separate processes, real DDS: the robot, the policy node and the learner node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")

REPO_ROOT = Path(__file__).resolve().parents[2]
LEARNING_STARTS = 100
UTD = 2


@pytest.mark.slow
def test_the_robot_waits_for_the_learner_between_episodes(tmp_path, ros_env):
    from rlcontrol.training.untrained import write_untrained_run

    run = write_untrained_run(REPO_ROOT / "configs" / "td3_cartpole_balance.yaml", tmp_path / "run")
    out = tmp_path / "finetune"
    # A robot 10x faster than real time drives an episode (250 commands) in ~0.6 s; the learner needs
    # seconds for the updates it allows, so without waiting the robot would be episodes ahead of it.
    proc = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "finetune", str(run), "--out", str(out),
                           "--episodes", "3", "--real-time-factor", "10", "--learning-starts", str(LEARNING_STARTS),
                           "--export-every", "300", "--updates-per-transition", str(UTD),
                           "--train-between-episodes", "--json"],
                          capture_output=True, text=True, env=ros_env, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["exit_codes"] == {"sim_robot": 0, "finetune_node": 0, "policy_node": 0}, result["logs"]
    episodes = result["episodes"]
    assert len(episodes) == 3, episodes
    assert "waited_s" not in episodes[0] and all(e["waited_s"] > 0 for e in episodes[1:]), episodes
    # Every update the first two episodes allowed was done before the third started: the exports in
    # the learner's log show the updates done while it had only those episodes' transitions.
    steps_before_last = episodes[0]["steps"] + episodes[1]["steps"]
    allowed = UTD * (steps_before_last - LEARNING_STARTS)
    exports = [json.loads(line) for line in (out / "finetune.jsonl").read_text().splitlines()]
    exports = [row for row in exports if "updates" in row and "transitions" in row and "version" in row]
    trained = [row for row in exports if row["transitions"] <= steps_before_last]
    assert max(row["updates"] for row in trained) == allowed, exports  # the last one exported when caught up
    # ... and the third episode started on that export (the learner goes on training while it drives,
    # so a later version may take over before its end).
    logged = {row["episode"]: row for row in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}
    assert logged[2]["start_version"] == max(row["version"] for row in trained), (logged[2], exports)
    assert result["learner_status"]["learner"]["trained_through"] >= 1, result["learner_status"]
    # The policy stepped every one of those transitions (nothing was driven while the robot waited).
    assert result["learner_status"]["interventions"] == 0
