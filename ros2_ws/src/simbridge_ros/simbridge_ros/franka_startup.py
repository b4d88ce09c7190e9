"""Start-up of the franka node: find the arm (or the twin), connect with retries, build the driver.

With ``sim: true`` and no ``robot_ip`` the node waits for the twin's latched announcement
(``/simbridge/twin/status``) and connects to the address it names; in every case it retries the
connection with backoff for up to ``connect_timeout_s``, saying what it waits for, then gives up
with the reason. The driver (:class:`simbridge.deploy.franky_robot.FrankyRobot`) is built from the
node's parameters (``sim``, ``dynamics_factor``, ``watchdog_timeout_s``, ``safety_limits_file``),
which :class:`simbridge_ros.franka.FrankaNode` declares.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rclpy.node import Node
from std_msgs.msg import String

from simbridge_ros.common import LATCHED, TWIN_STATUS_TOPIC


def make_robot(node: Node, host: str) -> Any:
    """FrankyRobot for ``host`` from parameters: ``sim``, ``dynamics_factor``, ``safety_limits_file``."""
    from simbridge.data.config import load_config
    from simbridge.deploy.franky_config import FrankyRobotConfig
    from simbridge.deploy.franky_robot import FrankyRobot
    from simbridge.deploy.safety import SafetyLimits

    p = node.get_parameter
    limits_file = p("safety_limits_file").value
    limits = load_config(SafetyLimits, limits_file) if limits_file else SafetyLimits(
        control_rate_hz=float(p("control_rate_hz").value))
    return FrankyRobot(FrankyRobotConfig(
        host=host, sim=bool(p("sim").value), relative_dynamics_factor=float(p("dynamics_factor").value),
        watchdog_timeout_s=float(p("watchdog_timeout_s").value), safety=limits,
    ))


def drop_inherited_realtime() -> None:
    """Undo the SCHED_FIFO that libfranka gives the connecting thread (it tries even with
    ``RealtimeConfig.Ignore`` and succeeds as root). Against the twin it does harm: every thread
    started afterwards (executor workers, render threads) inherits it and starves franky-sim's
    normal-priority 1 kHz loop, so simulated time falls behind wall time on a busy machine."""
    if hasattr(os, "sched_setscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def connect_robot(node: Node) -> Any:
    """Connect to the arm (or the twin) named by ``node``'s parameters, retrying with backoff until
    ``connect_timeout_s``."""
    from simbridge.deploy.robot import RobotError

    timeout = float(node.get_parameter("connect_timeout_s").value)
    deadline = time.monotonic() + timeout
    sim = bool(node.get_parameter("sim").value)
    host = str(node.get_parameter("robot_ip").value)
    if not host:
        if not sim:
            raise RobotError("robot_ip is not set: pass the FR3's FCI address (robot_ip:=172.16.0.2 with "
                             "ros2 launch, --robot-ip with simbridge deploy)")
        host = wait_for_twin(node, deadline)
    delay, attempt = 0.25, 0
    while True:
        attempt += 1
        robot = make_robot(node, host)
        try:
            robot.connect()
            break
        except RobotError as err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RobotError(f"gave up connecting to {host} after {timeout:g} s ({attempt} attempts): "
                                 f"{err}") from None
            node.get_logger().warning(
                f"waiting for the robot at {host} (attempt {attempt}, retrying in {min(delay, left):.2f} s, "
                f"giving up in {left:.0f} s): {str(err).split('. Fix:')[0]}")
            time.sleep(min(delay, left))
            delay = min(2 * delay, 2.0)
    if sim:
        drop_inherited_realtime()
    return robot


def wait_for_twin(node: Node, deadline: float) -> str:
    """The twin's franky-sim address from its latched announcement (the twin starts it in its node)."""
    from rclpy.executors import SingleThreadedExecutor

    from simbridge.deploy.robot import RobotError

    announced: list[dict] = []
    sub = node.create_subscription(String, TWIN_STATUS_TOPIC, lambda m: announced.append(json.loads(m.data)),
                                   LATCHED)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    node.get_logger().info(f"waiting for the twin to announce its address on {TWIN_STATUS_TOPIC}")
    try:
        while not (announced and announced[-1].get("ready")):
            if time.monotonic() > deadline:
                raise RobotError(
                    f"no twin announced itself on {TWIN_STATUS_TOPIC} within connect_timeout_s: is the twin "
                    "node running (same ROS_DOMAIN_ID)? Or set robot_ip to franky-sim's address")
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_subscription(sub)
    return str(announced[-1]["hostname"])
