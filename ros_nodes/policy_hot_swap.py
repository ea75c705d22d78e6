"""The policy node's hot swap: /policy/update and /policy/undo, checked off the control thread.

A mixin of :class:`ros_nodes.policy_node.PolicyNode`, kept apart so the node's module stays about
the control loop. Requests are queued for one worker thread (a newer request supersedes a queued
one), which parses and loads the new graph (ros_nodes.policy_update: sha256, compatible contract,
finite weights, the probe) in the idle part of a control period, then swaps the reference the next
tick reads under ``_swap_lock``. The swapped-out policy is released on the worker, never inside a
tick. State it uses, owned by the node: history, policy, _configured_meta, _swap_lock, _requests,
_pending, _epoch, _retired, _last_tick, _running, period, exploration, status_pub, superseded.
"""

from __future__ import annotations

import json
import math
import time

from std_msgs.msg import Empty, String

from ros_nodes import policy_update


class HotSwapMixin:
    def _on_update(self, msg: String) -> None:
        """Queue the request for the worker; a request still queued is superseded by this one."""
        with self._requests:
            superseded = self._pending is not None
            if superseded:
                self.superseded += 1
            self._pending = (msg.data, self._epoch)
            self._requests.notify()
        if superseded:
            self.get_logger().info("policy update superseded by a newer request before it was checked")

    def _on_undo(self, msg: Empty) -> None:
        with self._swap_lock:
            if self.history is None:
                return
            try:
                undone = self.history.undo()
            except policy_update.UpdateRefused as exc:
                self.history.refuse(str(exc))
                self._publish_status()
                reason = str(exc)
            else:
                self.policy = self.history.current.policy  # the swap back
                self._retire(undone)
                self._publish_status()
                reason, version = None, self.history.version
        if reason:
            self.get_logger().warning(f"policy undo refused: {reason}")
        else:
            self.get_logger().info(f"policy undo: back to version {version}")

    def _update_worker(self) -> None:
        while True:
            with self._requests:
                if self._pending is None and not self._worker_stop:
                    self._requests.wait(timeout=0.1 if self._retired else None)
                if self._worker_stop:
                    return
                item, self._pending = self._pending, None
            self._reap_retired()
            if item is not None:
                try:
                    self._handle_update(*item)
                except Exception as exc:  # noqa: BLE001 - the worker must outlive any surprise
                    self.get_logger().error(f"policy update worker: {type(exc).__name__}: {exc}")

    def _handle_update(self, text: str, epoch: int) -> None:
        with self._swap_lock:
            if epoch != self._epoch or self.history is None:
                return
            current, meta = self.history.version, self._configured_meta
        try:
            request = policy_update.parse_request(text, current)
            if self.precision != "fp32":  # a learner's probe is its fp32 actions at 1e-4: not for fp16
                raise policy_update.UpdateRefused(f"this node runs {self.precision} (parameter precision); live "
                                                  "updates are checked against the learner's fp32 actions and need fp32")
            self._wait_for_slack()
            policy = policy_update.load_checked(request, meta)
        except Exception as exc:  # noqa: BLE001 - UpdateRefused, or any surprise: refuse, keep running
            reason = (
                str(exc)
                if isinstance(exc, policy_update.UpdateRefused)
                else policy_update.one_line(f"update failed: {type(exc).__name__}: {exc}")
            )
            self._refuse_update(epoch, reason)
            return
        with self._swap_lock:
            if epoch != self._epoch or self.history is None:
                return
            try:
                dropped = self.history.accept(policy, request.version)
            except policy_update.UpdateRefused as exc:
                self.history.refuse(str(exc))
                self._publish_status()
                reason = str(exc)
            else:
                self.policy = policy  # the swap: the next tick runs the new weights
                self._retire(dropped)
                self._publish_status()
                reason = None
        if reason:
            self.get_logger().warning(f"policy update refused: {reason}")
        else:
            self.get_logger().info(
                f"policy update: version {request.version} running ({request.path}, "
                f"sha256 {policy.sha256[:16]})"
            )

    def _refuse_update(self, epoch: int, reason: str) -> None:
        with self._swap_lock:
            if epoch != self._epoch or self.history is None:
                return
            self.history.refuse(reason)
            self._publish_status()
        self.get_logger().warning(f"policy update refused: {reason}")

    def _publish_status(self) -> None:
        """Under _swap_lock: the status of what runs now, and the exploration noise it runs with (fixed
        from configure to deactivate), so a learner knows which returns are comparable."""
        status = {**self.history.status(), "exploration_std": self.exploration.std}
        self.status_pub.publish(String(data=json.dumps(status)))

    def _retire(self, policy) -> None:
        """Under _swap_lock. A tick may still hold the policy just swapped out: dropping the last
        reference there would free an onnxruntime session inside the control thread."""
        if policy is not None:
            self._retired.append((time.monotonic(), policy))
            with self._requests:
                self._requests.notify()

    def _reap_retired(self) -> None:
        """Release retired policies once a tick has started after they were swapped out: such a
        tick set _last_tick before it read self.policy, so it holds the new one, and ticks run one
        after another, so any tick that held an old one has finished."""
        with self._swap_lock:
            if not self._retired:
                return
            last = self._last_tick if self._running.is_set() else math.inf
            if last is None:
                return
            done = [r for r in self._retired if r[0] < last]
            self._retired = [r for r in self._retired if r[0] >= last]
        del done  # the sessions are freed here, on the worker thread

    def _wait_for_slack(self) -> None:
        """Sleep until just after the next tick should have published. onnxruntime holds the GIL
        while it creates a session (~2 ms measured for a 2x256 MLP); started here, that falls
        into the idle rest of the period instead of delaying a tick."""
        last = self._last_tick
        if not self._running.is_set() or last is None:
            return
        period = self.period
        now = time.monotonic()
        target = last + math.floor((now - last) / period) * period + min(1e-3, 0.25 * period)
        if target < now:
            target += period
        time.sleep(max(0.0, target - now))

    def _update_diagnostics(self) -> dict:
        h = self.history
        if h is None:
            return {}
        return {
            "policy_version": h.version,
            "policy_previous_version": h.previous.version if h.previous else "none",
            "policy_accepted": h.accepted,
            "policy_refused": h.refused,
            "policy_undone": h.undone,
            "policy_superseded": self.superseded,
            "policy_last_refusal": h.last_refusal,
        }
