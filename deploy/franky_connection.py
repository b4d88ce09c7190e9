"""The franky boundary of the driver: importing franky, opening the arm and the hand, naming failures.

:class:`~simbridge.deploy.franky_robot.FrankyRobot` goes through here to create its franky objects
(:func:`open_arm`, :func:`open_hand`): a failure becomes a :class:`~simbridge.deploy.robot.RobotError`
that says what to check, and :func:`describe_franky_error` names every franky exception the
driver reports later (reflex, lost link, rejected command, missed deadline) with what to do.
:class:`ConnectionHolder` is the one thing the driver knows about wrappers such as
:class:`simbridge.deploy.testing.FaultInjector`: on disconnect, a holder is asked to let go of
its connection.

franky is imported lazily (:func:`import_franky`): this module imports without franky installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.robot import RobotError


@runtime_checkable
class ConnectionHolder(Protocol):
    """A wrapper around a franky object (from ``robot_factory``) that must let go of it on disconnect,
    even while exceptions still refer to the wrapper."""

    def release_connection(self) -> None: ...


def import_franky() -> Any:
    """The ``franky`` module, or a :class:`RobotError` saying how to install it."""
    try:
        import franky
    except ImportError as exc:  # pragma: no cover - franky is a dependency of the deploy extra
        raise RobotError(
            "franky is not installed: pip install franky-control (and franky-sim for the twin)"
        ) from exc
    return franky


def describe_franky_error(exc: BaseException) -> str:
    """Name the kind of franky failure and what to do about it."""
    kind = type(exc).__name__
    hints = {
        "ControlException": "a reflex or control error (collision, limit violation, discontinuity): "
        "check the scene, lower relative_dynamics_factor, then recover()",
        "NetworkException": "communication with the robot was lost: check the cable / network, then recover()",
        "CommandException": "the robot rejected a command: check its mode (FCI active, brakes open), then recover()",
        "RealtimeException": "the control loop missed its deadline: use a realtime kernel or sim=True for the twin",
    }
    return f"{kind}: {exc} ({hints.get(kind, 'unexpected franky error; see the message, then recover()')})"


def is_planner_rejection(exc: BaseException) -> bool:
    """franky's trajectory planner refused a motion before it started (Ruckig error codes)."""
    return type(exc) is RuntimeError and "Motion planner failed" in str(exc)


def open_arm(cfg: FrankyRobotConfig, robot_factory: Callable[..., Any] | None = None) -> Any:
    """Connect to the arm at ``cfg.host`` and configure it (dynamics factor, collision thresholds,
    errors cleared). ``robot_factory(host, realtime_config)`` defaults to ``franky.Robot``."""
    franky = import_franky()
    rt = franky.RealtimeConfig.Ignore if cfg.sim else franky.RealtimeConfig.Enforce
    make_robot = robot_factory or franky.Robot
    try:
        robot = make_robot(cfg.host, realtime_config=rt)
    except Exception as exc:  # franky raises NetworkException / IncompatibleVersionException
        raise RobotError(
            f"cannot connect to the Franka at {cfg.host!r}: {type(exc).__name__}: {exc}. Fix: check "
            f"FrankyRobotConfig.host (ping {cfg.host}), that the arm is unlocked and FCI is active in "
            f"Desk, and that no other program controls it; without a robot, run the simulated twin "
            f"(simbridge.deploy.twin.TwinSim or `simbridge deploy --sim`)"
        ) from exc
    try:
        robot.relative_dynamics_factor = cfg.relative_dynamics_factor
        robot.set_collision_behavior(list(cfg.torque_thresholds), list(cfg.force_thresholds))
        robot.recover_from_errors()
    except Exception as exc:
        robot = None  # release the connection now, not when the traceback is collected
        raise RobotError(
            f"connected to {cfg.host} but configuring it failed: {describe_franky_error(exc)}"
        ) from exc
    return robot


def open_hand(cfg: FrankyRobotConfig, gripper_factory: Callable[[str], Any] | None = None) -> Any:
    """Connect to the Franka Hand at ``cfg.host`` (None when ``cfg.use_gripper`` is off).
    ``gripper_factory(host)`` defaults to ``franky.Gripper``."""
    if not cfg.use_gripper:
        return None
    make_gripper = gripper_factory or import_franky().Gripper
    try:
        return make_gripper(cfg.host)
    except Exception as exc:
        raise RobotError(
            f"cannot connect to the Franka Hand at {cfg.host!r}: {type(exc).__name__}: {exc}. Fix: "
            f"check the hand is attached and initialised in Desk, or set use_gripper=false"
        ) from exc
