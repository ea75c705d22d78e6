"""Keeping the best policy version: the fine-tuning node's bookkeeping, with the rule of
sim2real.version_selection applied to the node's message stream. ros_nodes.finetune_node is the
ROS shell around it.

ROS-free (no rclpy; nothing heavy at import, as the launcher imports the node's module): the node
feeds it /policy/status dicts, the policy node's exploration std, episode events and e-stops in
send-stamp order with the robot's topics, and the learner's exports; it publishes /policy/update
messages through the ``publish`` callable it is given. It runs on the node's executor thread, except
:meth:`VersionKeeper.offer`, which the learner thread calls.

What it does:

* **Attribution.** Every robot episode is appended to OUT/episodes.jsonl with the version that drove
  it (from /policy/status, in send-stamp order, so an episode goes to the version that ran it), its
  weights' sha256, whether that version ran the **whole** episode, whether an **e-stop** intervened,
  and the **exploration std** in force. Whole episodes without an e-stop are the rule's evidence.
* **Pushes.** The learner's newest export waits until the previous push is answered (accepted,
  refused, or 15 s passed); older unpushed exports are dropped.
* **Keep-best mode** (``SelectionSettings.keep_best``; off by default until the repeatability
  measurements of issue 17 choose). The newest export also waits until the running version's
  weights have ``min_episodes`` whole episodes; with ``rollback`` (part of keep-best mode) a running
  version whose upper confidence bound is below the best's lower bound is replaced by the best
  version's file, re-pushed under the next version number (the policy node accepts only newer
  versions and keeps one level of undo, so a re-push reaches back any number of versions). At the
  end of the session the robot is left on the best version, re-pushed if it is not running.
* **Without keep-best** every export is pushed once the previous push is answered, nothing is
  rolled back, and the session ends on the version running, as before keep-best existed. The
  session_end record still names the best version by the rule and has the per-version table, as
  information.
* **Plateau stop** (``plateau_rule``, off unless given: ``rlcontrol finetune --stop-on-plateau``).
  After every robot episode the rule of sim2real.plateau looks at the recent returns; once they have
  plateaued, no further export is pushed, the plateau (its reason and the version that drove the
  last episode) goes to finetune.jsonl and to /finetune/status (``selection.plateau``, which the
  launcher takes as the end of the session), and at the end the robot is left on that version
  (re-pushed if a push in flight replaced it). With keep-best as well, keep-best's end rule decides.
* Pushes, rollbacks and the session's end are appended to OUT/finetune.jsonl with the rule's reason
  and the per-version table; :meth:`VersionKeeper.status` is /finetune/status's ``selection``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

EPISODES_FILE = "episodes.jsonl"  # = sim2real.finetune.EPISODES_FILE (not imported here: that pulls in torch)
PUSH_TIMEOUT_S = 15.0  # a push neither accepted nor refused by then is given up (the node may be down)


class VersionKeeper:
    """The keep-best bookkeeping of one fine-tuning node (see the module docstring).

    ``learner``: the LiveLearner (version numbers, and its counters for the episode log);
    ``publish``: sends one /policy/update message (a dict); ``logger``: info/warning/error."""

    def __init__(self, settings, learner, out_dir: str | Path, publish: Callable[[dict], None], logger,
                 plateau_rule=None) -> None:
        from sim2real.finetune import episode_results, read_jsonl

        self.settings, self.learner, self.out_dir = settings, learner, Path(out_dir)
        self.plateau_rule = plateau_rule  # sim2real.plateau.PlateauRule, or None: no stopping rule
        self.robot_episodes = [e for row in read_jsonl(self.out_dir / EPISODES_FILE)  # every episode, for the plateau
                               if (e := _robot_episode(row)) is not None]
        self.plateau: dict | None = None  # once reached: the reason, and the version it ends on
        self._publish, self.logger = publish, logger
        self.policy_status: dict = {}  # the newest /policy/status, as received
        self.episodes = episode_results(self.out_dir)  # a restarted learner keeps the session's evidence
        self._checked = len(self.episodes)  # episodes the rollback rule has seen
        # Attribution, in send-stamp order with the robot's topics:
        self._ordered_status: dict = {}
        self._std: float | None = None  # the policy node's exploration_std
        self._episode_start: dict | None = None  # the ordered status at the episode's start event
        self._intervened = False
        # Pushes and decisions:
        self._held: dict | None = None  # the newest export not pushed yet (filled by the learner thread)
        self._held_lock = threading.Lock()
        self._pending: dict | None = None  # a push the policy node has not answered yet
        self._failed: set[str] = set()  # sha256 of pushes the policy node refused (never re-pushed)
        self.pushed = self.rollbacks = 0
        self.last_reason = ""
        self.final: dict | None = None

    # ------------------------------------------------------------------ what the node feeds in

    def start(self) -> None:
        """On activate: a new session of episodes; the status known so far is the current one."""
        self._ordered_status = dict(self.policy_status)
        self._episode_start, self._intervened = None, False
        self.final = None

    def on_policy_status(self, status: dict) -> None:
        """A /policy/status as received (not yet ordered): the decisions use the newest."""
        self.policy_status = status
        self.learner.observe_version(status.get("version"))

    def observe(self, kind: str, payload) -> bool:
        """One message in send-stamp order. True when it is the keeper's alone (``policy_status``,
        ``exploration_std``); False for the robot's messages, which the transition recorder needs too."""
        if kind == "policy_status":
            self._ordered_status = payload
            self._std = _status_std(payload, self._std)
            return True
        if kind == "exploration_std":  # from /diagnostics: only for a policy node whose status lacks it
            if "exploration_std" not in self._ordered_status:
                self._std = payload
            return True
        if kind == "episode":
            if payload.get("event") == "start":
                self._episode_start = dict(self._ordered_status)
                self._intervened = False
            elif payload.get("event") == "end":
                self._log_episode(payload)
                self._episode_start = None
        elif kind == "estop" and payload:
            self._intervened = True
        return False

    def offer(self, update: dict) -> None:
        """The learner thread's new export: pushed by :meth:`tick` when its turn comes."""
        with self._held_lock:
            self._held = update

    def settled(self) -> bool:
        """Nothing waits to be pushed or answered, except what keep-best mode holds until the running
        version is judged (that takes robot episodes, so a robot waiting on this must not wait for it)."""
        with self._held_lock:
            held = self._held is not None and not self.settings.keep_best
        return not held and self._pending is None

    def _log_episode(self, event: dict) -> None:
        from sim2real.finetune import append_jsonl
        from sim2real.version_selection import EpisodeResult

        status, start = self._ordered_status, self._episode_start or {}
        version = status.get("version")
        # Whole: one version (the same weights) from the episode's start event to its end event.
        whole = bool(start) and start.get("version") == version and start.get("sha256") == status.get("sha256")
        ret = event.get("return")
        row = {"episode": event.get("episode"), "return": ret, "steps": event.get("steps"),
               "policy_version": version, "policy_sha256": status.get("sha256"), "policy_path": status.get("path"),
               "start_version": start.get("version"), "whole": whole, "intervened": self._intervened,
               "exploration_std": self._std, "learner_version": self.learner.version, "updates": self.learner.updates,
               "time": time.time()}
        append_jsonl(self.out_dir / EPISODES_FILE, row, sync=False)
        self._check_plateau(row, status)
        counted = whole and not self._intervened and isinstance(version, int) and isinstance(ret, (int, float))
        if counted:
            self.episodes.append(EpisodeResult(version=version, ret=float(ret), exploration_std=self._std,
                                               sha256=status.get("sha256"), path=status.get("path")))
        why = "" if counted else (" (not compared: " + ("e-stop" if self._intervened else "versions changed during it")
                                  + ")")
        self.logger.info(f"episode {row['episode']}: return {float(ret or 0.0):.1f} over {row['steps']} steps "
                         f"(policy v{version}, {row['updates']} updates){why}")

    def _check_plateau(self, row: dict, status: dict) -> None:
        from sim2real.finetune import METRICS_FILE, append_jsonl
        from sim2real.plateau import plateau

        episode = _robot_episode(row)
        if episode is None:
            return
        self.robot_episodes.append(episode)
        if self.plateau_rule is None or self.plateau is not None:
            return
        reason = plateau(self.robot_episodes, self.plateau_rule)
        if reason is None:
            return
        with self._held_lock:  # nothing more is pushed
            self._held = None
        self.plateau = {"event": "plateau", "version": episode.version, "sha256": status.get("sha256"),
                        "path": status.get("path"), "episode": row.get("episode"), "reason": reason,
                        "time": time.time()}
        append_jsonl(self.out_dir / METRICS_FILE, self.plateau)
        self.last_reason = reason
        self.logger.info(f"{reason}: no more pushes; the session ends on v{episode.version}")

    # ------------------------------------------------------------------ pushes and decisions

    def _answered(self) -> bool:
        """Whether the pending push is settled (accepted, refused or timed out); clears it if so."""
        pending = self._pending
        if pending is None:
            return True
        status = self.policy_status
        version = status.get("version")
        if isinstance(version, int) and version >= pending["version"]:
            self._pending = None
        elif int(status.get("refused", 0)) > pending["refused"]:
            self.logger.error(f"the policy node refused v{pending['version']}: {status.get('last_refusal')}")
            if pending.get("sha256"):
                self._failed.add(pending["sha256"])
            self._pending = None
        elif time.monotonic() - pending["since"] > PUSH_TIMEOUT_S:
            self.logger.warning(f"v{pending['version']} not confirmed by the policy node within {PUSH_TIMEOUT_S:.0f} s")
            self._pending = None
        return self._pending is None

    def _push(self, update: dict) -> None:
        self._pending = {"version": update["version"], "since": time.monotonic(), "sha256": update.get("sha256"),
                         "refused": int(self.policy_status.get("refused", 0))}
        self._publish(update)
        self.pushed += 1

    def _repush(self, best, event: str, decision, running_version, why: str | None = None) -> int | None:
        """Run ``best``'s file again under the next version number; the number, or None if it cannot."""
        from rlcontrol.errors import UserError
        from sim2real.finetune import METRICS_FILE, append_jsonl, update_message

        if not best.path:
            self.logger.error(f"cannot re-push {best.name}: its file is unknown")
            return None
        self.learner.observe_version(running_version)
        version = self.learner.allocate_version()
        try:
            update = update_message(best.path, best.sha256, version)
        except (UserError, OSError) as exc:
            self.logger.error(f"cannot re-push {best.name}: {str(exc).splitlines()[0]}")
            if best.sha256:
                self._failed.add(best.sha256)
            return None
        with self._held_lock:  # an export held from before is older than this push: dropped
            self._held = None
        reason = why or decision.reason_with(version)
        append_jsonl(self.out_dir / METRICS_FILE, {
            "event": event, "version": version, "restores": best.label, "sha256": update["sha256"],
            "path": update["path"], "from_version": running_version, "reason": reason,
            "exploration_std": decision.exploration_std, "table": decision.table, "time": time.time()})
        self._push(update)
        self.last_reason = reason
        self.logger.info(f"{event}: pushed v{best.label}'s weights as v{version}: {reason}")
        return version

    def tick(self) -> None:
        """Every 0.1 s while active: settle the pending push, roll back if the rule says so (keep-best
        mode), and push the newest held export (in keep-best mode once the running version is judged)."""
        from sim2real.finetune import METRICS_FILE, append_jsonl
        from sim2real.version_selection import decide, evaluated

        if not self._answered() or self.plateau is not None:
            return
        s = self.settings
        version, sha = self.policy_status.get("version"), self.policy_status.get("sha256")
        if s.rolls_back and len(self.episodes) > self._checked and version is not None:
            self._checked = len(self.episodes)
            decision = decide(self.episodes, s, running_version=version, running_sha=sha)
            self.last_reason = decision.reason
            if decision.action == "rollback" and decision.best.sha256 not in self._failed:
                if self._repush(decision.best, "rollback", decision, version) is not None:
                    self.rollbacks += 1
                    return
        with self._held_lock:
            held = self._held
            if held is None:
                return
            if isinstance(version, int) and held["version"] <= version:  # someone pushed a newer one meanwhile
                self._held = None
                return
            if s.keep_best and (version is None or not evaluated(self.episodes, version, s, sha)):
                return
            self._held = None
        append_jsonl(self.out_dir / METRICS_FILE, {"event": "push", "version": held["version"], "path": held["path"],
                                                   "replaces": version, "time": time.time()}, sync=False)
        self._push(held)
        self.logger.info(f"pushed v{held['version']} ({held['path']})"
                         + (f" once v{version} was judged" if s.keep_best else ""))

    def finish(self) -> dict:
        """End of the session, once the learner has stopped and the last messages are in: the
        session_end record (also appended to finetune.jsonl). In keep-best mode the robot is left on
        the best version by the rule, re-pushed if it is not running; without it, on the version
        running. Called again, it returns the same record."""
        from sim2real.finetune import METRICS_FILE, append_jsonl
        from sim2real.version_selection import decide

        if self.final is not None:
            return self.final
        with self._held_lock:
            self._held = None
        version, sha = self.policy_status.get("version"), self.policy_status.get("sha256")
        if not self._answered():  # a push in flight: the policy node takes it (or refuses it) after this
            version, sha = self._pending["version"], self._pending["sha256"] or sha
        s = self.settings
        decision = decide(self.episodes, s, running_version=version, running_sha=sha, final=True)
        pushed = None
        plateau = self.plateau if not s.keep_best else None
        if plateau is not None:
            weights_of = plateau["version"]
            reason = f"{plateau['reason']}; ended on v{weights_of}"
            if plateau.get("sha256") not in (None, sha):
                # a push in flight when the plateau was reached replaced its version: back to it
                back = SimpleNamespace(label=weights_of, name=f"v{weights_of}", sha256=plateau["sha256"],
                                       path=plateau.get("path"))
                pushed = self._repush(back, "final", decision, version, why=reason)
                reason += (f" (re-pushed as v{pushed})" if pushed is not None
                           else f"; the re-push failed, so the robot stays on v{version}")
                if pushed is None:
                    weights_of = version
        else:
            if decision.action == "switch":  # only in keep-best mode
                if decision.best.sha256 in self._failed:
                    self.logger.error(f"not re-pushing {decision.best.name}: the policy node refused it before")
                else:
                    pushed = self._repush(decision.best, "final", decision, version)
            reason = decision.reason_with(pushed)
            if decision.action == "switch" and pushed is None:
                reason += f"; the re-push failed, so the robot stays on v{version}"
            target = decision.target if pushed is not None else decision.running
            weights_of = target.label if target is not None else version
        self.final = {"event": "session_end", "version": pushed if pushed is not None else version,
                      "weights_of": weights_of, "running_version": version,
                      "best_version": decision.best.label if decision.best else None, "pushed_version": pushed,
                      "reason": reason, "exploration_std": decision.exploration_std,
                      "settings": {"keep_best": s.keep_best, "rollback": s.rollback, "min_episodes": s.min_episodes,
                                   "confidence": s.confidence},
                      "rollbacks": self.rollbacks, "episodes_compared": len(self.episodes), "table": decision.table,
                      "stopped_by_plateau": self.plateau is not None, "time": time.time()}
        append_jsonl(self.out_dir / METRICS_FILE, self.final)
        self.last_reason = reason
        self.logger.info(f"session end: the robot is left on v{self.final['version']}: {reason}")
        return self.final

    def wait_for_final(self, spin_once: Callable[[], None], timeout: float) -> bool:
        """Call ``spin_once`` until the policy node runs the final re-push (or refuses it, or
        ``timeout``); True at once when the session ended without one."""
        final = self.final
        if not final or final.get("pushed_version") is None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._answered():
            spin_once()
        ok = self.policy_status.get("version") == final["pushed_version"]
        if ok:
            self.logger.info(f"the policy node runs v{final['pushed_version']} (v{final['weights_of']}'s weights)")
        else:
            self.logger.warning(f"the policy node did not confirm v{final['pushed_version']} within {timeout:.0f} s; "
                                f"it runs v{self.policy_status.get('version')}")
        return ok

    def status(self) -> dict:
        """/finetune/status's ``selection``."""
        held = self._held
        return {"compared_episodes": len(self.episodes), "pushed": self.pushed, "rollbacks": self.rollbacks,
                "held_version": held["version"] if held else None, "reason": self.last_reason, "final": self.final,
                "plateau": self.plateau}


def _robot_episode(row: dict):
    """An episodes.jsonl row as the plateau rule's RobotEpisode (None if it lacks a version or return)."""
    from sim2real.plateau import RobotEpisode

    version, ret = row.get("policy_version"), row.get("return")
    if isinstance(version, bool) or not isinstance(version, int) or not isinstance(ret, (int, float)):
        return None
    std = row.get("exploration_std")
    return RobotEpisode(version, float(ret), float(std) if isinstance(std, (int, float)) else None,
                        bool(row.get("intervened")))


def _status_std(status: dict, default: float | None) -> float | None:
    """The exploration std a /policy/status reports (policy nodes since it was added), else ``default``."""
    value = status.get("exploration_std")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
