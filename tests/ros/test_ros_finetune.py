"""Live fine-tuning over ROS 2, as a user runs it: a policy trained in simulation, a simulated
robot with a control latency it was not trained on (its commands take effect one step late), and
`rlcontrol finetune`, whose learner node records the robot's transitions, trains and pushes new
weights to the running policy node. Separate processes, real DDS, real MuJoCo and onnxruntime.

Also the learner's crash: killing it with SIGKILL leaves the policy node on its last good weights,
and a restarted learner recovers the transition log and its own state and goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_nodes import launch

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")

REPO_ROOT = Path(__file__).resolve().parents[2]
# Within the CI budget the sim policy is trained briefly (~680 in simulation, ~450-600 on this
# stand-in, which it cannot foresee); benchmarks/sim2real_finetune.py measures the full story with a
# converged policy and a physics gap.
STAND_IN = json.dumps({"latency_steps": [1, 1]})


def cli(*args, env=None, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "rlcontrol.cli", *map(str, args), "--json"], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """TD3 on the nominal cartpole-balance simulator, within the CI budget (~30 s)."""
    run_dir = tmp_path_factory.mktemp("finetune") / "sim"
    trained = cli("train", "configs/td3_cartpole_balance.yaml", "--run-dir", run_dir, "--no-progress", "--seed", 0,
                  env={**os.environ, "MUJOCO_GL": "egl"})
    assert trained["eval_return"] > 500, trained
    return run_dir


def stand_in_returns(policy_path: Path) -> list[float]:
    """The policy file's deterministic returns on the stand-in (latency 1 step), on 10 fixed
    episode seeds: in process, no ROS, no exploration noise."""
    from benchmarks.sim2real_finetune import onnx_policy, returns

    return returns(onnx_policy(policy_path), json.loads(STAND_IN))


@pytest.mark.slow
def test_live_finetuning_improves_the_stand_ins_return(sim_run, tmp_path, ros_env):
    out = tmp_path / "finetune"
    # Keep-best: a 75 s TD3 session can end inside one of the dips docs/sim2real.md measures
    # (Repeatability). Without keep-best, the mean of the last three pushed versions was +170 to
    # +290 over the sim policy in 8 of 9 sessions here, and -34 in one (v9-v11: 529/494/536,
    # the sim policy 671), with the CI machine at +58 and +96 in two. With it, the session ends on
    # the best version by the robot's own returns: +244 to +317 in 3 of 3 sessions here, one of
    # them next to a 30k-step training run (2026-12-07).
    result = cli("finetune", sim_run, "--out", out, "--stand-in", STAND_IN, "--real-time-factor", 4,
                 "--duration", 75, "--learning-starts", 1000, "--export-every", 500, "--keep-best",
                 env=ros_env, timeout=600)
    episodes = result["episodes"]
    status = result["policy_status"]
    assert result["exit_codes"] == {"sim_robot": 0, "finetune_node": 0, "policy_node": 0}, result["logs"]
    # Every pushed policy passed the policy node's checks and was swapped in (keep-best pushes a new
    # version once the running one has driven its 3 episodes).
    assert status["accepted"] >= 4 and status["refused"] == 0, status
    assert result["learner_status"]["append_failures"] == 0 and result["learner_status"]["learner_error"] == ""
    assert len([e for e in episodes if e["policy_version"] == 0]) >= 3, episodes
    # The version the robot was left on against the sim policy, each evaluated without noise on the
    # same 10 stand-in episodes (the session's own episodes carry the exploration noise).
    before = np.mean(stand_in_returns(out / "policy-v0000.onnx"))
    final = np.mean(stand_in_returns(Path(status["path"])))
    assert Path(status["path"]).name != "policy-v0000.onnx", (result["final"], status)
    assert final > before + 100, (result["final"], before, final)
    # Every transition the learner node recorded is in the log, none torn or corrupt.
    from rlcontrol.replay.transition_log import LogReader

    reader = LogReader(out / "transitions")
    records = reader.tail()
    assert len(records) >= result["learner_status"]["logged"] and reader.report.torn_tail_bytes == 0
    assert len(records) >= 0.9 * sum(e["steps"] for e in episodes)


def _finetune_node_pid(out: Path) -> int:
    found = subprocess.run(["pgrep", "-f", f"out_dir:={out.resolve()}"], capture_output=True, text=True).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


@pytest.mark.slow
def test_killed_learner_leaves_the_policy_node_on_its_last_good_weights_and_resumes(sim_run, tmp_path, ros_env):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from ros_nodes import topics

    out = tmp_path / "finetune"
    policy = tmp_path / "policy.onnx"
    cli("export", sim_run, "--out", policy, "--parity-samples", 100)
    common = ["--policy", policy, "--real-time-factor", 4]
    robot = subprocess.Popen([sys.executable, "-m", "rlcontrol.cli", "deploy", *map(str, common), "--stand-in", STAND_IN,
                              "--duration", "150", "--json"], env=ros_env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    learner_args = [sys.executable, "-m", "rlcontrol.cli", "finetune", str(sim_run), "--policy", str(policy), "--robot",
                    "none", "--out", str(out), "--duration", "150", "--learning-starts", "300", "--export-every", "300",
                    "--json"]
    learner = subprocess.Popen(learner_args, env=ros_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("finetune_fault_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status, commands = {}, []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, topics.POLICY_STATUS, lambda m: status.update(json.loads(m.data)), qos)
    node.create_subscription(Float64MultiArray, topics.APPLIED_COMMAND, lambda m: commands.append(time.monotonic()), 100)

    def spin_until(predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.05)
            assert robot.poll() is None, robot.stderr.read()[-2000:]
        return predicate()

    restarted = None
    try:
        assert spin_until(lambda: status.get("version", 0) >= 2, 120), status
        os.kill(_finetune_node_pid(out), signal.SIGKILL)
        learner.wait(timeout=30)
        assert learner.returncode != 0  # the launcher reports the learner's death, as it should
        version = status["version"]
        killed_at = time.monotonic()
        spin_until(lambda: False, 6.0)
        # The robot kept being commanded (at 25 Hz x real-time factor 4) and by the same policy.
        assert sum(t > killed_at for t in commands) > 200
        assert status["version"] == version and status["refused"] == 0

        saved = json.loads((out / "finetune.jsonl").read_text().splitlines()[-1])
        restarted = subprocess.Popen(learner_args, env=ros_env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        # The restarted learner resumes its numbering from learner.pt, so its next export is
        # newer than what the policy node runs, and it is accepted.
        assert spin_until(lambda: status.get("version", 0) > version, 120), status
        assert status["version"] > saved["version"] and status["refused"] == 0
    finally:
        for proc in (restarted, learner, robot):
            if proc is not None:
                launch.stop_process(proc, timeout=30.0, group=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    from rlcontrol.replay.transition_log import read_log

    # The log holds both learners' transitions; the kill left at most a torn last record, dropped.
    assert len(list(read_log(out / "transitions"))) > 300
