"""Which robot poses a hand-eye calibration visits, and whether a set of them can determine the answer.

:func:`generate_poses` proposes N end-effector poses around a centre pose, rotating about many
axes so that consecutive motions never share one; :func:`check_pose_diversity` refuses a set that
cannot determine the hand-eye transform (too few poses, hardly any rotation, rotations all about
parallel axes) with a :class:`DegeneratePoseSet` that says how to fix it. The routine that drives
a robot through the poses and solves is :mod:`simbridge.calibration.handeye`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from simbridge.calibration.geometry import invert, make_transform

MIN_POSES = 5


class DegeneratePoseSet(ValueError):
    """The robot poses cannot determine the hand-eye transform; the message says why and how to fix it."""


def generate_poses(
    centre: np.ndarray,
    n: int = 15,
    max_angle_deg: float = 25.0,
    max_offset_m: float = 0.04,
    pivot_in_ee: Sequence[float] = (0.0, 0.0, 0.40),
    seed: int = 0,
) -> list[np.ndarray]:
    """``n`` end-effector poses (T_base_ee) around ``centre`` with rotations about many axes.

    Each pose rotates the end effector about ``pivot_in_ee`` (a point in the centre pose's ee
    frame, e.g. the board centre the wrist camera looks at, or the held board for a fixed
    camera) so the board stays in view, then shifts it by up to ``max_offset_m``. Rotation
    axes are spread over a Fibonacci sphere and angles alternate between half and full
    ``max_angle_deg``: consecutive motions never share an axis.
    """
    if n < MIN_POSES:
        raise DegeneratePoseSet(f"n={n} poses: hand-eye calibration needs at least {MIN_POSES} (15-20 recommended)")
    rng = np.random.default_rng(seed)
    golden = np.pi * (3.0 - np.sqrt(5.0))
    pivot = np.asarray(pivot_in_ee, dtype=np.float64)
    poses = [np.asarray(centre, dtype=np.float64).copy()]
    for i in range(n - 1):
        z = 1.0 - 2.0 * (i + 0.5) / (n - 1)
        radius = np.sqrt(1.0 - z * z)
        axis = np.array([radius * np.cos(golden * i), radius * np.sin(golden * i), z])
        # Mostly tilt (about x/y of the ee frame), which keeps the board facing the camera; yaw is cheap too.
        axis[2] *= 0.8
        axis /= np.linalg.norm(axis)
        angle = np.radians(max_angle_deg) * (0.55 + 0.45 * ((i % 2) + rng.uniform(0, 0.3)) / 1.3)
        R = Rotation.from_rotvec(axis * angle).as_matrix()
        about_pivot = make_transform(R, pivot - R @ pivot)
        shift = make_transform(np.eye(3), rng.uniform(-max_offset_m, max_offset_m, 3))
        poses.append(centre @ shift @ about_pivot)
    return poses


def check_pose_diversity(poses: Sequence[np.ndarray], min_poses: int = MIN_POSES, min_rotation_deg: float = 3.0,
                         parallel_tol_deg: float = 5.0) -> None:
    """Raise :class:`DegeneratePoseSet` when ``poses`` (T_base_ee) cannot determine hand-eye.

    AX = XB needs at least two relative motions whose rotation axes are not parallel: with a
    single rotation axis, the translation along it is unobservable.
    """
    if len(poses) < min_poses:
        raise DegeneratePoseSet(
            f"only {len(poses)} robot poses with a detected board; hand-eye needs at least {min_poses} "
            "(15-20 recommended): add poses, and check the board is visible from each"
        )
    axes = []
    for i in range(len(poses)):
        for j in range(i + 1, len(poses)):
            relative = invert(poses[i]) @ poses[j]
            rotvec = Rotation.from_matrix(relative[:3, :3]).as_rotvec()
            if np.degrees(np.linalg.norm(rotvec)) >= min_rotation_deg:
                axes.append(rotvec / np.linalg.norm(rotvec))
    if len(axes) < 2:
        raise DegeneratePoseSet(
            f"the poses barely rotate (fewer than two pose pairs differ by >= {min_rotation_deg} degrees): "
            "pure translations leave the hand-eye rotation undetermined; tilt the end effector by 15-30 degrees "
            "about different axes between poses"
        )
    # Principal direction of the axes (sign-free): the largest eigenvector of sum(a a^T).
    A = np.asarray(axes)
    _eigvals, eigvecs = np.linalg.eigh(A.T @ A)
    dominant = eigvecs[:, -1]
    spread = np.degrees(np.arccos(np.clip(np.abs(A @ dominant), 0.0, 1.0))).max()
    if spread < parallel_tol_deg:
        raise DegeneratePoseSet(
            f"all rotations between poses are about parallel axes (within {spread:.1f} degrees of "
            f"{np.round(dominant, 3).tolist()} in the ee frame): the translation along that axis is "
            "unobservable; add poses that rotate about at least one other axis (tilt and yaw the end effector)"
        )
