"""The robot interface every SimBridge layer talks to: a LeRobot-style :class:`Robot`.

The policy runtime, the ROS 2 franka node, teleop and calibration drive a robot through::

    with FrankyRobot(FrankyRobotConfig(host="172.16.0.2")) as robot:   # connect() ... disconnect()
        obs = robot.get_observation()          # ee_pose (xyz + wxyz), gripper_width, joint_positions, timestamp
        sent = robot.send_action(action)       # contract action -> safety filter -> arm; returns what was sent
        robot.recover()                        # clear a reflex / error after a fault

Drivers: :class:`simbridge.deploy.franky_robot.FrankyRobot` (a Franka FR3/Panda or the franky-sim
twin, configured by :class:`simbridge.deploy.franky_config.FrankyRobotConfig`). Fault drills for
what a simulator cannot raise: :mod:`simbridge.deploy.testing`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

#: Franka "ready" pose (the same as franky's examples): TCP 0.31 m in front of the base, 0.49 m up, pointing down.
HOME_JOINTS = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)


class RobotError(RuntimeError):
    """The robot cannot do what was asked (unreachable, not connected, refused). The message says how to fix it."""


class RobotFault(RobotError):
    """A fault during motion (reflex, communication loss). The arm was stopped; call ``recover()``."""


class Robot(ABC):
    """LeRobot-style robot: connect / get_observation / send_action / stop / recover / disconnect.

    ``send_action`` returns the action actually sent (after safety filtering), so loggers record
    what the robot did, not what the policy wished for.
    """

    name: str = "robot"

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def get_observation(self) -> dict[str, Any]:
        """``{"ee_pose": (7,) xyz+wxyz, "gripper_width": float, "joint_positions": (7,), "timestamp": float}``."""

    @abstractmethod
    def send_action(self, action: np.ndarray, stamp: float | None = None,
                    published: float | None = None) -> np.ndarray:
        """Execute one contract action; return the (7,) action actually sent (zeros when refused).

        ``stamp``: the time of the observation the action was computed from (the safety filter
        bounds its age); ``published``: when the command left its producer (transport age)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the current motion (not latched)."""

    @abstractmethod
    def recover(self) -> None:
        """Clear errors after a fault so motion can resume."""

    @abstractmethod
    def disconnect(self) -> None: ...

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
