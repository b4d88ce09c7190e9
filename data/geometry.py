"""Rotation helpers for the contract's conventions (quaternions wxyz, extrinsic XYZ Euler deltas).

The simulator wrapper, the scripted expert and the robot's safety filter all apply a contract
action to an end-effector pose; they share these functions so that "the same action" means the
same motion in simulation and on the robot. Plain numpy, float64.
"""

from __future__ import annotations

import math

import numpy as np


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of wxyz quaternions (apply ``b`` first, then ``a``)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def euler_xyz_to_quat(rpy: np.ndarray) -> np.ndarray:
    """Extrinsic XYZ Euler angles (roll about x, then pitch about y, then yaw about z) -> wxyz.

    This is the rotation part of a contract action: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` about
    base-aligned axes.
    """
    r, p, y = (float(v) / 2 for v in rpy)
    qx = np.array([math.cos(r), math.sin(r), 0, 0])
    qy = np.array([math.cos(p), 0, math.sin(p), 0])
    qz = np.array([math.cos(y), 0, 0, math.sin(y)])
    return quat_multiply(qz, quat_multiply(qy, qx))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a (unit) wxyz quaternion."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Axis-angle vector (radians) of a wxyz quaternion, angle in [0, pi]."""
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    s = np.linalg.norm(q[1:])
    if s < 1e-12:
        return 2.0 * q[1:]
    return 2.0 * math.atan2(s, q[0]) * q[1:] / s


def apply_action_delta(ee_pose: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Target pose (xyz + wxyz) of a contract action ``[dx..dyaw, gripper]`` applied to ``ee_pose``."""
    pos = ee_pose[:3] + action[:3]
    quat = quat_multiply(euler_xyz_to_quat(action[3:6]), ee_pose[3:7])
    quat /= np.linalg.norm(quat)
    return np.concatenate([pos, quat])
