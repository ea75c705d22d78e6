"""The policy node's safety inputs: the e-stop, its reset and the safety driver's takeover.

A mixin of :class:`ros_nodes.policy_node.PolicyNode`. These topics get their own rclpy node and
executor thread, started at construction: no callback on the main executor (sensors, diagnostics,
lifecycle services) can delay them, and an e-stop pressed before configure already holds. Each
trip publishes the safe command at once, under the node's ``_publish_lock``, so no tick that
decided before it can publish after it. State it uses, owned by the node: safety, policy, _loop,
_publish_lock, _publish, _estop_stop, context.
"""

from __future__ import annotations

import threading

import rclpy
from rclpy.experimental import EventsExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Empty

from ros_nodes.safety import DriverTakeover, EStopLatch


class SafetyInputsMixin:
    def _start_estop_path(self) -> None:
        """The e-stop has its own node and executor thread, so no callback on the main executor
        (sensors, diagnostics, lifecycle services) can delay it. Its topics are read at startup,
        and the latch exists from construction: an e-stop pressed before configure still holds."""
        self.estop = EStopLatch()
        self.takeover = DriverTakeover()
        self._estop_node = rclpy.create_node(f"{self.get_name()}_estop", context=self.context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._estop_node.create_subscription(Bool, self.get_parameter("estop_topic").value, self._on_estop, qos)
        self._estop_node.create_subscription(Empty, self.get_parameter("estop_reset_topic").value,
                                             self._on_estop_reset, qos)
        self._estop_node.create_subscription(Bool, self.get_parameter("takeover_topic").value, self._on_takeover, qos)
        self._estop_executor = EventsExecutor(context=self.context)
        self._estop_executor.add_node(self._estop_node)
        self._estop_thread = threading.Thread(target=self._spin_estop, name="estop", daemon=True)
        self._estop_thread.start()

    def _spin_estop(self) -> None:
        try:
            while self.context.ok() and not self._estop_stop.is_set():
                self._estop_executor.spin_once(timeout_sec=0.1)
        except Exception:  # noqa: BLE001 - context shut down under us at exit
            pass

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            with self._publish_lock:  # a tick that decided before the trip cannot publish after this
                self.estop.trip()
                if self.policy is not None and self._loop is not None:
                    self._publish(self.safety.safe_command)  # now, not at the next tick
            self.get_logger().warning("e-stop: latched; publish on the reset topic to clear it")

    def _on_takeover(self, msg: Bool) -> None:
        with self._publish_lock:  # as the e-stop: no tick decided before it publishes after it
            taken = msg.data and not self.takeover.active
            self.takeover.set(msg.data)
            if taken and self.policy is not None and self._loop is not None:
                self._publish(self.safety.safe_command)
        if taken:
            self.get_logger().warning("safety driver took over: safe command until released")

    def _on_estop_reset(self, msg: Empty) -> None:
        self.estop.reset()
        self.get_logger().info("e-stop reset")
