"""`rlcontrol finetune`: start the on-board learner, and with `--robot sim` the whole loop on one machine.

    rlcontrol finetune RUN_DIR [--policy policy.onnx] [--out DIR] [--robot sim|none]
                       [--stand-in JSON] [--duration S | --episodes N] [--real-time-factor X]
                       [--updates-per-transition R] [--learning-starts N] [--export-every N]
                       [--lr-scale X] [--critic-warmup N] [--sim-replay-ratio R]
                       [--keep-best | --no-keep-best] [--rollback | --no-rollback]
                       [--min-episodes N] [--confidence C] [--json]
    rlcontrol finetune RUN_DIR [--out DIR] --restore-best [--dry-run] [--min-episodes N] [--confidence C]

``--robot sim`` starts three processes talking over real DDS: the simulated robot as the "real
robot" stand-in (``--stand-in``: a JSON object of the physics, latency, noise and hidden task
keywords the policy was not trained on, or a preset's name (sim2real/stand_in.py), given to the
robot's ``randomization`` parameter and to nothing else), the policy
node running the deployed ONNX policy, and the fine-tuning node (ros_nodes.finetune_node), which
records the robot's transitions, trains the run's agent and pushes new weights to the policy node.
``--robot none`` starts only the fine-tuning node, for a robot whose policy node runs in its own
launch. Without ``--policy`` the run's policy.pt is exported first (OUT/policy-v0000.onnx).

The result lists every episode's return with the policy version that drove it (from
/policy/status), so the improvement is visible per version.

The end of a session (the duration or episode count reached, or SIGINT/SIGTERM to this process:
Ctrl-C) is the same: the stand-in robot is stopped and the fine-tuning node is asked to end
(SIGINT), which stops its learner. With ``--keep-best`` (opt-in for now: the default will be chosen
by the repeatability measurements of issue 17) it leaves the policy node on the best version by the
keep-best rule (sim2real.version_selection); without it the policy node stays on the last version
it accepted. Either way the result's ``final`` says which version the robot runs and why, with the
per-version table and the best version by the rule. A second Ctrl-C stops everything at once.

``restore_best`` (``--restore-best``): the same rule over OUT's logs, for a session whose learner
was killed: the best version's file is pushed to the running policy node as a new version.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from rlcontrol.deploy.rollout import pixel_keywords
from rlcontrol.errors import UserError
from ros_nodes.launch import NODE, ROBOT, check_stand_in, robot_pixel_flags, spawn, stop_process

FINETUNE = "finetune_node"


def finetune(run_dir: str, *, policy: str | None = None, out: str | None = None, robot: str = "sim",
             stand_in: dict | str | None = None, duration: float | None = None, episodes: int | None = None,
             real_time_factor: float = 1.0, seed: int = 0, updates_per_transition: float = 1.0,
             learning_starts: int = 500, export_every: int = 1000, lr_scale: float = 1.0, critic_warmup: int = 0,
             sim_replay_ratio: float = 0.0, policy_averaging: float = 0.005, fsync: str = "interval", exploration_std: float = 0.2,
             keep_best: bool = False, rollback: bool = True, min_episodes: int = 3, confidence: float = 0.9,
             stop_on_plateau: bool = False, plateau_window: int = 10, plateau_tolerance: float = 0.05,
             train_between_episodes: bool = False, lockstep: bool = False, quiet: bool = False) -> dict:
    from rlcontrol.deploy import runtime
    from rlcontrol.deploy.export import export_run
    from ros_nodes.launch import _action_repeat
    from sim2real.plateau import PlateauRule
    from sim2real.version_selection import SelectionSettings

    # one line for a bad value, before anything starts
    SelectionSettings(min_episodes=min_episodes, confidence=confidence)
    PlateauRule(window=plateau_window, tolerance=plateau_tolerance)
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a run folder (no config.yaml)")
    if robot not in ("sim", "none"):
        raise UserError(f"--robot {robot!r}: choose sim (the simulated stand-in) or none (a real robot's own launch)")
    out_dir = Path(out or run / "finetune")
    out_dir.mkdir(parents=True, exist_ok=True)
    if policy is None:
        policy = str(out_dir / "policy-v0000.onnx")
        if not Path(policy).exists():
            export_run(run, policy)
    meta = runtime.load(policy, warmup=1).metadata
    if robot == "sim":  # the robot's camera as the policy takes it (none for a vector policy), then its hidden world
        pixel_flags = robot_pixel_flags(meta)
        stand_in = check_stand_in(stand_in, meta.env_id, camera_kwargs=pixel_keywords(meta))
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    params = {"run_dir": str(run.resolve()), "policy_path": str(Path(policy).resolve()),
              "log_dir": str((out_dir / "transitions").resolve()), "out_dir": str(out_dir.resolve()),
              "fsync": fsync, "updates_per_transition": float(updates_per_transition),
              "learning_starts": int(learning_starts), "export_every": int(export_every), "seed": int(seed),
              "lr_scale": float(lr_scale), "critic_warmup": int(critic_warmup),
              "sim_replay_ratio": float(sim_replay_ratio), "policy_averaging": float(policy_averaging),
              "keep_best": bool(keep_best), "rollback": bool(rollback), "min_episodes": int(min_episodes),
              "confidence": float(confidence), "stop_on_plateau": bool(stop_on_plateau),
              "plateau_window": int(plateau_window), "plateau_tolerance": float(plateau_tolerance),
              "train_between_episodes": bool(train_between_episodes), "autostart": True}
    ros_params = [arg for key, value in params.items() for arg in ("-p", f"{key}:={_param(value)}")]

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # Our own SIGINT/SIGTERM handling: rclpy's would shut the context down, and the session's end
    # needs it (the monitor watches the policy node take the final version).
    rclpy.init(args=["--ros-args", "--disable-rosout-logs"], signal_handler_options=SignalHandlerOptions.NO)
    children = {}
    monitor = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        monitor = _FinetuneMonitor(out_dir, keep_best=keep_best)
        for sig in previous:
            signal.signal(sig, monitor.interrupt)
        children[FINETUNE] = spawn(["-m", "ros_nodes.finetune_node", "--ros-args", *ros_params], env,
                                   logs / "finetune_node.log", new_session=True)
        if robot == "sim":
            repeat = _action_repeat(meta.env_id, meta.control_period)
            rate_hz = max(100.0, 2.0 * real_time_factor / meta.control_period)
            children[ROBOT] = spawn(["-m", "ros_nodes.sim_robot", "--env", meta.env_id, "--seed", str(seed),
                                     "--action-repeat", str(repeat), "--real-time-factor", str(real_time_factor),
                                     *pixel_flags, "--randomization", json.dumps(stand_in or {}), "--no-autostart",
                                     *(["--wait-for-learner"] if train_between_episodes else []),
                                     *(["--lockstep"] if lockstep else [])],
                                    env, logs / "sim_robot.log", new_session=True)
            children[NODE] = spawn(["-m", "ros_nodes.policy_node", "--ros-args", "-p",
                                    f"model_path:={Path(policy).resolve()}", "-p", f"control_rate_hz:={float(rate_hz)!r}",
                                    "-p", f"obs_timeout_s:={float(max(0.25, 5 * meta.control_period / real_time_factor))!r}",
                                    "-p", "trigger:=observation", "-p", f"exploration_std:={float(exploration_std)!r}",
                                    "-p", f"exploration_seed:={int(seed)}"],
                                   env, logs / "policy_node.log", new_session=True)
        result = monitor.run(children, robot == "sim", episodes=episodes, duration=duration, quiet=quiet)
    finally:
        # The robot first (no more transitions), then the learner (flushes its log), then the policy node.
        hurry = monitor is not None and monitor.hurry
        codes = {name: stop_process(children[name], timeout=2.0 if hurry else 60.0 if name == FINETUNE else 10.0)
                 for name in (ROBOT, FINETUNE, NODE) if name in children}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if rclpy.ok():
            rclpy.shutdown()
    return {**result, "run_dir": str(run), "policy": str(policy), "out": str(out_dir), "stand_in": stand_in or {},
            "real_time_factor": real_time_factor, "exit_codes": codes, "logs": str(logs)}


def _param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# The policy node's /diagnostics values kept once a second through a session (control_loop_summary).
CONTROL_LOOP_KEYS = ("loop_rate_hz", "missed_ticks", "latency_count", "latency_p50_ms", "latency_p99_ms",
                     "latency_max_ms", "obs_to_command_p50_ms", "obs_to_command_p99_ms", "policy_version",
                     "policy_accepted")


def control_loop_summary(series: list[dict]) -> dict:
    """The policy node's control loop over a fine-tuning session, from its /diagnostics reports (one a
    second; each report's latency percentiles are over the node's last 10,000 ticks, its missed
    ticks and accepted versions are counts since activation). A swap's missed ticks are those the
    node counted in the report interval in which a version was accepted and in the next one (a late
    tick is counted when it comes, which may be after the next report). Latency: the last report
    (the session's final window) and the worst p99 and max of any report."""
    rows = [r for r in series if r.get("missed_ticks") is not None and r.get("policy_accepted") is not None]
    if not rows:
        return {"reports": 0}
    missed = [int(r["missed_ticks"]) for r in rows]
    accepted = [int(r["policy_accepted"]) for r in rows]
    near_swap: set[int] = set()
    for i in range(1, len(rows)):
        if accepted[i] > accepted[i - 1]:
            near_swap.update(j for j in (i, i + 1) if j < len(rows))
    last = rows[-1]
    worst = lambda key: max((r[key] for r in rows if isinstance(r.get(key), (int, float))), default=None)  # noqa: E731
    return {"reports": len(rows), "swaps": accepted[-1] - accepted[0], "missed_ticks": missed[-1],
            "missed_ticks_near_swaps": sum(missed[i] - missed[i - 1] for i in sorted(near_swap)),
            "last": {k: last.get(k) for k in CONTROL_LOOP_KEYS if k in last},
            "worst_latency_p99_ms": worst("latency_p99_ms"), "worst_latency_max_ms": worst("latency_max_ms"),
            "worst_obs_to_command_p99_ms": worst("obs_to_command_p99_ms")}


def summarize_episodes(episodes: list[dict], window: int = 3) -> dict:
    """Mean return of the first and last ``window`` episodes, and per policy version."""
    returns = [e["return"] for e in episodes]
    by_version: dict[str, list[float]] = {}
    for e in episodes:
        by_version.setdefault(str(e.get("policy_version")), []).append(e["return"])
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"returns": returns, "first_mean": mean(returns[:window]), "last_mean": mean(returns[-window:]),
            "by_version": {k: {"episodes": len(v), "mean_return": mean(v)} for k, v in by_version.items()}}


class _FinetuneMonitor:
    """The launcher's rclpy node: lifecycle of the robot and policy node, episode returns tagged
    with the running policy version, and the learner's status."""

    def __init__(self, out_dir: Path, keep_best: bool = False):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import String

        from ros_nodes import topics
        from ros_nodes.finetune_node import FINETUNE_STATUS, STATUS_QOS

        self.out_dir = Path(out_dir)
        self.keep_best = keep_best
        self.interrupted = self.hurry = False
        self.finishing = False
        self.node = Node("rlcontrol_finetune")
        self.change = {name: self.node.create_client(ChangeState, f"/{name}/change_state") for name in (NODE, ROBOT)}
        self.episodes: list[dict] = []
        self._waited_s = None
        self.policy_status: dict = {}
        self.learner_status: dict = {}
        self.control_loop: list[dict] = []
        episode_qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, topics.EPISODE, self._on_episode, episode_qos)
        self.node.create_subscription(String, topics.POLICY_STATUS, self._on_policy, STATUS_QOS)
        self.node.create_subscription(String, FINETUNE_STATUS, self._on_learner, STATUS_QOS)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 10)
        self._started = time.monotonic()

    def _on_diagnostics(self, msg) -> None:
        from ros_nodes.launch import _number

        for status in msg.status:
            if status.name.startswith("rlcontrol policy"):
                values = {kv.key: _number(kv.value) for kv in status.values if kv.key in CONTROL_LOOP_KEYS}
                self.control_loop.append({"t_s": round(time.monotonic() - self._started, 2), **values})

    def _on_episode(self, msg) -> None:
        event = json.loads(msg.data)
        if event.get("event") == "start":  # with train_between_episodes: how long the robot waited for the learner
            self._waited_s = event.get("waited_s")
        if event.get("event") == "end":
            self.episodes.append({"episode": event.get("episode"), "return": float(event.get("return", 0.0)),
                                  "steps": event.get("steps"), "terminated": bool(event.get("terminated")),
                                  "truncated": bool(event.get("truncated")),
                                  "policy_version": self.policy_status.get("version"),
                                  "t_s": round(time.monotonic() - self._started, 2),
                                  **({"waited_s": self._waited_s} if self._waited_s is not None else {}),
                                  **({"late_commands": event["late_commands"]} if "late_commands" in event else {})})
            self._waited_s = None
            if not self.quiet:
                print(f"finetune: episode {event.get('episode')}: return {event.get('return', 0.0):.1f} "
                      f"(policy v{self.policy_status.get('version')})", flush=True)

    def interrupt(self, signum, frame) -> None:
        """SIGINT/SIGTERM: the first ends the session as its duration would; the second stops at once."""
        if self.interrupted:
            self.hurry = True
            raise KeyboardInterrupt
        self.interrupted = True
        left_on = "the best version" if self.keep_best else "the last accepted version"
        print(f"finetune: {signal.Signals(signum).name}: ending the session (the robot is left on {left_on}; "
              "again to stop at once)", flush=True)

    def _on_policy(self, msg) -> None:
        self.policy_status = json.loads(msg.data)

    def _on_learner(self, msg) -> None:
        self.learner_status = json.loads(msg.data)

    def _check_children(self) -> None:
        for name, proc in self.children.items():
            if name == FINETUNE and self.finishing:
                continue  # asked to end
            if proc.poll() is not None:
                hint = ""
                if name == FINETUNE:
                    hint = ("; the policy node keeps the version it runs, and `rlcontrol finetune RUN_DIR --out "
                            f"{self.out_dir} --restore-best` puts the best logged version back")
                raise UserError(f"{name} exited early with code {proc.returncode} (see its log in "
                                f"{self.logs_hint}){hint}")

    def _transition(self, name: str, transition_id: int, label: str, timeout: float = 60.0) -> None:
        import rclpy
        from lifecycle_msgs.srv import ChangeState

        client = self.change[name]
        deadline = time.monotonic() + timeout
        while not client.wait_for_service(timeout_sec=0.2):
            self._check_children()
            if time.monotonic() > deadline:
                raise UserError(f"{name} did not come up within {timeout:.0f} s (see its log)")
        request = ChangeState.Request()
        request.transition.id = transition_id
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done() or not future.result().success:
            raise UserError(f"{name} refused to {label} (its log says why)")

    def _wait_for_learner(self, timeout: float = 120.0) -> None:
        import rclpy

        deadline = time.monotonic() + timeout
        while not self.learner_status:
            rclpy.spin_once(self.node, timeout_sec=0.1)
            self._check_children()
            if time.monotonic() > deadline:
                raise UserError(f"{FINETUNE} did not report within {timeout:.0f} s (see its log)")

    def run(self, children: dict, with_robot: bool, *, episodes: int | None, duration: float | None,
            quiet: bool) -> dict:
        import rclpy
        from lifecycle_msgs.msg import Transition

        self.children, self.quiet, self.logs_hint = children, quiet, "the logs folder"
        self._wait_for_learner()  # recording before the first step, so no transition is missed
        if with_robot:
            self._transition(NODE, Transition.TRANSITION_CONFIGURE, "configure")
            self._transition(ROBOT, Transition.TRANSITION_CONFIGURE, "configure")
            self._transition(NODE, Transition.TRANSITION_ACTIVATE, "activate")
            self._transition(ROBOT, Transition.TRANSITION_ACTIVATE, "activate")
        start = time.monotonic()
        self.session_start = time.time()
        stopped_by = "duration"
        while True:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            self._check_children()
            if self.interrupted:
                stopped_by = "interrupt"
                break
            if episodes and len(self.episodes) >= episodes:
                stopped_by = "episodes"
                break
            if duration and time.monotonic() - start >= duration:
                break
            plateau = (self.learner_status.get("selection") or {}).get("plateau")
            if plateau:
                stopped_by = "plateau"
                if not quiet:
                    print(f"finetune: {plateau.get('reason')}: ending the session", flush=True)
                break
        wall = time.monotonic() - start
        if with_robot:
            self._transition(ROBOT, Transition.TRANSITION_DEACTIVATE, "deactivate")
        self._spin_for(1.5)  # the last episode events reach the learner; the last status messages
        final = self._end_learner(children[FINETUNE])
        if with_robot:
            self._transition(NODE, Transition.TRANSITION_DEACTIVATE, "deactivate")
        if final is not None and not quiet:
            print(f"finetune: the robot is left on v{final.get('version')}: {final.get('reason')}", flush=True)
        return {"episodes": self.episodes, **summarize_episodes(self.episodes), "wall_s": round(wall, 2),
                "stopped_by": stopped_by, "final": final, "versions": (final or {}).get("table", []),
                "policy_status": self.policy_status, "learner_status": self.learner_status,
                "control_loop": control_loop_summary(self.control_loop), "control_loop_reports": self.control_loop}

    def _spin_for(self, seconds: float, until=None) -> bool:
        import rclpy

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return until is not None and until()

    def _end_learner(self, proc, timeout: float = 60.0) -> dict | None:
        """SIGINT to the fine-tuning node: it stops learning and leaves the robot on the best version.
        Returns its session_end record (None if it wrote none), once the policy node runs that version."""
        from sim2real.finetune import METRICS_FILE, read_jsonl

        self.finishing = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        self._spin_for(timeout, until=lambda: proc.poll() is not None)
        ends = [row for row in read_jsonl(self.out_dir / METRICS_FILE)
                if row.get("event") == "session_end" and row.get("time", 0) >= self.session_start]
        final = ends[-1] if ends else None
        if final is not None:
            confirmed = self._spin_for(10.0, until=lambda: self.policy_status.get("version") == final["version"])
            final = {**final, "confirmed": confirmed}
        return final


def restore_best(out: str | Path, *, min_episodes: int = 3, confidence: float = 0.9, dry_run: bool = False,
                 timeout: float = 15.0) -> dict:
    """Push the best version by the keep-best rule over OUT's logs to the running policy node (as a
    new version), for a session whose learner was killed; ``dry_run``: only say which one."""
    from sim2real.finetune import METRICS_FILE, append_jsonl, logged_max_version, restore_plan, update_message
    from sim2real.version_selection import SelectionSettings

    out_dir = Path(out)
    settings = SelectionSettings(min_episodes=min_episodes, confidence=confidence)
    decision, path, sha = restore_plan(out_dir, settings)
    best = decision.best
    result = {"out": str(out_dir), "best_version": best.label, "path": path, "sha256": sha,
              "reason": decision.best_text, "table": decision.table, "dry_run": dry_run, "pushed_version": None,
              "running_version": None}
    if dry_run:
        return result

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String

    from ros_nodes import topics
    from ros_nodes.finetune_node import STATUS_QOS, UPDATE_QOS

    context = Context()
    rclpy.init(args=["--ros-args", "--disable-rosout-logs"], context=context,
               signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("rlcontrol_restore_best", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    status: dict = {}
    node.create_subscription(String, topics.POLICY_STATUS, lambda m: status.update(json.loads(m.data)), STATUS_QOS)
    publisher = node.create_publisher(String, topics.POLICY_UPDATE, UPDATE_QOS)

    def spin_until(predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not predicate():
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    try:
        if not spin_until(lambda: "version" in status, timeout):
            raise UserError(f"no policy node answered on {topics.POLICY_STATUS} within {timeout:.0f} s (is it running, "
                             f"in this ROS_DOMAIN_ID?); the best version is v{best.label}: start the policy node with "
                             f"model_path:={path}")
        running, refused = int(status["version"]), int(status.get("refused", 0))
        result["running_version"] = running
        if status.get("sha256") == sha:
            result["reason"] = f"{decision.best_text}; the policy node already runs its weights (as v{running})"
            return result
        version = max(running, logged_max_version(out_dir)) + 1
        update = update_message(path, sha, version)
        if not spin_until(lambda: publisher.get_subscription_count() > 0, timeout):
            raise UserError(f"the policy node does not subscribe to {topics.POLICY_UPDATE}")
        publisher.publish(String(data=json.dumps(update)))
        if not spin_until(lambda: status.get("version") == version or int(status.get("refused", 0)) > refused, timeout):
            raise UserError(f"the policy node did not take v{version} within {timeout:.0f} s")
        if status.get("version") != version:
            raise UserError(f"the policy node refused v{version} ({path}): {status.get('last_refusal')}")
        reason = f"{decision.best_text}; restored as v{version} in place of v{running}"
        append_jsonl(out_dir / METRICS_FILE, {"event": "restore", "version": version, "restores": best.label,
                                              "sha256": sha, "path": update["path"], "from_version": running,
                                              "reason": reason, "exploration_std": decision.exploration_std,
                                              "table": decision.table, "time": time.time()})
        result.update(pushed_version=version, reason=reason)
        return result
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
