"""franka node: the only node that moves the arm.

Wraps a LeRobot-style :class:`simbridge.deploy.robot.Robot` (``FrankyRobot`` on a real FR3 or on
the franky-sim twin) and puts four guards in front of it:

* **safety filter** (:class:`simbridge.deploy.safety.SafetyFilter`, run by the robot's
  ``send_action``): every action is clipped or rejected (NaN, stale stamp, outside the
  workspace) before it reaches the arm; what was actually sent is republished;
* **one commander**: the first publisher seen after an episode starts (or after
  ``~/release_commander``) owns the arm: its ``header.frame_id`` *and* its DDS publisher GID, so a
  second publisher reusing the same ``frame_id`` is ignored and logged like any other source;
  ``allowed_bundles`` optionally pins which policy bundles (``policy:<bundle-id>``) may command at all.
  On a network, SROS2 permissions are what stop a process from publishing at all (README);
* **watchdog**: when the commander goes quiet for ``watchdog_timeout_s`` the arm is stopped;
* **latched e-stop** (``~/estop``, std_srvs/SetBool): ``true`` stops the arm and drops every
  command until ``false``; ``~/recover`` (std_srvs/Trigger) clears robot errors after a reflex.
  The e-stop has a callback group of its own, so it is served while ``~/home`` (a blocking motion)
  runs, and the driver's ``estop()`` interrupts that motion.

Start-up does not depend on who starts first: the node waits for the twin's announcement when it has
no ``robot_ip`` in sim and retries the connection with backoff for up to ``connect_timeout_s``, then
gives up with the reason (the launch file then shuts the evaluation down); that is
:mod:`simbridge_ros.franka_startup`. This module owns the node: the commander lock, the control
tick, the watchdog, the services and the state it publishes.

Actions are executed in order, on arrival, but never closer than half a control period (an early
one waits in a two-deep queue; older ones are dropped). Joint states and the end-effector pose are published at ``state_rate_hz``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from simbridge_ros.common import (
    ACTION_TOPIC,
    EE_POSE_TOPIC,
    EXECUTED_ACTION_TOPIC,
    FRANKA_STATUS_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED,
    RELIABLE,
    ActionCommand,
    action_to_msg,
    joint_state_msg,
    json_msg,
    msg_to_action,
    pose_msg,
    run_node,
)
from simbridge_ros.franka_startup import connect_robot


def publisher_gid(info: dict | None) -> bytes | None:
    """The DDS GID of the publisher of a received message (rclpy's MessageInfo), None if unknown."""
    gid = (info or {}).get("publisher_gid")
    return bytes(gid["data"]) if gid else None


class FrankaNode(Node):
    #: spin_nodes gives this node a multi-threaded executor (callbacks in their own groups).
    concurrent_callbacks = True

    def __init__(self, robot: Any | None = None, *, name: str = "franka", clock: Callable[[], float] = time.time,
                 **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        # No default address: a default could name someone else's arm. In sim, "" = the twin's address.
        self.declare_parameter("robot_ip", "")
        self.declare_parameter("connect_timeout_s", 10.0)  # retry the connection (with backoff) this long
        self.declare_parameter("control_rate_hz", 10.0)
        self.declare_parameter("state_rate_hz", 30.0)
        self.declare_parameter("watchdog_timeout_s", 0.5)
        self.declare_parameter("sim", False)  # franky-sim twin: no realtime kernel
        self.declare_parameter("dynamics_factor", 0.15)  # franky's relative dynamics factor (0.05-0.2 to start)
        self.declare_parameter("safety_limits_file", "")
        # Bundle ids allowed to command the arm (source "policy:<bundle-id>"); [""] = any bundle.
        self.declare_parameter("allowed_bundles", [""])
        self.allowed_bundles = [b for b in self.get_parameter("allowed_bundles").value if b]
        self.period = 1.0 / float(self.get_parameter("control_rate_hz").value)
        self.watchdog_timeout = float(self.get_parameter("watchdog_timeout_s").value)
        # Two commands are never executed closer than half a period: arrival jitter up to half a
        # period costs no latency, and a backlog from a burst drains within the next period.
        self.min_gap = 0.5 * self.period
        self._wall_clock = clock
        self._owns_robot = robot is None
        self.robot = robot if robot is not None else connect_robot(self)

        # Episode / guard state. Every callback but the e-stop shares the node's mutually exclusive
        # group; _guard orders the e-stop against the command path.
        self._guard = threading.RLock()
        self.estopped = False
        self.fault = ""  # robot error text until ~/recover succeeds
        self.commander: str | None = None  # the commander's source (frame_id) ...
        self.commander_gid: bytes | None = None  # ... and the DDS identity of its publisher
        self.commander_node = ""
        # Commands wait here for their control slot. Two deep: a burst of two (DDS / scheduler jitter)
        # executes one period apart instead of losing one; anything older is dropped (newest wins).
        self.pending: deque[tuple[ActionCommand, float]] = deque(maxlen=2)  # (command, received wall time)
        # Per executed command: (its published time, received, executed), wall clock: latency diagnostics.
        self.trace: deque[tuple[float, float, float]] = deque(maxlen=1000)
        self.last_command_time = 0.0  # monotonic, 0 = never
        self.last_exec_time = 0.0
        self.watchdog_tripped = False
        self.counts = {"executed": 0, "rejected": 0, "ignored": 0, "watchdog_stops": 0, "estop_drops": 0}
        self.ignored_sources: dict[str, int] = {}
        self.last_reason = ""
        self.last_observation: dict | None = None

        self.pub_joints = self.create_publisher(JointState, JOINT_STATES_TOPIC, RELIABLE)
        self.pub_pose = self.create_publisher(PoseStamped, EE_POSE_TOPIC, RELIABLE)
        self.pub_exec = self.create_publisher(JointState, EXECUTED_ACTION_TOPIC, 10)
        self.pub_status = self.create_publisher(String, FRANKA_STATUS_TOPIC, LATCHED)
        self.create_subscription(JointState, ACTION_TOPIC, self._on_action, 10)
        self.create_service(SetBool, "~/estop", self._on_estop, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/recover", self._on_recover)
        self.create_service(Trigger, "~/release_commander", self._on_release)
        self.create_service(Trigger, "~/home", self._on_home)
        # The control timer runs 4x faster than the control rate: it executes a waiting command in
        # its slot and checks the watchdog with a resolution of a quarter period.
        self.create_timer(self.period / 4.0, self._on_control_tick)
        # State keeps flowing while ~/home blocks the default group (the logger and the operator see the motion).
        state_group = MutuallyExclusiveCallbackGroup()
        self.create_timer(1.0 / float(self.get_parameter("state_rate_hz").value), self._publish_state,
                          callback_group=state_group)
        self.create_timer(0.5, self._publish_status, callback_group=state_group)
        self._publish_state()
        self._publish_status()
        host = getattr(getattr(self.robot, "config", None), "host", "?")
        self.get_logger().info(f"franka ready at {host}, {1 / self.period:g} Hz")

    # --- commands ------------------------------------------------------------------------------
    def _on_action(self, msg: JointState, info: dict) -> None:
        try:
            cmd = msg_to_action(msg)
        except ValueError as err:
            self._reject(f"malformed action: {err}")
            return
        gid = publisher_gid(info)
        with self._guard:
            if self.estopped:
                self.counts["estop_drops"] += 1
                return
            if self.commander is None:
                refusal = self._refuse_source(cmd.source)
                if refusal:
                    self._ignore(cmd.source, refusal)
                    return
                self.commander, self.commander_gid = cmd.source, gid
                self.commander_node = self._publisher_node(gid)
                self.get_logger().info(f"commander locked: {cmd.source!r} from {self.commander_node or 'unknown node'} "
                                       "(others are ignored until release)")
                self._publish_status()
            elif cmd.source != self.commander or gid != self.commander_gid:
                key = cmd.source if cmd.source != self.commander else (
                    f"{cmd.source} (another publisher: {self._publisher_node(gid) or 'unknown node'})")
                self._ignore(key, f"the arm is commanded by {self.commander!r} from {self.commander_node or 'its node'}; "
                                  "call ~/release_commander between episodes to hand over")
                return
            self.last_command_time = time.monotonic()
            self.watchdog_tripped = False
            self.pending.append((cmd, time.time()))
            if time.monotonic() - self.last_exec_time >= self.min_gap:
                self._execute_pending()

    def _refuse_source(self, source: str) -> str:
        """Why ``source`` may not take the arm at all ("" = it may)."""
        kind, _, bundle = source.partition(":")
        if self.allowed_bundles and kind == "policy" and bundle not in self.allowed_bundles:
            return f"bundle {bundle!r} is not in allowed_bundles {self.allowed_bundles}"
        return ""

    def _ignore(self, key: str, why: str) -> None:
        self.counts["ignored"] += 1
        n = self.ignored_sources.get(key, 0) + 1
        self.ignored_sources[key] = n
        if n == 1 or n % 50 == 0:
            self.get_logger().warning(f"ignoring action from {key!r} ({n} so far): {why}")

    def _publisher_node(self, gid: bytes | None) -> str:
        """The node that owns publisher ``gid`` on the action topic (for logs), or ""."""
        if not gid:
            return ""
        for endpoint in self.get_publishers_info_by_topic(ACTION_TOPIC):
            if bytes(endpoint.endpoint_gid) == gid:
                return f"{endpoint.node_namespace.rstrip('/')}/{endpoint.node_name}"
        return ""

    def _on_control_tick(self) -> None:
        now = time.monotonic()
        if self.pending and now - self.last_exec_time >= self.min_gap:
            self._execute_pending()
        stale = self.last_command_time > 0 and now - self.last_command_time > self.watchdog_timeout
        if stale and not self.watchdog_tripped and self.commander is not None:
            self.watchdog_tripped = True
            self.counts["watchdog_stops"] += 1
            self.pending.clear()
            self._stop(f"watchdog: no command from {self.commander!r} for {now - self.last_command_time:.2f} s")

    def _execute_pending(self) -> None:
        if not self.pending or self.estopped:
            return
        cmd, received = self.pending.popleft()
        if self.fault:
            self._reject(f"robot in error ({self.fault}); call ~/recover")
            return
        self.last_exec_time = time.monotonic()
        try:
            # The robot runs the safety filter (workspace, step limits, joint margins, stale stamp)
            # and returns what it actually sent: zeros after a rejection (the arm is then stopped).
            sent = self.robot.send_action(cmd.action, stamp=cmd.stamp, published=cmd.published)
        except Exception as err:  # RobotError / RobotFault: fail closed, keep the node alive
            self._on_robot_error(err)
            return
        result = getattr(self.robot, "last_result", None)
        if result is not None and result.rejected:
            self._reject(f"safety filter rejected the action: {result.reason}")
            return
        self.counts["executed"] += 1
        if cmd.published is not None:
            self.trace.append((cmd.published, received, time.time()))
        if result is not None and result.clipped:
            self.last_reason = f"clipped {result.clipped}"
        self.pub_exec.publish(action_to_msg(np.asarray(sent, np.float32), cmd.source, cmd.stamp, cmd.intervention,
                                            published=cmd.published))

    def _reject(self, reason: str) -> None:
        self.counts["rejected"] += 1
        self.last_reason = reason
        self.get_logger().warning(reason, throttle_duration_sec=2.0)

    def _stop(self, reason: str) -> None:
        self.last_reason = reason
        self.get_logger().warning(f"stopping the arm: {reason}")
        try:
            self.robot.stop()
        except Exception as err:
            self._on_robot_error(err)
        self._publish_status()

    def _on_robot_error(self, err: Exception) -> None:
        self.fault = f"{type(err).__name__}: {err}"
        self.pending.clear()
        self.get_logger().error(f"robot error, commands refused until ~/recover: {self.fault}")
        self._publish_status()

    # --- services ------------------------------------------------------------------------------
    def _on_estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            with self._guard:
                self.estopped = True
                self.pending.clear()
            estop = getattr(self.robot, "estop", None)
            if estop is not None:
                estop("ros ~/estop")  # the driver latches too: even a direct send_action is refused
            self._stop("e-stop engaged (latched until ~/estop false)")
            response.message = "e-stop engaged: the arm is stopped and every command is dropped"
        else:
            reset = getattr(self.robot, "reset_estop", None)
            if reset is not None:
                reset()
            with self._guard:
                self.estopped = False
                self.commander = self.commander_gid = None
                self.last_command_time = 0.0
            response.message = "e-stop released; the next command source takes the arm"
            self._publish_status()
        response.success = True
        return response

    def _on_recover(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self.robot.recover()
        except Exception as err:
            response.success, response.message = False, f"recover failed: {type(err).__name__}: {err}"
            return response
        self.fault = ""
        self._publish_status()
        response.success, response.message = True, "recovered" + (" (e-stop still engaged)" if self.estopped else "")
        return response

    def _on_release(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._guard:
            previous, self.commander, self.commander_gid = self.commander, None, None
            self.pending.clear()
        self.last_command_time = 0.0
        self.watchdog_tripped = False
        self.ignored_sources.clear()
        try:
            self.robot.stop()
        except Exception as err:
            self._on_robot_error(err)
        self._publish_status()
        response.success, response.message = True, f"released {previous!r}"
        return response

    def _on_home(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Move to the home pose between episodes (blocking; refused under e-stop)."""
        if self.estopped:
            response.success, response.message = False, "e-stop engaged; release it first"
            return response
        home = getattr(self.robot, "home", None)
        if home is None:
            response.success, response.message = False, f"{type(self.robot).__name__} has no home()"
            return response
        try:
            home()
        except Exception as err:
            if self.estopped:  # ~/estop (its own callback group) interrupted the homing: not a fault
                response.success, response.message = False, f"homing interrupted by the e-stop: {err}"
                return response
            self._on_robot_error(err)
            response.success, response.message = False, self.fault
            return response
        self.commander, self.commander_gid, self.last_command_time = None, None, 0.0
        self.pending.clear()
        self._publish_state()
        response.success, response.message = True, "at home"
        return response

    # --- state ---------------------------------------------------------------------------------
    def _publish_state(self) -> None:
        try:
            obs = self.robot.get_observation()
        except Exception as err:
            self.get_logger().error(f"cannot read the robot state: {err}", throttle_duration_sec=2.0)
            return
        self.last_observation = obs
        stamp = float(obs.get("timestamp", self._wall_clock()))
        self.pub_joints.publish(joint_state_msg(obs["joint_positions"], obs["gripper_width"], stamp))
        self.pub_pose.publish(pose_msg(np.asarray(obs["ee_pose"]), stamp))

    def status(self) -> dict:
        return {
            "estop": self.estopped, "fault": self.fault, "commander": self.commander,
            "commander_node": self.commander_node, "allowed_bundles": self.allowed_bundles,
            "watchdog_tripped": self.watchdog_tripped, "last_reason": self.last_reason,
            "ignored_sources": dict(self.ignored_sources), **self.counts,
        }

    def _publish_status(self) -> None:
        self.pub_status.publish(json_msg(**self.status()))

    def close(self) -> None:
        """Stop the arm and disconnect (only a robot this node connected itself)."""
        try:
            self.robot.stop()
        except Exception as err:
            self.get_logger().error(f"stop on close failed: {err}")
        if self._owns_robot:
            self.robot.disconnect()


def main(args=None) -> None:
    run_node(FrankaNode, args)


if __name__ == "__main__":
    main()
