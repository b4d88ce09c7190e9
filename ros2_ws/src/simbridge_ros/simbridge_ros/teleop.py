"""teleop node: a teleop device (:mod:`simbridge.data.teleop`) commanding the arm over ROS.

Two modes:

* ``teleop``: pure demonstrations; every control period the device state is mapped (deadzone,
  speed scaling, gripper latch: :class:`~simbridge.data.teleop.ActionMapper`) to a contract
  action, published on ``/simbridge/action`` with the intervention flag set.
* ``intervention`` (HIL-SERL style): the policy node publishes only its proposals
  (``publish_actions: false`` -> ``/simbridge/policy_action``); this node is the single
  commander and forwards them, until the operator takes over (moves the device, or presses
  ``intervene`` with ``takeover: button``); operator actions carry ``intervention = 1`` and the
  policy gets the arm back after ``handback_idle_steps`` idle reads.

The franka node's safety filter applies to every action, and the logger records the flag and
the policy's proposal per step. Buttons: ``success``/``failure`` end the episode through the
logger (``~/stop`` + ``~/label``), ``discard`` drops it. Fail closed: when the device
disconnects the node stops publishing and releases the arm (``/franka/release_commander``
stops it at once; the franka watchdog would within ``watchdog_timeout_s`` anyway).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from simbridge_ros.common import (
    ACTION_TOPIC,
    LATCHED,
    POLICY_ACTION_TOPIC,
    action_to_msg,
    json_msg,
    msg_to_action,
    run_node,
)

TELEOP_STATUS_TOPIC = "/simbridge/teleop/status"


def make_device(node: Node) -> Any:
    from simbridge.data.teleop import make_device as make

    return make(node.get_parameter("device").value)


class TeleopNode(Node):
    def __init__(self, device: Any | None = None, *, name: str = "teleop", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("device", "keyboard")  # keyboard | spacemouse | gamepad (simbridge.data.teleop)
        self.declare_parameter("mode", "intervention")  # teleop | intervention
        self.declare_parameter("takeover", "motion")  # motion | button
        self.declare_parameter("handback_idle_steps", 5)
        self.declare_parameter("control_rate_hz", 10.0)
        self.declare_parameter("max_policy_action_age_s", 0.3)
        from simbridge.data.teleop import ActionMapper

        p = self.get_parameter
        self.mode = p("mode").value
        if self.mode not in ("teleop", "intervention"):
            raise ValueError(f"mode: 'teleop' or 'intervention', got {self.mode!r}")
        self.takeover = p("takeover").value
        self.device = device if device is not None else make_device(self)
        if not getattr(self.device, "connected", False):
            self.device.connect()
        self.mapper = ActionMapper()
        self.source = f"teleop:{getattr(self.device, 'name', p('device').value)}"
        self.intervening = self.mode == "teleop"
        self.toggled = False
        self.idle = 0
        self.failed = ""
        self.policy_action: tuple[np.ndarray, float, float] | None = None  # action, stamp, received (monotonic)
        self.published = 0
        self.takeovers = 0

        self.pub_action = self.create_publisher(JointState, ACTION_TOPIC, 10)
        self.pub_status = self.create_publisher(String, TELEOP_STATUS_TOPIC, LATCHED)
        self.create_subscription(JointState, POLICY_ACTION_TOPIC, self._on_policy_action, 10)
        self.release_client = self.create_client(Trigger, "/franka/release_commander")
        self.logger_clients = {k: self.create_client(Trigger, f"/logger/{k}") for k in ("stop", "discard")}
        self.label_client = self.create_client(SetBool, "/logger/label")
        self.create_timer(1.0 / float(p("control_rate_hz").value), self._on_tick)
        self._status()

    def _on_policy_action(self, msg: JointState) -> None:
        cmd = msg_to_action(msg)
        self.policy_action = (cmd.action, cmd.stamp, time.monotonic())

    def _on_tick(self) -> None:
        if self.failed:
            return
        from simbridge.data.teleop import DeviceDisconnected

        try:
            state = self.device.read()
        except DeviceDisconnected as err:
            self.failed = f"device disconnected: {err}"
            self.get_logger().error(f"{self.failed}; releasing (stopping) the arm")
            if self.release_client.service_is_ready():
                self.release_client.call_async(Trigger.Request())
            self._status()
            return
        self._handle_buttons(state.buttons)
        if self.mode == "intervention":
            was = self.intervening
            self._update_takeover(state)
            if self.intervening != was:
                self.takeovers += int(self.intervening)
                if self.intervening and self.policy_action is not None:
                    self.mapper.reset(gripper=float(self.policy_action[0][6]))  # start from the policy's gripper
                self._status()
        if self.intervening:
            action, stamp = self.mapper(state), time.time()
        else:
            fresh = self.policy_action is not None and (
                time.monotonic() - self.policy_action[2] <= float(self.get_parameter("max_policy_action_age_s").value))
            if not fresh:
                return  # nothing to forward: the franka watchdog stops the arm if this lasts
            action, stamp = self.policy_action[0], self.policy_action[1]
            self.policy_action = None  # forward each proposal once
        # The stamp stays the observation time behind the action (the device reading, or the policy's
        # observation for a forwarded proposal); the publish time is now.
        self.pub_action.publish(action_to_msg(action, self.source, stamp, intervention=self.intervening,
                                              published=time.time()))
        self.published += 1

    def _update_takeover(self, state: Any) -> None:
        if "intervene" in state.buttons:
            self.toggled = not self.toggled
        if self.takeover == "button":
            self.intervening = self.toggled
        elif self.toggled or self.mapper.is_active(state):
            self.intervening, self.idle = True, 0
        elif self.intervening:
            self.idle += 1
            if self.idle >= int(self.get_parameter("handback_idle_steps").value):
                self.intervening, self.idle = False, 0

    def _handle_buttons(self, buttons: frozenset[str]) -> None:
        if "discard" in buttons and self.logger_clients["discard"].service_is_ready():
            self.logger_clients["discard"].call_async(Trigger.Request())
        for button, success in (("success", True), ("failure", False)):
            if button in buttons and self.logger_clients["stop"].service_is_ready():
                future = self.logger_clients["stop"].call_async(Trigger.Request())
                future.add_done_callback(lambda f, s=success: f.result().success and self.label_client.call_async(
                    SetBool.Request(data=s)))

    def _status(self) -> None:
        self.pub_status.publish(json_msg(mode=self.mode, intervening=self.intervening, takeovers=self.takeovers,
                                         failed=self.failed, source=self.source))

    def close(self) -> None:
        self.device.disconnect()


def main(args=None) -> None:
    run_node(TeleopNode, args)


if __name__ == "__main__":
    main()
