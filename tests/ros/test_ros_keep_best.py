"""Keeping the best version over real DDS, separate processes: the simulated robot (cartpole-balance,
100-step episodes at 4x real time), the policy node exploring at std 0.1, and the learner.

1. `rlcontrol finetune --robot none --keep-best --min-episodes 4` (keep-best is opt-in; its learner
   never trains here: --learning-starts is out of reach, so every version comes from this test).
   v0 (a constant-zero policy, ~200 per episode) runs 4 whole episodes; the test then pushes a
   deliberately bad v1 (full push one way, ~65): after 4 whole episodes of it the learner rolls
   back on its own, re-pushing v0's file as v2.
2. The test pushes another bad file as v3 and at once sends Ctrl-C (SIGINT) to `rlcontrol finetune`:
   the session ends with the robot on the best version (v0's weights, re-pushed as v4), and the JSON
   says so. (Each bad version is its own file: a file already judged clearly worse would be rolled
   back on the next episode, whatever version number it is pushed as.)
3. The fine-tuning node alone (keep_best:=true), as a robot's own launch starts it, resumes the
   session; the test pushes a third bad file as v5 and kills the node with SIGKILL: the policy node
   keeps v5 and keeps commanding, and `rlcontrol finetune RUN --out OUT --restore-best` puts v0's
   weights back as v6.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_nodes import launch

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")

REPO_ROOT = Path(__file__).resolve().parents[2]
RTF = 4.0


def _helpers():
    spec = importlib.util.spec_from_file_location("_finetune_policies", REPO_ROOT / "tests/sim2real/finetune_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    helpers = _helpers()
    root = tmp_path_factory.mktemp("keep_best")
    run = helpers.make_finetune_run(root)
    # good: zero command; three bad ones (three files: a file's episodes count for every version it runs as)
    return run, *(helpers.export_constant_policy(run, root / f"{name}.onnx", action)
                  for name, action in (("good", 0.0), ("bad", 0.995), ("bad2", -0.995), ("bad3", 0.9)))


def _rows(path: Path, event: str) -> list[dict]:
    from sim2real.finetune import read_jsonl

    return [row for row in read_jsonl(path) if row.get("event") == event]


def _stop_all(procs: list[subprocess.Popen]) -> None:
    """Ctrl-C each process still running, newest first; its whole process group if it ignores that."""
    for proc in reversed(procs):
        launch.stop_process(proc, timeout=20.0, group=True)


def _node_pid(out: Path) -> int:
    found = subprocess.run(["pgrep", "-f", f"out_dir:={out.resolve()}"], capture_output=True, text=True).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


@pytest.mark.slow
def test_rollback_ctrl_c_and_restore_after_kill(policies, tmp_path, ros_env):
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float64MultiArray, String

    from ros_nodes import topics
    from ros_nodes.finetune_node import FINETUNE_STATUS, STATUS_QOS, UPDATE_QOS
    from sim2real.finetune import METRICS_FILE, update_message

    run, good, bad, bad2, bad3 = policies
    out = tmp_path / "finetune"
    env = {**ros_env, "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    robot = launch.spawn(["-m", "ros_nodes.sim_robot", "--env", "dmc:cartpole-balance", "--action-repeat", "4",
                          "--real-time-factor", str(RTF), "--max-episode-steps", "100", "--seed", "0"],
                         env, logs / "sim_robot.log", cwd=REPO_ROOT, new_session=True)
    policy_node = launch.spawn(["-m", "ros_nodes.policy_node", "--autostart", "--ros-args", "-p", f"model_path:={good}",
                                "-p", "control_rate_hz:=200.0", "-p", "obs_timeout_s:=0.25", "-p", "trigger:=observation",
                                "-p", "exploration_std:=0.1", "-p", "exploration_seed:=1"],
                               env, logs / "policy_node.log", cwd=REPO_ROOT, new_session=True)
    procs += [robot, policy_node]
    finetune_args = [sys.executable, "-m", "rlcontrol.cli", "finetune", str(run), "--policy", str(good), "--robot",
                     "none", "--out", str(out), "--learning-starts", "100000000", "--duration", "400", "--keep-best",
                     "--min-episodes", "4", "--json"]
    learner = subprocess.Popen(finetune_args, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    procs.append(learner)

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("keep_best_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status, learner_status, commands = {}, {}, []
    node.create_subscription(String, topics.POLICY_STATUS, lambda m: status.update(json.loads(m.data)), STATUS_QOS)
    node.create_subscription(String, FINETUNE_STATUS, lambda m: learner_status.update(json.loads(m.data)), STATUS_QOS)
    node.create_subscription(Float64MultiArray, topics.APPLIED_COMMAND, lambda m: commands.append(time.monotonic()), 100)
    updates = node.create_publisher(String, topics.POLICY_UPDATE, UPDATE_QOS)

    def spin_until(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.05)
            for proc, name in ((robot, "sim_robot"), (policy_node, "policy_node")):
                assert proc.poll() is None, f"{name} died: {(logs / (name + '.log')).read_text()[-2000:]}"
        assert predicate(), f"timed out waiting for {what}: policy {status}, learner {learner_status.get('selection')}"

    def push(path, version):
        assert updates.get_subscription_count() > 0
        updates.publish(String(data=json.dumps(update_message(path, None, version))))
        spin_until(lambda: status.get("version") == version, 20, f"v{version} accepted")

    def compared():
        return (learner_status.get("selection") or {}).get("compared_episodes", 0)

    from rlcontrol.deploy.runtime import sha256_file

    good_sha, bad3_sha = sha256_file(good), sha256_file(bad3)
    restarted = None
    try:
        # 1. v0 evaluated (4 whole episodes), then the bad v1, rolled back after its 4 whole episodes.
        spin_until(lambda: compared() >= 4 and status.get("version") == 0, 90, "4 whole episodes of v0")
        spin_until(lambda: updates.get_subscription_count() > 0, 10, "the policy node's update subscription")
        push(bad, 1)
        spin_until(lambda: status.get("version") == 2, 40, "the rollback to v0 as v2")
        assert status["sha256"] == good_sha and status["refused"] == 0, status
        rollback = _rows(out / METRICS_FILE, "rollback")
        assert len(rollback) == 1 and (rollback[0]["version"], rollback[0]["restores"], rollback[0]["from_version"]) \
            == (2, 0, 1), rollback
        assert re.fullmatch(r"compared at exploration std 0\.1: v0: mean [\d.]+ over \d+ episodes, 90% lower bound "
                            r"([\d.]+) \(best\); v1: upper bound [\d.]+ < \1: rolled back to v0 \(re-pushed as v2\)",
                            rollback[0]["reason"]), rollback[0]["reason"]
        table = {row["version"]: row for row in rollback[0]["table"]}
        assert table[1]["upper"] < table[0]["lower"] and table[1]["episodes"] >= 4 and table[0]["episodes"] >= 4

        # 2. Another bad file as v3 and at once Ctrl-C (v3 cannot have 4 whole episodes yet): the session
        # ends on the best version (v0's weights, as v4).
        push(bad2, 3)
        learner.send_signal(signal.SIGINT)
        stdout, stderr = learner.communicate(timeout=60)
        assert learner.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        final = result["final"]
        assert result["stopped_by"] == "interrupt" and result["exit_codes"] == {"finetune_node": 0}
        assert (final["version"], final["weights_of"], final["running_version"], final["best_version"]) == (4, 0, 3, 0)
        assert final["confirmed"] and final["reason"].endswith("ended on v0 instead of v3 (re-pushed as v4)"), final
        assert {row["version"] for row in result["versions"]} >= {0, 1} and result["policy_status"]["version"] == 4
        spin_until(lambda: status.get("version") == 4, 5, "v4")
        assert status["sha256"] == good_sha

        # 3. The node alone (a robot's own launch), killed with SIGKILL while the bad v5 runs.
        params = {"run_dir": run, "policy_path": good, "log_dir": out / "transitions", "out_dir": out.resolve(),
                  "learning_starts": 100000000, "keep_best": "true", "autostart": "true"}
        restarted = launch.spawn(["-m", "ros_nodes.finetune_node", "--ros-args",
                                  *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]],
                                 env, logs / "finetune_node2.log", cwd=REPO_ROOT, new_session=True)
        procs.append(restarted)
        learner_status.clear()
        spin_until(lambda: learner_status.get("policy", {}).get("version") == 4, 60, "the restarted node")
        push(bad3, 5)
        os.kill(_node_pid(out), signal.SIGKILL)
        restarted.wait(timeout=10)
        killed_at = time.monotonic()
        spin_until(lambda: time.monotonic() - killed_at > 2.0, 5, "2 s")
        assert status["version"] == 5 and status["sha256"] == bad3_sha  # the robot keeps its accepted version
        assert sum(t > killed_at for t in commands) > 100  # and is still commanded (~100 Hz)

        restore = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "finetune", str(run), "--out", str(out),
                                  "--restore-best", "--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                                 timeout=120)
        assert restore.returncode == 0, restore.stderr[-3000:]
        restored = json.loads(restore.stdout.strip().splitlines()[-1])
        assert (restored["best_version"], restored["running_version"], restored["pushed_version"]) == (0, 5, 6)
        assert restored["reason"].endswith("restored as v6 in place of v5")
        spin_until(lambda: status.get("version") == 6, 10, "v6")
        assert status["sha256"] == good_sha and status["refused"] == 0
        assert [row["version"] for row in _rows(out / METRICS_FILE, "restore")] == [6]
    finally:
        _stop_all(procs)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.slow
def test_stop_on_plateau_ends_the_session_on_the_version_that_reached_it(policies, tmp_path, ros_env):
    """`rlcontrol finetune --robot none --stop-on-plateau`: v0 is the bad policy (~65 per episode); the
    test pushes the good one as v1 (~200); once 3 episodes of it agree (the rule's window here), the
    session ends by itself, on v1, and says why."""
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from ros_nodes import topics
    from ros_nodes.finetune_node import STATUS_QOS, UPDATE_QOS
    from sim2real.finetune import METRICS_FILE, update_message

    run, good, bad, _, _ = policies
    out = tmp_path / "finetune"
    env = {**ros_env, "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [launch.spawn(["-m", "ros_nodes.sim_robot", "--env", "dmc:cartpole-balance", "--action-repeat", "4",
                           "--real-time-factor", str(RTF), "--max-episode-steps", "100", "--seed", "0"],
                          env, logs / "sim_robot.log", cwd=REPO_ROOT, new_session=True),
             launch.spawn(["-m", "ros_nodes.policy_node", "--autostart", "--ros-args", "-p", f"model_path:={bad}",
                           "-p", "control_rate_hz:=200.0", "-p", "obs_timeout_s:=0.25", "-p", "trigger:=observation",
                           "-p", "exploration_std:=0.1", "-p", "exploration_seed:=1"],
                          env, logs / "policy_node.log", cwd=REPO_ROOT, new_session=True)]
    learner = subprocess.Popen([sys.executable, "-m", "rlcontrol.cli", "finetune", str(run), "--policy", str(bad),
                                "--robot", "none", "--out", str(out), "--learning-starts", "100000000",
                                "--duration", "120", "--stop-on-plateau", "--plateau-window", "3",
                                "--plateau-tolerance", "0.5", "--json"],
                               env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    procs.append(learner)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("plateau_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status = {}
    node.create_subscription(String, topics.POLICY_STATUS, lambda m: status.update(json.loads(m.data)), STATUS_QOS)
    updates = node.create_publisher(String, topics.POLICY_UPDATE, UPDATE_QOS)
    episodes = out / "episodes.jsonl"

    def spin_until(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.05)
            assert learner.poll() is None or what == "the session's end", learner.communicate()[1][-3000:]
        assert predicate(), f"timed out waiting for {what}: policy {status}"

    def logged(version) -> int:
        from sim2real.finetune import read_jsonl

        return sum(row.get("policy_version") == version for row in read_jsonl(episodes)) if episodes.exists() else 0

    try:
        spin_until(lambda: logged(0) >= 2 and updates.get_subscription_count() > 0, 90, "2 episodes of v0")
        updates.publish(String(data=json.dumps(update_message(good, None, 1))))
        spin_until(lambda: learner.poll() is not None, 60, "the session's end")
        stdout, stderr = learner.communicate(timeout=30)
        assert learner.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        final = result["final"]
        assert result["stopped_by"] == "plateau" and final["stopped_by_plateau"], result["stopped_by"]
        assert (final["version"], final["weights_of"], final["pushed_version"]) == (1, 1, None), final
        assert re.match(r"plateau: the last 3 episodes returned [\d.]+-[\d.]+ .* over v0's [\d.]+", final["reason"])
        assert [row["version"] for row in _rows(out / METRICS_FILE, "plateau")] == [1]
        assert logged(1) >= 3 and result["policy_status"]["version"] == 1
    finally:
        _stop_all(procs)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
