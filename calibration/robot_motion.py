"""Drive any SimBridge :class:`~simbridge.deploy.robot.Robot` to absolute poses for calibration.

The hand-eye routine only needs ``move_to(T_base_ee) -> reported T_base_ee``.
:func:`robot_move_to` builds that callable from a connected robot using nothing but the
contract's delta actions (``robot.send_action``), so every step goes through the robot's
safety filter: the same path a policy's actions take. It stops with a clear error when the
filter refuses or clips the motion so that the target cannot be reached.

    >>> move_to = robot_move_to(robot)               # FrankyRobot, the twin, ...
    >>> views = collect_views(poses, move_to, capture, board, intrinsics)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from simbridge.calibration.geometry import pose7_to_matrix, pose_difference
from simbridge.calibration.intrinsics import CalibrationError


def delta_action(current: np.ndarray, target: np.ndarray, max_step_m: float, max_step_rad: float) -> np.ndarray:
    """Contract action ``[dx, dy, dz, droll, dpitch, dyaw, 0]`` from ``current`` toward ``target``.

    Translation in the base frame; rotation ``R_delta = R_target R_current^T`` (base-aligned
    axes, applied at the end effector) as extrinsic XYZ Euler angles. Both are scaled down to
    the step limits; the gripper entry 0 leaves the gripper as it is.
    """
    dp = target[:3, 3] - current[:3, 3]
    norm = np.linalg.norm(dp)
    if norm > max_step_m:
        dp *= max_step_m / norm
    rotvec = Rotation.from_matrix(target[:3, :3] @ current[:3, :3].T).as_rotvec()
    angle = np.linalg.norm(rotvec)
    if angle > max_step_rad:
        rotvec *= max_step_rad / angle
    euler = Rotation.from_rotvec(rotvec).as_euler("xyz")
    return np.array([*dp, *euler, 0.0], dtype=np.float32)


def robot_move_to(
    robot: Any,
    tolerance_mm: float = 2.0,
    tolerance_deg: float = 0.5,
    max_steps: int = 150,
    period_s: float = 0.1,
    settle_s: float = 0.5,
    max_step_m: float = 0.02,
    max_step_rad: float = 0.06,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``move_to(T_base_ee) -> reported T_base_ee`` callable for a connected SimBridge robot.

    The reported pose (read after ``settle_s`` of standstill) is what the calibration uses, so
    the targets need only be reached roughly (``tolerance_*``): tracking error does not bias it.
    """

    def reported() -> np.ndarray:
        return pose7_to_matrix(robot.get_observation()["ee_pose"])

    def move_to(target: np.ndarray) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        stalled, best = 0, np.inf
        for _step in range(max_steps):
            current = reported()
            mm, deg = pose_difference(current, target)
            if mm <= tolerance_mm and deg <= tolerance_deg:
                break
            wanted = delta_action(current, target, max_step_m, max_step_rad)
            sent = np.asarray(robot.send_action(wanted), dtype=np.float64)
            if not np.any(sent[:6]):
                reason = getattr(getattr(robot, "last_result", None), "reason", "") or "no motion was sent"
                raise CalibrationError(
                    f"the robot refused to move toward a calibration pose ({reason}); move the centre pose "
                    "inside the workspace, or lower max_angle_deg / max_offset_m of the pose generator"
                )
            # Clipping (joint velocity, workspace) only slows the approach; no progress means stuck.
            progress = best - (mm + 10.0 * deg)
            best = min(best, mm + 10.0 * deg)
            stalled = stalled + 1 if progress < 0.05 else 0
            if stalled >= 10 and mm < 5 * tolerance_mm and deg < 5 * tolerance_deg:
                break  # close enough: the calibration uses the pose the robot reports, not the target
            if stalled >= 10:
                last = getattr(robot, "last_result", None)
                raise CalibrationError(
                    f"the robot stopped approaching a calibration pose {mm:.1f} mm / {deg:.1f} deg away (safety "
                    f"filter clipped: {getattr(last, 'clipped', '?')}); the pose is likely outside the workspace box "
                    "or near a joint limit: choose a centre pose farther from the limits or smaller pose offsets"
                )
            sleep(period_s)
        else:
            mm, deg = pose_difference(reported(), target)
            if mm > 5 * tolerance_mm or deg > 5 * tolerance_deg:
                raise CalibrationError(f"calibration pose not reached after {max_steps} steps ({mm:.1f} mm, "
                                       f"{deg:.2f} deg away): is the robot in a fault state or blocked?")
        sleep(settle_s)
        return reported()

    return move_to
