"""The Franka driver: :class:`FrankyRobot`, the :class:`~simbridge.deploy.robot.Robot` interface over franky.

The policy runtime, the ROS 2 franka node and the evaluation all talk to the arm through::

    with FrankyRobot(FrankyRobotConfig(host="172.16.0.2")) as robot:   # connect() ... disconnect()
        obs = robot.get_observation()          # ee_pose (xyz + wxyz), gripper_width, joint_positions, timestamp
        sent = robot.send_action(action)       # contract action -> safety filter -> franky; returns what was sent
        robot.estop(); robot.reset_estop()     # latched emergency stop
        robot.recover()                        # clear a reflex / error after a fault

:class:`FrankyRobot` drives the arm through `franky <https://github.com/TimSchneider42/franky>`_:
each filtered action becomes an **asynchronous** absolute Cartesian motion (a new one preempts the
running one, so the arm follows a 10 Hz stream smoothly); the gripper opens with ``move`` and closes
with ``grasp`` (asynchronous, only on a change of command). The same code drives a real FR3/Panda
and the simulated twin (:mod:`simbridge.deploy.twin`, franky-sim): only ``FrankyRobotConfig.sim``
differs (franky's ``RealtimeConfig.Ignore``, as the simulator runs in a normal process).

Safety layers, from outermost: the :class:`~simbridge.deploy.safety.SafetyFilter` on every action;
franky's relative dynamics factor (default 0.15) and collision thresholds; a **latched e-stop**
that refuses motion until :meth:`FrankyRobot.reset_estop`; a **watchdog** thread that stops the arm
when no command arrived for ``watchdog_timeout_s``; and fault handling: a franky exception during
a motion (reflex, communication loss) stops the arm, is reported by :meth:`FrankyRobot.status` and
makes further ``send_action`` calls raise :class:`RobotFault` until :meth:`FrankyRobot.recover`.

franky-sim cannot raise reflexes: :class:`simbridge.deploy.testing.FaultInjector` wraps the real
franky objects (through ``robot_factory`` / ``gripper_factory``) to raise real franky exceptions.

This module owns the arm: lifecycle, observation, motion, e-stop, recovery, homing, the watchdog.
Opening the franky objects, naming franky errors and the lazy franky import (this module imports
without franky) are in :mod:`simbridge.deploy.franky_connection`; the gripper in
:mod:`simbridge.deploy.franky_gripper`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from simbridge.data.spec import quat_wxyz_to_xyzw, quat_xyzw_to_wxyz
from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.franky_connection import (
    ConnectionHolder,
    describe_franky_error,
    import_franky,
    is_planner_rejection,
    open_arm,
    open_hand,
)
from simbridge.deploy.franky_gripper import GripperDriver
from simbridge.deploy.robot import Robot, RobotError, RobotFault
from simbridge.deploy.safety import SafetyFilter, SafetyResult

log = logging.getLogger(__name__)


class FrankyRobot(Robot):
    """A Franka FR3/Panda (or franky-sim twin) driven through franky, behind the safety filter.

    ``robot_factory(host, realtime_config)`` and ``gripper_factory(host)`` create the franky
    objects; they default to ``franky.Robot`` / ``franky.Gripper`` and exist so a
    :class:`FaultInjector` can wrap them.
    """

    name = "franka"

    def __init__(
        self,
        config: FrankyRobotConfig | None = None,
        *,
        robot_factory: Callable[..., Any] | None = None,
        gripper_factory: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or FrankyRobotConfig()
        self.safety = SafetyFilter(self.config.safety, clock=clock)
        self._robot_factory = robot_factory
        self._gripper_factory = gripper_factory
        self._clock = clock
        self._robot: Any = None
        self._lock = threading.RLock()  # franky calls from the caller and the watchdog thread
        self._estopped = False
        self._estop_reason = ""
        self._fault = ""
        self._motion_active = False
        self._last_command_time = 0.0
        self._hand = GripperDriver(self.config)  # the Franka Hand (none until connect())
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()
        self.watchdog_trips = 0
        self.planner_rejections = 0
        self.num_sent = 0
        self.last_result: SafetyResult | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._robot is not None

    def connect(self) -> None:
        if self.is_connected:
            return
        cfg = self.config
        robot = open_arm(cfg, self._robot_factory)
        gripper = open_hand(cfg, self._gripper_factory)
        with self._lock:
            self._robot = robot
            self._hand.attach(gripper)
            self._fault = ""
            self._motion_active = False
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watchdog_loop, name="franky-watchdog", daemon=True)
        self._watchdog.start()
        log.info("connected to %s (sim=%s)", cfg.host, cfg.sim)

    def disconnect(self) -> None:
        if self._watchdog is not None:
            self._watchdog_stop.set()
            self._watchdog.join(timeout=2.0)
            self._watchdog = None
        if self._robot is None:
            return
        with self._lock:
            try:
                self._halt()
            finally:
                # franky closes the connection when its objects are released. The gripper goes first,
                # after its running action (if any): waiting on the future of a destroyed Gripper crashes.
                self._hand.release()
                if isinstance(self._robot, ConnectionHolder):
                    self._robot.release_connection()
                self._robot = None
        # franky disconnects when its objects are destroyed. The driver keeps them only in
        # attributes (never in locals a traceback could hold), and cycles are collected now:
        # franky-sim serves one client at a time, and a lingering connection blocks the next one.
        gc.collect()

    # --- state ----------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._robot is None:
            raise RobotError(
                f"robot {self.config.host} is not connected: call connect() (or use `with robot:`)"
            )
        return self._robot

    def get_observation(self) -> dict[str, Any]:
        with self._lock:
            self._require()
            try:
                state = self._robot.state  # one consistent sample: pose and joints from the same instant
                pose = state.O_T_EE
                q = np.asarray(state.q, dtype=np.float64).reshape(7)
                width = self._hand.width()
            except Exception as exc:
                self._on_fault(exc)
                raise RobotFault(f"reading the robot state failed: {describe_franky_error(exc)}") from exc
        ee = np.concatenate([np.asarray(pose.translation, np.float64), quat_xyzw_to_wxyz(pose.quaternion)])
        return {"ee_pose": ee, "gripper_width": width, "joint_positions": q, "timestamp": self._clock()}

    def status(self) -> dict[str, Any]:
        """Diagnostics for dashboards / ROS diagnostics: faults, e-stop, watchdog, safety counters."""
        last = self.last_result
        return {
            "connected": self.is_connected,
            "host": self.config.host,
            "estopped": self._estopped,
            "estop_reason": self._estop_reason,
            "fault": self._fault,
            "motion_active": self._motion_active,
            "watchdog_trips": self.watchdog_trips,
            "planner_rejections": self.planner_rejections,
            "num_sent": self.num_sent,
            "safety_filtered": self.safety.num_filtered,
            "safety_clipped": self.safety.num_clipped,
            "safety_rejected": self.safety.num_rejected,
            "last_clipped": list(last.clipped) if last else [],
            "last_rejection": last.reason if last and last.rejected else "",
        }

    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def fault(self) -> str:
        """Description of the current fault ('' when none)."""
        return self._fault

    # --- commands -------------------------------------------------------------------------

    def send_action(self, action: np.ndarray, stamp: float | None = None,
                    published: float | None = None) -> np.ndarray:
        """Filter ``action`` through the safety limits and execute it as an asynchronous Cartesian motion.

        Returns the action actually sent: zeros when the e-stop is latched or the filter rejected
        it (the arm is then stopped). Raises :class:`RobotFault` while a fault awaits ``recover()``.
        """
        franky = import_franky()
        with self._lock:
            self._require()
            self._last_command_time = self._clock()
            if self._fault:
                raise RobotFault(
                    f"robot {self.config.host} is in a fault state ({self._fault}); call recover()"
                )
            if self._estopped:
                self._halt()
                self.last_result = None
                return np.zeros(7, np.float32)
            state = self.get_observation()
            result = self.safety.filter(action, state["ee_pose"], state["joint_positions"], stamp=stamp,
                                        publish_stamp=published)
            self.last_result = result
            if result.rejected:
                log.warning("safety filter rejected an action: %s", result.reason)
                self._halt()
                return result.action
            target = result.target_pose
            affine = franky.Affine(target[:3], quat_wxyz_to_xyzw(target[3:]))
            try:
                # Surface errors of the previous asynchronous motion (reflexes happen there).
                self._robot.poll_motion()
                self._robot.move(
                    franky.CartesianMotion(affine, franky.ReferenceType.Absolute), asynchronous=True
                )
                self._motion_active = True
                self._hand.command(float(result.action[6]))
            except Exception as exc:
                if is_planner_rejection(exc) and not self._robot_has_errors():
                    # franky could not plan this step (e.g. from the arm's current velocity): the robot
                    # itself is fine. Like a safety rejection: stop, send nothing, take the next command.
                    log.warning("franky rejected the motion (%s); the arm is stopped", exc)
                    self.planner_rejections += 1
                    self._motion_active = True
                    self._halt()
                    return np.zeros(7, np.float32)
                self._on_fault(exc)
                raise RobotFault(f"robot {self.config.host}: {describe_franky_error(exc)}") from exc
            self.num_sent += 1
            return result.action

    def _robot_has_errors(self) -> bool:
        try:
            return bool(self._robot.has_errors)
        except Exception:  # cannot tell: treat as an error (fail closed)
            return True

    def _halt(self) -> None:
        """Stop the arm if it may be moving; never raises (used on every failure path)."""
        if self._robot is None or not self._motion_active:
            return
        try:
            self._robot.stop()
        except Exception as exc:  # a stop that fails still leaves the arm in the robot's own reflex
            log.error("stopping the arm failed: %s", describe_franky_error(exc))
        try:
            # franky reports the stopped motion as "preempted" on the next poll: consume it here.
            self._robot.join_motion(timeout=0.5)
        except Exception as exc:
            log.debug("stopped motion ended with: %s", exc)
        self._motion_active = False
        try:
            if self._robot.has_errors and not self._fault:
                self._fault = "the robot reports errors after stopping (reflex?)"
        except Exception as exc:
            self._fault = self._fault or describe_franky_error(exc)

    def _on_fault(self, exc: BaseException) -> None:
        self._fault = describe_franky_error(exc)
        log.error("robot fault: %s", self._fault)
        self._motion_active = True  # unknown: make _halt try
        self._halt()

    def stop(self) -> None:
        with self._lock:
            self._motion_active = True  # stop even if we believe it is idle
            self._halt()

    def estop(self, reason: str = "operator") -> None:
        """Latched emergency stop: stop now and refuse motion until :meth:`reset_estop`."""
        with self._lock:
            self._estopped = True
            self._estop_reason = reason
            self._motion_active = True
            self._halt()
        log.warning("e-stop latched (%s)", reason)

    def reset_estop(self) -> None:
        with self._lock:
            self._estopped = False
            self._estop_reason = ""
        log.warning("e-stop reset")

    def recover(self) -> None:
        """Clear a reflex / error (franky ``recover_from_errors``). The e-stop stays latched if set."""
        with self._lock:
            self._require()
            try:
                ok = self._robot.recover_from_errors()
            except Exception as exc:
                raise RobotError(
                    f"recovering {self.config.host} failed: {describe_franky_error(exc)}. Fix: free the arm "
                    f"(move it out of collision by hand guiding), check Desk for errors, then retry"
                ) from exc
            if ok is False:
                raise RobotError(
                    f"recover_from_errors() on {self.config.host} did not succeed: check Desk for errors"
                )
            self._fault = ""
            self._motion_active = False
        log.info("recovered from errors on %s", self.config.host)

    def home(self, joints: tuple[float, ...] | None = None, timeout_s: float = 30.0,
             gripper_timeout_s: float = 10.0) -> None:
        """Move (blocking) to ``joints`` (default ``config.home_joints``) and open the gripper."""
        franky = import_franky()
        target = [float(v) for v in (joints or self.config.home_joints)]
        with self._lock:
            self._require()
            if self._estopped:
                raise RobotError("e-stop is latched: reset_estop() before homing")
            if self._fault:
                raise RobotFault(f"robot is in a fault state ({self._fault}); call recover() before homing")
            self._halt()
        # Start from rest: franky's planner rejects a start state moving faster than the scaled
        # limits (Ruckig "error code -101"), e.g. right after a policy's last Cartesian step.
        self._wait_until_at_rest(timeout_s=3.0)
        with self._lock:
            self._require()
            try:
                self._robot.move(franky.JointMotion(target), asynchronous=True)
                self._motion_active = True
                # Fed now, under the same lock: otherwise the watchdog thread could see an active
                # motion with the last policy command's (stale) time and halt the homing at once.
                self._last_command_time = self._clock()
            except Exception as exc:
                self._on_fault(exc)
                raise RobotFault(f"homing failed: {describe_franky_error(exc)}") from exc
        deadline = time.monotonic() + timeout_s
        while True:  # join in slices so the watchdog does not count a long homing as stale
            with self._lock:
                if self._estopped:  # estop() (another thread) stopped the homing motion: not a fault
                    raise RobotError(f"homing interrupted by the e-stop ({self._estop_reason})")
                self._last_command_time = self._clock()
                try:
                    done = self._require().join_motion(timeout=0.05)
                except Exception as exc:
                    self._on_fault(exc)
                    raise RobotFault(f"homing failed: {describe_franky_error(exc)}") from exc
            if done:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RobotError(f"homing did not finish within {timeout_s} s")
            time.sleep(0.01)
        with self._lock:
            self._motion_active = False
            self._hand.want = "open"
        self._hand.wait_open(self._lock, gripper_timeout_s)

    # --- watchdog -------------------------------------------------------------------------

    def _watchdog_loop(self) -> None:
        period = min(0.02, self.config.watchdog_timeout_s / 5)
        while not self._watchdog_stop.wait(period):
            with self._lock:
                if (
                    self._robot is not None
                    and self._motion_active
                    and self._clock() - self._last_command_time > self.config.watchdog_timeout_s
                ):
                    if self._arm_at_rest():  # the last target was reached: nothing to stop
                        self._motion_active = False
                        continue
                    self.watchdog_trips += 1
                    log.warning(
                        "watchdog: no command for %.2f s, stopping the arm", self.config.watchdog_timeout_s
                    )
                    self._halt()

    def _wait_until_at_rest(self, timeout_s: float, tol_rad_s: float = 1e-2) -> bool:
        """Poll the joint velocities (lock released in between) until the arm is still or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._robot is None or self._arm_at_rest(tol_rad_s):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _arm_at_rest(self, tol_rad_s: float = 1e-3) -> bool:
        try:
            return float(np.max(np.abs(self._robot.state.dq))) < tol_rad_s
        except Exception:  # cannot tell: treat as moving (fail closed)
            return False
