"""The gripper half of the franky driver: :class:`GripperDriver` over a franky ``Gripper``.

A contract gripper command (+1 open ... -1 closed, with a deadband) becomes an asynchronous franky
``move`` (open to the widest allowed width) or ``grasp`` (close with bounded force and speed),
issued only on a change of command and only once the previous gripper action has finished. The
limits are the driver's :class:`~simbridge.deploy.safety_limits.SafetyLimits` (``gripper_*``).

Not thread-safe on its own: :class:`~simbridge.deploy.franky_robot.FrankyRobot` calls it under its
lock (and passes that lock to :meth:`GripperDriver.wait_open`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.franky_connection import ConnectionHolder
from simbridge.deploy.robot import RobotError

log = logging.getLogger(__name__)

#: franky Gripper objects whose action never finished: destroying them would deadlock, so they live on.
_LEAKED: list[Any] = []


class GripperDriver:
    """Open / close commands for a franky ``Gripper`` (or none: every call is then a no-op)."""

    def __init__(self, config: FrankyRobotConfig) -> None:
        self.config = config
        self.gripper: Any = None
        self.state: str | None = None  # "open" / "closed": last command sent
        self.want: str | None = None  # what the latest action asked for
        self.future: Any = None  # franky BoolFuture of the running gripper action

    def attach(self, gripper: Any) -> None:
        """Drive ``gripper`` (a fresh connection, or None without a hand), forgetting earlier commands."""
        self.gripper = gripper
        self.state = self.want = None
        self.future = None

    def width(self) -> float:
        """The finger opening (m); NaN without a hand."""
        return float(self.gripper.width) if self.gripper is not None else float("nan")

    def command(self, command: float) -> None:
        """Take a contract gripper command; outside the deadband it sets what is wanted."""
        cfg = self.config
        if command > cfg.gripper_deadband:
            self.want = "open"
        elif command < -cfg.gripper_deadband:
            self.want = "closed"
        self.service()

    def service(self) -> None:
        """Issue the wanted open/close once the previous gripper action has finished.

        A new franky gripper command blocks until the previous one ends (and with an in-process
        franky-sim that blocks the simulator too), so a change of mind waits for the next step.
        """
        if self.gripper is None or self.want in (None, self.state):
            return
        if self.future is not None and not self.future.wait(0):
            return
        cfg, lim = self.config, self.config.safety
        speed = min(cfg.gripper_speed_m_s, lim.gripper_max_speed_m_s)
        if self.want == "open":
            self.future = self.gripper.move_async(lim.gripper_max_width_m, speed)
        else:  # grasp with bounded force; wide epsilons accept any object width
            force = min(cfg.gripper_force_n, lim.gripper_max_force_n)
            self.future = self.gripper.grasp_async(lim.gripper_min_width_m, speed, force, 0.08, 0.08)
        self.state = self.want

    def wait_open(self, lock: threading.RLock, timeout_s: float) -> None:
        """Block until the hand has opened (``want`` must be "open"), servicing it under ``lock``."""
        if self.gripper is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            with lock:
                self.service()
                state, future = self.state, self.future
            if state == "open" and (future is None or future.wait(0.05)):
                break
            if time.monotonic() > deadline:
                raise RobotError(
                    f"the gripper did not open within {timeout_s} s (its previous action is still "
                    f"running): check the hand in Desk, then home again"
                )
            time.sleep(0.01)

    def release(self, timeout_s: float = 5.0) -> None:
        """Drop the gripper connection; franky's Gripper must not be destroyed mid-action (it deadlocks)."""
        fut, self.future = self.future, None
        if self.gripper is not None and fut is not None and not fut.wait(timeout_s):
            log.warning("gripper action still running after %.1f s; keeping its connection alive", timeout_s)
            _LEAKED.append(self.gripper)
        elif isinstance(self.gripper, ConnectionHolder):
            self.gripper.release_connection()
        self.gripper = None
