"""Rigid transforms used throughout calibration: 4x4 homogeneous matrices, nothing fancier.

Conventions (the same as :mod:`simbridge.data.spec`):

* ``T_a_b`` maps points expressed in frame ``b`` into frame ``a`` (``p_a = T_a_b @ p_b``), so
  ``T_base_camera`` is the camera's pose in the robot base frame.
* Poses on the robot side are ``(7,)`` vectors ``xyz`` (m) + quaternion ``wxyz``.
* OpenCV gives board poses as ``rvec, tvec`` (Rodrigues vector, metres): ``T_camera_board``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation


def make_transform(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """4x4 transform from a 3x3 rotation matrix and a translation (m)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (cheaper and better conditioned than ``np.linalg.inv``)."""
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def from_rvec_tvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    return make_transform(R, np.asarray(tvec, dtype=np.float64).reshape(3))


def to_rvec_tvec(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))
    return rvec.reshape(3), T[:3, 3].copy()


def pose7_to_matrix(pose: Sequence[float]) -> np.ndarray:
    """``xyz + quat wxyz`` (the contract's ee_pose) -> 4x4."""
    p = np.asarray(pose, dtype=np.float64).reshape(7)
    w, x, y, z = p[3:]
    if not np.isfinite(p).all() or abs(np.linalg.norm([w, x, y, z]) - 1.0) > 1e-3:
        raise ValueError(f"pose {p.tolist()}: expected xyz + unit quaternion wxyz (finite)")
    return make_transform(Rotation.from_quat([x, y, z, w]).as_matrix(), p[:3])


def matrix_to_pose7(T: np.ndarray) -> np.ndarray:
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    if w < 0:  # one canonical sign, so equal poses compare equal
        x, y, z, w = -x, -y, -z, -w
    return np.array([*T[:3, 3], w, x, y, z], dtype=np.float64)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of the rotation ``R`` (a 3x3 matrix)."""
    cos = (np.trace(R[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_difference(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation distance in mm, rotation angle in degrees) between two poses."""
    delta = invert(T_a) @ T_b
    return float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]) * 1000.0), rotation_angle_deg(delta[:3, :3])


def average_transforms(transforms: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of rigid transforms: arithmetic mean of translations, chordal mean of rotations."""
    Ts = np.asarray(transforms, dtype=np.float64)
    mean_rotation = Rotation.from_matrix(Ts[:, :3, :3]).mean().as_matrix()
    return make_transform(mean_rotation, Ts[:, :3, 3].mean(axis=0))
