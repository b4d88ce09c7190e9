"""Safety filter between a policy's action and the robot: clip what is unsafe, reject what is wrong.

Every action that reaches the arm passes :meth:`SafetyFilter.filter` first. The filter is plain
numpy (no ROS, no franky, no torch) so it runs and is tested anywhere. It works on contract
actions (``[dx, dy, dz, droll, dpitch, dyaw, gripper]``, see :mod:`simbridge.data.spec`) and the
current end-effector pose, and returns a :class:`SafetyResult` holding the action actually to
execute, the resulting target pose and what it changed:

* **rejected** (zero motion + stop flag, fails closed): a malformed / NaN / inf action, an invalid
  current pose or joint vector, a stale or future timestamp, a delta implausibly larger than the
  per-step limit (a unit bug such as millimetres for metres is not something to clip and run).
* **clipped** (executed, reported in ``.clipped``): translation norm and per-axis rotation above the
  per-step limits (derived from both the step limits and the velocity limits at the control rate),
  a target outside the end-effector workspace box, motion that would bring a joint into its
  limit margin or above its velocity limit (predicted with the FR3/Panda kinematics), a gripper
  command outside [-1, 1].

Defaults follow DROID / serl practice (``REFERENCE.md`` section 3): 0.05 m and 0.15 rad per
10 Hz step, a box over the table, 0.1 rad joint-limit margins.

    >>> f = SafetyFilter(SafetyLimits())
    >>> r = f.filter(np.array([0.2, 0, 0, 0, 0, 0, 1.0]), ee_pose=np.array([0.4, 0, 0.3, 0, 1, 0, 0]))
    >>> r.action[:3].round(3).tolist(), r.clipped
    ([0.05, 0.0, 0.0], ['translation_step'])
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simbridge.data.config import config
from simbridge.data.geometry import apply_action_delta, euler_xyz_to_quat, quat_to_rotvec
from simbridge.data.spec import ACTION_DIM, EE_POSE_DIM, GRIPPER_CLOSED, GRIPPER_OPEN, NUM_JOINTS

# --- Franka kinematics (public datasheet values) ------------------------------------------

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


def forward_kinematics(
    q: np.ndarray, tcp_offset_m: float = HAND_TCP_OFFSET_M
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Base -> TCP transform (4x4) and the 7 joint frames (for the Jacobian)."""
    T = np.eye(4)
    frames = []
    for i in range(NUM_JOINTS):
        T = T @ _dh(_DH_A[i], _DH_D[i], _DH_ALPHA[i], float(q[i]))
        frames.append(T.copy())
    T = T @ _dh(_DH_A[7], _DH_D[7], _DH_ALPHA[7], 0.0)
    c, s = math.cos(-np.pi / 4), math.sin(-np.pi / 4)
    hand = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, tcp_offset_m], [0, 0, 0, 1.0]])
    return T @ hand, frames


def geometric_jacobian(q: np.ndarray, tcp_offset_m: float = HAND_TCP_OFFSET_M) -> np.ndarray:
    """6x7 Jacobian (linear; angular) of the TCP in the base frame."""
    tcp, frames = forward_kinematics(q, tcp_offset_m)
    p = tcp[:3, 3]
    J = np.zeros((6, NUM_JOINTS))
    for i, F in enumerate(frames):
        z, o = F[:3, 2], F[:3, 3]
        J[:3, i] = np.cross(z, p - o)
        J[3:, i] = z
    return J


def predict_joint_delta(q: np.ndarray, twist: np.ndarray, damping: float = 0.02) -> np.ndarray:
    """Joint displacement for a small TCP displacement ``twist`` (dp, rotation vector): damped least squares."""
    J = geometric_jacobian(q)
    return J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), twist)


# --- Rotation helpers (quaternions wxyz, as in the contract) -------------------------------


# The contract's rotation conventions live in simbridge.data.geometry (shared with the simulator).
apply_delta = apply_action_delta


# --- Limits and filter ----------------------------------------------------------------------


@config
class SafetyLimits:
    """Limits enforced on every command. Positions in the robot base frame (m), angles in rad."""

    #: End-effector (TCP) workspace box: targets are clipped into it.
    workspace_low: tuple[float, float, float] = (0.20, -0.45, 0.01)
    workspace_high: tuple[float, float, float] = (0.80, 0.45, 0.65)
    control_rate_hz: float = 10.0
    #: Per control step: translation norm (m) and rotation per axis (rad).
    max_translation_m: float = 0.05
    max_rotation_rad: float = 0.15
    #: Velocity limits; with the control rate they can tighten the per-step limits.
    max_linear_speed_m_s: float = 0.5
    max_angular_speed_rad_s: float = 1.5
    #: Joint limits of this arm model, kept ``joint_margin_rad`` away from.
    arm: Literal["fr3", "panda"] = "fr3"
    joint_margin_rad: float = 0.1
    #: Fraction of the arm's maximum joint velocities a predicted step may use.
    joint_velocity_fraction: float = 0.5
    #: Refuse to move when no joint positions are given (otherwise joint checks are skipped).
    require_joint_positions: bool = False
    #: Gripper: opening range (m), grasp force (N) and finger speed (m/s) the driver may use.
    gripper_min_width_m: float = 0.0
    gripper_max_width_m: float = 0.08
    gripper_max_force_n: float = 40.0
    gripper_max_speed_m_s: float = 0.1
    #: Commands older than this (s) are dropped; stamps further than ``max_clock_skew_s`` in the future too.
    max_command_age_s: float = 0.25
    max_clock_skew_s: float = 0.05
    #: A delta above this multiple of the step limit is a bug (units, scaling), not a command: reject.
    reject_over_limit_factor: float = 5.0

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_low, float), np.asarray(self.workspace_high, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
            raise ValueError("workspace_low/workspace_high: three finite numbers (x, y, z) each")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_low: must be below workspace_high on every axis, got {lo} vs {hi}")
        positive = (
            "control_rate_hz",
            "max_translation_m",
            "max_rotation_rad",
            "max_linear_speed_m_s",
            "max_angular_speed_rad_s",
            "gripper_max_force_n",
            "gripper_max_speed_m_s",
            "max_command_age_s",
        )
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: a positive finite number, got {v}")
        if not (0 <= self.joint_margin_rad < 0.5):
            raise ValueError(f"joint_margin_rad: between 0 and 0.5 rad, got {self.joint_margin_rad}")
        if not (0 < self.joint_velocity_fraction <= 1):
            raise ValueError(f"joint_velocity_fraction: in (0, 1], got {self.joint_velocity_fraction}")
        if not (0 <= self.gripper_min_width_m < self.gripper_max_width_m <= 0.08 + 1e-9):
            raise ValueError(
                "gripper_min_width_m/gripper_max_width_m: 0 <= min < max <= 0.08 m (Franka Hand)"
            )
        if not (math.isfinite(self.max_clock_skew_s) and self.max_clock_skew_s >= 0):
            raise ValueError(f"max_clock_skew_s: a non-negative number, got {self.max_clock_skew_s}")
        if not (self.reject_over_limit_factor >= 1):
            raise ValueError(f"reject_over_limit_factor: at least 1, got {self.reject_over_limit_factor}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def step_translation_m(self) -> float:
        """Effective per-step translation limit (step limit and speed limit, whichever is tighter)."""
        return min(self.max_translation_m, self.max_linear_speed_m_s * self.period_s)

    @property
    def step_rotation_rad(self) -> float:
        return min(self.max_rotation_rad, self.max_angular_speed_rad_s * self.period_s)

    @property
    def joint_lower(self) -> np.ndarray:
        return JOINT_LIMITS[self.arm]["lower"] + self.joint_margin_rad

    @property
    def joint_upper(self) -> np.ndarray:
        return JOINT_LIMITS[self.arm]["upper"] - self.joint_margin_rad

    @property
    def joint_step_limit(self) -> np.ndarray:
        """Largest joint displacement per control step (rad)."""
        return JOINT_LIMITS[self.arm]["velocity"] * self.joint_velocity_fraction * self.period_s

    def gripper_width(self, command: float) -> float:
        """Map a contract gripper command (+1 open ... -1 closed) to a finger width inside the limits."""
        c = float(np.clip(command, GRIPPER_CLOSED, GRIPPER_OPEN)) if math.isfinite(command) else GRIPPER_OPEN
        frac = (c - GRIPPER_CLOSED) / (GRIPPER_OPEN - GRIPPER_CLOSED)
        return self.gripper_min_width_m + frac * (self.gripper_max_width_m - self.gripper_min_width_m)


@dataclass
class SafetyResult:
    """What the filter decided. When ``rejected``, ``action`` is all zeros and the arm must stop."""

    action: np.ndarray  # (7,) float32: the action actually to execute
    target_pose: np.ndarray | None  # (7,) xyz + wxyz the arm is sent to; None when the pose was invalid
    clipped: list[str] = field(default_factory=list)  # names of the limits that changed the action
    rejected: bool = False
    reason: str = ""  # why it was rejected (empty otherwise)
    #: Factor (0..1) the arm motion was scaled by for the joint checks.
    joint_scale: float = 1.0

    @property
    def stop(self) -> bool:
        """True when the arm must stop (the command was rejected)."""
        return self.rejected


class SafetyFilter:
    """Applies :class:`SafetyLimits` to contract actions. Stateless apart from counters."""

    def __init__(self, limits: SafetyLimits | None = None, clock=time.time) -> None:
        self.limits = limits or SafetyLimits()
        self._clock = clock
        self.num_filtered = 0
        self.num_clipped = 0
        self.num_rejected = 0

    def _reject(self, reason: str, ee_pose: np.ndarray | None) -> SafetyResult:
        self.num_rejected += 1
        return SafetyResult(
            action=np.zeros(ACTION_DIM, np.float32),
            target_pose=None if ee_pose is None else ee_pose.copy(),
            rejected=True,
            reason=reason,
            joint_scale=0.0,
        )

    def filter(
        self,
        action: np.ndarray,
        ee_pose: np.ndarray,
        joint_positions: np.ndarray | None = None,
        stamp: float | None = None,
        now: float | None = None,
    ) -> SafetyResult:
        """Return the safe version of ``action`` for a robot at ``ee_pose`` (xyz + wxyz).

        ``stamp`` is when the action was produced (the observation's time); with it, actions
        older than ``max_command_age_s`` at ``now`` (default: the filter's clock) are rejected.
        """
        self.num_filtered += 1
        lim = self.limits
        try:
            pose = np.array(ee_pose, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return self._reject(f"ee_pose is not numeric: {ee_pose!r}", None)
        if pose.shape != (EE_POSE_DIM,) or not np.all(np.isfinite(pose)):
            return self._reject(f"ee_pose must be 7 finite floats (xyz + quat wxyz), got {pose}", None)
        qn = float(np.linalg.norm(pose[3:]))
        if abs(qn - 1.0) > 0.05:
            return self._reject(f"ee_pose quaternion is not unit length (norm {qn:.3f})", None)
        pose[3:] /= qn

        try:
            a = np.array(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return self._reject(f"action is not numeric: {action!r}", pose)
        if a.shape != (ACTION_DIM,):
            return self._reject(
                f"action must have {ACTION_DIM} values [dx dy dz droll dpitch dyaw gripper], got {a.shape}",
                pose,
            )
        if not np.all(np.isfinite(a)):
            return self._reject(
                f"action has non-finite values at indices {np.flatnonzero(~np.isfinite(a)).tolist()}", pose
            )

        if stamp is not None:
            t_now = self._clock() if now is None else float(now)
            try:
                age = t_now - float(stamp)
            except (TypeError, ValueError):
                return self._reject(f"command timestamp is not a number: {stamp!r}", pose)
            if not math.isfinite(age):
                return self._reject(f"command timestamp is not finite: {stamp!r}", pose)
            if age > lim.max_command_age_s:
                return self._reject(
                    f"stale command: {age * 1e3:.0f} ms old > {lim.max_command_age_s * 1e3:.0f} ms", pose
                )
            if age < -lim.max_clock_skew_s:
                return self._reject(
                    f"command timestamp {-age * 1e3:.0f} ms in the future: clocks out of sync", pose
                )

        q = None
        if joint_positions is not None:
            try:
                q = np.array(joint_positions, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                return self._reject(f"joint_positions is not numeric: {joint_positions!r}", pose)
            if q.shape != (NUM_JOINTS,) or not np.all(np.isfinite(q)):
                return self._reject(f"joint_positions must be {NUM_JOINTS} finite floats, got {q}", pose)
            hard_lo, hard_hi = JOINT_LIMITS[lim.arm]["lower"], JOINT_LIMITS[lim.arm]["upper"]
            if np.any(q < hard_lo - 0.05) or np.any(q > hard_hi + 0.05):
                bad = np.flatnonzero((q < hard_lo - 0.05) | (q > hard_hi + 0.05)) + 1
                return self._reject(
                    f"joint positions beyond the {lim.arm} limits at joint(s) {bad.tolist()}: wrong arm model "
                    f"(SafetyLimits.arm) or bad state",
                    pose,
                )
        elif lim.require_joint_positions:
            return self._reject("no joint positions given and require_joint_positions is set", pose)

        step_t, step_r = lim.step_translation_m, lim.step_rotation_rad
        k = lim.reject_over_limit_factor
        with np.errstate(over="ignore"):  # 1e308 components: the norm is inf and rejected below
            t_norm = float(np.linalg.norm(a[:3]))
        if t_norm > k * step_t or np.any(np.abs(a[3:6]) > k * step_r):
            return self._reject(
                f"action {[float(f'{v:.4g}') for v in a[:6]]} exceeds {k:g}x the per-step limits "
                f"({step_t} m, {step_r} rad): check the policy's action units / normalisation",
                pose,
            )

        clipped: list[str] = []
        if t_norm > step_t:
            a[:3] *= step_t / t_norm
            clipped.append("translation_step")
        if np.any(np.abs(a[3:6]) > step_r):
            a[3:6] = np.clip(a[3:6], -step_r, step_r)
            clipped.append("rotation_step")

        # Workspace: the target may not leave the box; a TCP already outside may only move back in.
        lo = np.minimum(np.asarray(lim.workspace_low), pose[:3])
        hi = np.maximum(np.asarray(lim.workspace_high), pose[:3])
        target = np.clip(pose[:3] + a[:3], lo, hi)
        if np.any(np.abs(target - (pose[:3] + a[:3])) > 1e-12):
            a[:3] = target - pose[:3]
            clipped.append("workspace")

        scale = 1.0
        if q is not None:
            # Scaling Euler angles is not exactly linear in the joint step: re-check a few times,
            # and stop the arm if the step still does not fit (fail closed).
            for _ in range(4):
                s, why = self._joint_scale(q, a)
                if s >= 1.0:
                    break
                a[:6] *= s * (1.0 - 1e-9)
                scale *= s
                clipped.extend(w for w in why if w not in clipped)
            else:
                a[:6] = 0.0
                scale = 0.0

        if not (GRIPPER_CLOSED <= a[6] <= GRIPPER_OPEN):
            a[6] = np.clip(a[6], GRIPPER_CLOSED, GRIPPER_OPEN)
            clipped.append("gripper")

        out = a.astype(np.float32)
        if clipped:
            self.num_clipped += 1
        return SafetyResult(
            action=out,
            target_pose=apply_delta(pose, out.astype(np.float64)),
            clipped=clipped,
            joint_scale=scale,
        )

    def _joint_scale(self, q: np.ndarray, a: np.ndarray) -> tuple[float, list[str]]:
        """Largest factor in [0, 1] keeping the predicted joint step inside margins and velocity limits."""
        lim = self.limits
        twist = np.concatenate([a[:3], quat_to_rotvec(euler_xyz_to_quat(a[3:6]))])
        if not np.any(twist):
            return 1.0, []
        dq = predict_joint_delta(q, twist)
        scale, why = 1.0, []
        step = lim.joint_step_limit
        for i in range(NUM_JOINTS):
            s = 1.0
            if abs(dq[i]) > step[i]:
                s = step[i] / abs(dq[i])
                why.append(f"joint_velocity:j{i + 1}")
            lo, hi = lim.joint_lower[i], lim.joint_upper[i]
            if dq[i] > 0 and q[i] + dq[i] > hi:
                s = min(s, max(0.0, (hi - q[i]) / dq[i]))
                why.append(f"joint_limit:j{i + 1}")
            elif dq[i] < 0 and q[i] + dq[i] < lo:
                s = min(s, max(0.0, (lo - q[i]) / dq[i]))
                why.append(f"joint_limit:j{i + 1}")
            scale = min(scale, s)
        return scale, why
