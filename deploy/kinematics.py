"""Franka FR3/Panda kinematics for the safety filter: joint limits, FK, Jacobian, exact path following.

This module owns the arm model (datasheet joint limits, modified DH parameters, the Franka Hand
TCP), the rotation geometry the filter needs beyond :mod:`simbridge.data.geometry` (rotation
vectors and extrinsic XYZ Euler angles as matrices, the roll/pitch/yaw :class:`OrientationBox`), and :func:`follow_twist_path`: the joint
motion that makes the TCP follow a commanded Cartesian step *exactly* (straight line, constant
rotation axis), integrated in small closed-loop damped-least-squares substeps and checked at every
substep. A first-order prediction (``J^+ twist``) is wrong near singularities, where the true
motion needs many times more joint travel; the path follower sees that. Plain numpy, float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.linalg import lapack

from simbridge.data.spec import NUM_JOINTS

#: Joint position limits (rad) and maximum joint velocities (rad/s) from the Franka datasheets.
JOINT_LIMITS: dict[str, dict[str, np.ndarray]] = {
    "fr3": {
        "lower": np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
        "upper": np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
        "velocity": np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    },
    "panda": {
        "lower": np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
        "upper": np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        "velocity": np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    },
}

# Modified (Craig) DH parameters of the Franka arm, identical for FR3 and Panda: a, d, alpha.
_DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0])
_DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107])
_DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0.0])
#: Flange -> Franka Hand TCP (between the fingertips): 0.1034 m along z, -45 deg about z.
HAND_TCP_OFFSET_M = 0.1034

# Constant parts of each joint's DH transform, so FK builds all seven in one vectorised pass.
_CA, _SA = np.cos(_DH_ALPHA[:NUM_JOINTS]), np.sin(_DH_ALPHA[:NUM_JOINTS])
_P_LOCAL = np.stack([_DH_A[:NUM_JOINTS], -_DH_D[:NUM_JOINTS] * _SA, _DH_D[:NUM_JOINTS] * _CA], axis=1)


def _dh(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


@lru_cache(maxsize=8)
def _flange_to_tcp(tcp_offset_m: float) -> np.ndarray:
    c, s = math.cos(-np.pi / 4), math.sin(-np.pi / 4)
    hand = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, tcp_offset_m], [0, 0, 0, 1.0]])
    return _dh(_DH_A[7], _DH_D[7], _DH_ALPHA[7], 0.0) @ hand


def forward_kinematics(
    q: np.ndarray, tcp_offset_m: float = HAND_TCP_OFFSET_M
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Base -> TCP transform (4x4) and the 7 joint frames (for the Jacobian)."""
    T = np.eye(4)
    frames = []
    for i in range(NUM_JOINTS):
        T = T @ _dh(_DH_A[i], _DH_D[i], _DH_ALPHA[i], float(q[i]))
        frames.append(T.copy())
    return T @ _flange_to_tcp(tcp_offset_m), frames


def geometric_jacobian(q: np.ndarray, tcp_offset_m: float = HAND_TCP_OFFSET_M) -> np.ndarray:
    """6x7 Jacobian (linear; angular) of the TCP in the base frame."""
    return fk_jacobian(q, tcp_offset_m)[1]


def fk_jacobian(q: np.ndarray, tcp_offset_m: float = HAND_TCP_OFFSET_M) -> tuple[np.ndarray, np.ndarray]:
    """TCP transform (4x4) and its 6x7 geometric Jacobian in one pass (the path follower's hot loop)."""
    c, s = np.cos(q), np.sin(q)
    local = np.zeros((NUM_JOINTS, 4, 4))
    local[:, 0, 0], local[:, 0, 1] = c, -s
    local[:, 1, 0], local[:, 1, 1], local[:, 1, 2] = s * _CA, c * _CA, -_SA
    local[:, 2, 0], local[:, 2, 1], local[:, 2, 2] = s * _SA, c * _SA, _CA
    local[:, :3, 3] = _P_LOCAL
    local[:, 3, 3] = 1.0
    frames = np.empty((NUM_JOINTS, 4, 4))
    T = local[0]
    frames[0] = T
    for i in range(1, NUM_JOINTS):
        T = T @ local[i]
        frames[i] = T
    tcp = T @ _flange_to_tcp(tcp_offset_m)
    z, d = frames[:, :3, 2].T, (tcp[:3, 3] - frames[:, :3, 3]).T
    J = np.empty((6, NUM_JOINTS))
    # Linear part z_i x (p - o_i), written out: np.cross costs more than the rest of FK here.
    J[0] = z[1] * d[2] - z[2] * d[1]
    J[1] = z[2] * d[0] - z[0] * d[2]
    J[2] = z[0] * d[1] - z[1] * d[0]
    J[3:] = z
    return tcp, J


def predict_joint_delta(q: np.ndarray, twist: np.ndarray, damping: float = 0.02) -> np.ndarray:
    """First-order joint displacement for a small TCP displacement ``twist`` (dp, rotation vector).

    Only an estimate (damped least squares at ``q``); the safety filter uses
    :func:`follow_twist_path`, which is exact along the whole step.
    """
    J = geometric_jacobian(q)
    return J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), twist)


# --- Rotation helpers (matrices; extrinsic XYZ Euler as in the contract's actions) ---------------


def rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrix of the axis-angle vector ``w`` (rad), written out (hot path)."""
    x, y, z = float(w[0]), float(w[1]), float(w[2])
    theta = math.sqrt(x * x + y * y + z * z)
    if theta < 1e-12:
        return np.eye(3)
    x, y, z = x / theta, y / theta, z / theta
    s, c = math.sin(theta), math.cos(theta)
    t = 1.0 - c
    return np.array(
        [
            [c + t * x * x, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, c + t * y * y, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, c + t * z * z],
        ]
    )


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix, angle in [0, pi] (via the quaternion: robust near pi)."""
    w = 0.5 * math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2]))
    x = 0.5 * math.copysign(math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])), R[2, 1] - R[1, 2])
    y = 0.5 * math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])), R[0, 2] - R[2, 0])
    z = 0.5 * math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])), R[1, 0] - R[0, 1])
    s = math.sqrt(x * x + y * y + z * z)
    if s < 1e-15:
        return np.zeros(3)
    angle = 2.0 * math.atan2(s, w)
    return np.array([x, y, z]) * (angle / s)


def euler_xyz_to_rotvec(rpy: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a contract action's ``[droll, dpitch, dyaw]`` (via the half-angle quaternion)."""
    cr, sr = math.cos(0.5 * rpy[0]), math.sin(0.5 * rpy[0])
    cp, sp = math.cos(0.5 * rpy[1]), math.sin(0.5 * rpy[1])
    cy, sy = math.cos(0.5 * rpy[2]), math.sin(0.5 * rpy[2])
    w = cr * cp * cy + sr * sp * sy  # q = q_yaw * q_pitch * q_roll
    x, y, z = sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    s = math.sqrt(x * x + y * y + z * z)
    return np.zeros(3) if s < 1e-15 else np.array([x, y, z]) * (2.0 * math.atan2(s, w) / s)


def euler_xyz_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)``: the rotation of a contract action's ``[droll, dpitch, dyaw]``."""
    cr, sr = math.cos(rpy[0]), math.sin(rpy[0])
    cp, sp = math.cos(rpy[1]), math.sin(rpy[1])
    cy, sy = math.cos(rpy[2]), math.sin(rpy[2])
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_euler_xyz(R: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix`: (roll, pitch, yaw), pitch in [-pi/2, pi/2]."""
    pitch = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    return np.array([math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])])


class OrientationBox:
    """Roll/pitch/yaw bounds of an orientation relative to a nominal one (serl's ``ABS_POSE_LIMIT``).

    The deviation ``R R_nominal^T`` as extrinsic XYZ Euler angles about the base axes (the
    convention of a contract action's rotation). An axis whose bounds span the full circle is not
    bounded. An orientation already outside the box may only move back in (the bounds widen to it).
    """

    def __init__(self, nominal_wxyz: Sequence[float], low: Sequence[float], high: Sequence[float]) -> None:
        w, x, y, z = np.asarray(nominal_wxyz, dtype=np.float64) / np.linalg.norm(nominal_wxyz)
        self.R_nominal = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        free = high - low >= 2 * math.pi - 1e-9  # a full circle is no bound
        self.low, self.high = np.where(free, -np.inf, low), np.where(free, np.inf, high)
        self.bounded = not free.all()

    def deviation(self, R: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
        """(roll, pitch, yaw) of ``R`` about the nominal orientation; unwrapped next to ``near``."""
        dev = matrix_to_euler_xyz(R @ self.R_nominal.T)
        return dev if near is None else near + (dev - near + math.pi) % (2 * math.pi) - math.pi

    def clip_step(self, w: np.ndarray, R: np.ndarray) -> np.ndarray | None:
        """The rotation step ``w`` (rotvec, applied on the left of ``R``) clipped into the box; None if inside.

        Per axis, so the free axes keep their motion; never larger than ``w``, and verified inside
        (bisection on the step: the safety net for the curvature of Euler angles).
        """
        if not self.bounded:
            return None
        lo, hi, cur = bounds = self._bounds(R)
        target = self.deviation(rotvec_to_matrix(w) @ R, cur)
        if ((target >= lo) & (target <= hi)).all():
            return None
        new = matrix_to_rotvec(
            euler_xyz_to_matrix(np.minimum(np.maximum(target, lo), hi)) @ self.R_nominal @ R.T
        )
        angle, limit = float(np.linalg.norm(new)), float(np.linalg.norm(w))
        if angle > limit:
            new *= limit / angle
        return new * self._largest_fraction(new, R, bounds)

    def fraction_inside(self, w: np.ndarray, R: np.ndarray) -> float:
        """Largest ``g`` in [0, 1] with the step ``g * w`` from ``R`` ending inside the (widened) box."""
        return self._largest_fraction(w, R, self._bounds(R)) if self.bounded else 1.0

    def _bounds(self, R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cur = self.deviation(R)
        return np.minimum(self.low, cur), np.maximum(self.high, cur), cur

    def _largest_fraction(self, w: np.ndarray, R: np.ndarray, bounds: tuple) -> float:
        lo, hi, cur = bounds

        def inside(g: float) -> bool:
            dev = self.deviation(rotvec_to_matrix(g * w) @ R, cur)
            return bool(((dev >= lo - 1e-12) & (dev <= hi + 1e-12)).all())

        if inside(1.0):
            return 1.0
        good, bad = 0.0, 1.0  # g = 0 is the current orientation: inside the widened box
        for _ in range(30):
            mid = 0.5 * (good + bad)
            good, bad = (mid, bad) if inside(mid) else (good, mid)
        return good


# --- Exact path following ------------------------------------------------------------------------

#: Damping of the least-squares steps: tiny, so the solution is the exact minimum-norm motion
#: wherever the arm can follow the path at all (smallest singular values ~1e-2 and up).
_DAMPING = 1e-6
#: A substep whose pose error after the correction exceeds this (m or rad) could not be tracked.
_TRACKING_TOL = 2e-3
#: Error budget of the whole path (rad): a substep over ``ds`` of it may need a Heun correction of
#: at most ``ds`` times this, else it is retried shorter (error per unit step: the sum stays bounded).
_PATH_ERROR_RAD = 1e-2


@dataclass
class JointPath:
    """How much of a Cartesian step the arm can follow inside a joint box, and why it stops there."""

    fraction: float  # largest verified fraction of the step, in [0, 1]
    stop: str  # "" (whole step verified), "joint", "singularity", "tracking" or "substeps"
    joint: int  # the joint that reached its box (stop == "joint"), else -1
    bound: float  # the box bound that joint reached (nan otherwise)
    q_end: np.ndarray  # joint positions at ``fraction``
    min_singular_value: float  # smallest singular value of J met along the verified part
    substeps: int


def _twist_error(tcp: np.ndarray, p: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Small-angle pose error (dp; rotation) from ``tcp`` to the pose (p, R), base frame."""
    E = R @ tcp[:3, :3].T
    e = np.empty(6)
    e[:3] = p - tcp[:3, 3]
    e[3], e[4], e[5] = 0.5 * (E[2, 1] - E[1, 2]), 0.5 * (E[0, 2] - E[2, 0]), 0.5 * (E[1, 0] - E[0, 1])
    return e


def _pinv_and_sigma(J: np.ndarray) -> tuple[np.ndarray, float]:
    """Damped pseudo-inverse (7x6) of J and its smallest singular value, from one 6x6 eigensolve."""
    lam2, V, _ = lapack.dsyev(J @ J.T)  # LAPACK directly: np.linalg.eigh's wrapper costs 3x the solve
    return J.T @ ((V / (lam2 + _DAMPING**2)) @ V.T), math.sqrt(max(0.0, float(lam2[0])))


def follow_twist_path(
    q0: np.ndarray,
    twist: np.ndarray,
    q_low: np.ndarray,
    q_high: np.ndarray,
    *,
    max_joint_substep: float = 0.04,
    max_substeps: int = 64,
    min_singular_value: float = 0.0,
    tcp_offset_m: float = HAND_TCP_OFFSET_M,
) -> JointPath:
    """Follow the TCP step ``twist = (dp, rotvec)`` from ``q0`` and return how far it stays valid.

    The commanded path is ``p(s) = p0 + s dp``, ``R(s) = exp(s rotvec) R0`` for ``s`` in [0, 1]; the
    joints follow it with the minimum-norm motion (closed-loop least squares, Heun steps with error
    control), in substeps moving no joint more than ``max_joint_substep``. The path stops
    (``fraction`` < 1) where a joint leaves ``[q_low, q_high]`` (interpolated to the crossing; ``q0``
    must be inside), where the smallest singular value of J falls below ``min_singular_value``
    while decreasing (driving into a singularity; moving out of one is allowed), where the pose
    cannot be tracked, or after ``max_substeps`` FK evaluations. Scaling the step by ``fraction``
    gives exactly the verified prefix.
    """
    q = np.array(q0, dtype=np.float64)
    xi = np.asarray(twist, dtype=np.float64)
    tcp, J = fk_jacobian(q, tcp_offset_m)
    p0, R0, dp, w = tcp[:3, 3], tcp[:3, :3], xi[:3], xi[3:]
    pinv, sigma = _pinv_and_sigma(J)
    min_sigma = sigma
    if not xi.any():
        return JointPath(1.0, "", -1, math.nan, q, min_sigma, 0)
    s, residual, ds_cap, n = 0.0, np.zeros(6), 1.0, 0
    while n < max_substeps:
        # Joint velocity per unit of s along the path; the substep moves no joint more than allowed.
        v = pinv @ xi
        vmax = float(np.abs(v).max())
        ds = min(1.0 - s, ds_cap, max_joint_substep / vmax if vmax > 0 else 1.0)
        n += 1
        s_new = 1.0 if ds >= 1.0 - s else s + ds
        q_new = q + v * ds + pinv @ residual  # Euler predictor plus the pose error left over
        tcp, J_new = fk_jacobian(q_new, tcp_offset_m)
        pinv_new, sigma_new = _pinv_and_sigma(J_new)
        # Heun: average the velocities at both ends. Both map to the same twist, so this mostly
        # corrects the drift along the arm's redundancy; its size estimates the substep's error.
        heun = 0.5 * ds * (pinv_new @ xi - v)
        if float(np.abs(heun).max()) > _PATH_ERROR_RAD * ds and ds > 1e-9:
            ds_cap = 0.5 * ds  # J changes fast here (near a singularity): retry a shorter substep
            continue
        ds_cap = 2.0 * ds
        q_new += heun
        residual = _twist_error(tcp, p0 + s_new * dp, rotvec_to_matrix(s_new * w) @ R0) - J_new @ heun
        if float(np.abs(residual).max()) > _TRACKING_TOL:
            return JointPath(s, "tracking", -1, math.nan, q, min_sigma, n)
        out = (q_new < q_low) | (q_new > q_high)
        if out.any():
            # Interpolate to where the first joint reaches its box (q is inside, q_new is not).
            bound = np.where(q_new < q_low, q_low, q_high)
            step = q_new - q
            t = np.full(NUM_JOINTS, np.inf)
            t[out] = (bound[out] - q[out]) / step[out]
            j = int(np.argmin(t))
            t_j = min(1.0, max(0.0, float(t[j])))
            return JointPath(s + t_j * ds, "joint", j, float(bound[j]), q + t_j * step, min_sigma, n)
        if sigma_new < min_singular_value and sigma_new < sigma:
            return JointPath(s, "singularity", -1, math.nan, q, min_sigma, n)
        q, s, pinv, sigma, min_sigma = q_new, s_new, pinv_new, sigma_new, min(min_sigma, sigma_new)
        if s >= 1.0:
            return JointPath(1.0, "", -1, math.nan, q, min_sigma, n)
    return JointPath(s, "substeps", -1, math.nan, q, min_sigma, n)
