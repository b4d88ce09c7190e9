"""Safety filter between a policy's action and the robot: clip what is unsafe, reject what is wrong.

Every action that reaches the arm passes :meth:`SafetyFilter.filter` first. Plain numpy (no ROS,
franky or torch), so it runs and is tested anywhere; the arm model is in
:mod:`simbridge.deploy.kinematics`. It takes a contract action (``[dx, dy, dz, droll, dpitch, dyaw,
gripper]``, :mod:`simbridge.data.spec`) and the current end-effector pose and returns a
:class:`SafetyResult`: the action to execute, the target pose, what was changed. It never raises.

* **rejected** (zero motion + stop flag, fails closed): an action that is not exactly 7 finite real
  numbers (strings, bools, complex, masked or object arrays, (7, 1) shapes, ints beyond float
  range), an invalid pose or joint vector, a stale or future stamp, a delta far above the step
  limits (a unit bug such as millimetres for metres is not to be clipped and run).
* **clipped** (executed, named in ``.clipped``): translation norm and *total* rotation angle above
  the per-step limits (step and velocity limits at the control rate; scaled as a whole, so the
  direction is kept), a target outside the workspace box or the orientation box (roll/pitch/yaw
  about a nominal, e.g. top-down, orientation), motion whose exact joint path (followed in IK
  substeps) would enter a joint-limit margin, exceed the per-step joint budget or drive into a
  singularity, a gripper command outside [-1, 1].

``stamp`` is the *observation* time (the oldest image/state behind the command) and
``publish_stamp`` when the command was published: ``max_observation_age_s`` and
``max_command_age_s`` bound their ages. Defaults follow DROID / serl (``REFERENCE.md`` section 3):
0.05 m and 0.15 rad per 10 Hz step, a box over the table, 0.1 rad joint-limit margins.

    >>> f = SafetyFilter(SafetyLimits())
    >>> r = f.filter(np.array([0.2, 0, 0, 0, 0, 0, 1.0]), ee_pose=np.array([0.4, 0, 0.3, 0, 1, 0, 0]))
    >>> r.action[:3].round(3).tolist(), r.clipped
    ([0.05, 0.0, 0.0], ['translation_step'])
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from simbridge.data.config import config
from simbridge.data.geometry import apply_action_delta, quat_to_matrix
from simbridge.data.spec import ACTION_DIM, EE_POSE_DIM, GRIPPER_CLOSED, GRIPPER_OPEN, NUM_JOINTS
from simbridge.deploy.kinematics import (
    JOINT_LIMITS,
    OrientationBox,
    euler_xyz_to_rotvec,
    follow_twist_path,
    forward_kinematics,
    geometric_jacobian,
    matrix_to_euler_xyz,
    predict_joint_delta,
    rotvec_to_matrix,
)

# The kinematics moved to simbridge.deploy.kinematics; older callers still import them from here.
__all__ = ["JOINT_LIMITS", "SafetyFilter", "SafetyLimits", "SafetyResult", "apply_delta", "forward_kinematics",
           "geometric_jacobian", "predict_joint_delta"]  # fmt: skip

# The contract's rotation conventions live in simbridge.data.geometry (shared with the simulator).
apply_delta = apply_action_delta

#: Clipped steps are scaled to this fraction of their limit, so the float32 action the robot gets
#: stays within the limit after rounding (float32 is exact to ~6e-8 relative).
_F32_HEADROOM = 1.0 - 2.5e-7
#: Joint substep of the path check (rad), and the margin kept for its integration error (measured
#: <= 0.5 mrad against a 200-substep Newton-converged reference over the whole FR3 range).
_JOINT_SUBSTEP_RAD = 0.05
_PATH_GUARD_RAD = 0.002
_POSITIVE = ("control_rate_hz", "max_translation_m", "max_rotation_rad", "max_linear_speed_m_s",
             "max_angular_speed_rad_s", "gripper_max_force_n", "gripper_max_speed_m_s", "max_command_age_s",
             "max_observation_age_s")  # fmt: skip


@config
class SafetyLimits:
    """Limits enforced on every command. Positions in the robot base frame (m), angles in rad."""

    #: End-effector (TCP) workspace box: targets are clipped into it.
    workspace_low: tuple[float, float, float] = (0.20, -0.45, 0.01)
    workspace_high: tuple[float, float, float] = (0.80, 0.45, 0.65)
    #: Orientation box: the target's roll/pitch/yaw (extrinsic XYZ about the base axes, like an
    #: action's rotation) relative to ``orientation_nominal_wxyz`` (default: TCP pointing down, the
    #: franky home). Yaw spans the full circle by default (joint 7's limits bound it); narrow it per
    #: task like serl's ``ABS_POSE_LIMIT``.
    orientation_nominal_wxyz: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)
    orientation_low: tuple[float, float, float] = (-0.8, -0.8, -math.pi)
    orientation_high: tuple[float, float, float] = (0.8, 0.8, math.pi)
    control_rate_hz: float = 10.0
    #: Per control step: translation norm (m) and total rotation angle (axis-angle norm, rad).
    max_translation_m: float = 0.05
    max_rotation_rad: float = 0.15
    #: Velocity limits; with the control rate they can tighten the per-step limits.
    max_linear_speed_m_s: float = 0.5
    max_angular_speed_rad_s: float = 1.5
    #: Joint limits of this arm model, kept ``joint_margin_rad`` away from.
    arm: Literal["fr3", "panda"] = "fr3"
    joint_margin_rad: float = 0.1
    #: Fraction of the arm's maximum joint velocities a step's joint motion may use.
    joint_velocity_fraction: float = 0.5
    #: Motion that lowers the Jacobian's smallest singular value below this is stopped there
    #: (driving into a singularity); moving away from one is always allowed. 0 disables.
    min_singular_value: float = 0.02
    #: Refuse to move when no joint positions are given (otherwise joint checks are skipped).
    require_joint_positions: bool = False
    #: Gripper: opening range (m), grasp force (N) and finger speed (m/s) the driver may use.
    gripper_min_width_m: float = 0.0
    gripper_max_width_m: float = 0.08
    gripper_max_force_n: float = 40.0
    gripper_max_speed_m_s: float = 0.1
    #: Commands published longer ago than this (s) are dropped (transport, queueing).
    max_command_age_s: float = 0.25
    #: Commands computed from an observation older than this (s) are dropped: image age at inference
    #: (the policy node allows 0.3 s) + inference + transport. The bound used is never below
    #: max_command_age_s. With action chunks, stamp action i of a chunk with the observation time +
    #: i control periods (the time it was planned for), or raise this to cover the chunk.
    max_observation_age_s: float = 0.6
    #: Stamps further than this in the future are dropped (clocks out of sync).
    max_clock_skew_s: float = 0.05
    #: A delta above this multiple of the step limit is a bug (units, scaling), not a command: reject.
    reject_over_limit_factor: float = 5.0

    def __post_init__(self) -> None:
        lo, hi = _real_vector(self.workspace_low, 3, ""), _real_vector(self.workspace_high, 3, "")
        if isinstance(lo, str) or isinstance(hi, str):
            raise ValueError("workspace_low/workspace_high: three finite numbers (x, y, z) each")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_low: must be below workspace_high on every axis, got {lo} vs {hi}")
        nominal = _real_vector(self.orientation_nominal_wxyz, 4, "")
        if isinstance(nominal, str) or abs(float(np.linalg.norm(nominal)) - 1.0) > 1e-3:
            raise ValueError("orientation_nominal_wxyz: a unit quaternion (w, x, y, z)")
        olo, ohi = _real_vector(self.orientation_low, 3, ""), _real_vector(self.orientation_high, 3, "")
        if isinstance(olo, str) or isinstance(ohi, str) or not np.all((olo <= 0) & (ohi >= 0)):
            raise ValueError("orientation_low/orientation_high: (roll, pitch, yaw) with low <= 0 <= high")
        if (
            np.any(olo < -math.pi)
            or np.any(ohi > math.pi)
            or not (-math.pi / 2 < olo[1] and ohi[1] < math.pi / 2)
        ):
            raise ValueError("orientation_low/orientation_high: within [-pi, pi], pitch within (-pi/2, pi/2)")
        for name in _POSITIVE:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: a positive finite number, got {v}")
        if self.max_rotation_rad > 1.0:  # Euler steps stay far from gimbal lock (pitch < pi/2)
            raise ValueError(f"max_rotation_rad: at most 1 rad per step, got {self.max_rotation_rad}")
        if not (0 <= self.joint_margin_rad < 0.5):
            raise ValueError(f"joint_margin_rad: between 0 and 0.5 rad, got {self.joint_margin_rad}")
        if not (0 < self.joint_velocity_fraction <= 1):
            raise ValueError(f"joint_velocity_fraction: in (0, 1], got {self.joint_velocity_fraction}")
        if not (0 <= self.min_singular_value < 0.2):
            raise ValueError(f"min_singular_value: in [0, 0.2), got {self.min_singular_value}")
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
        """Effective per-step limit on the total rotation angle."""
        return min(self.max_rotation_rad, self.max_angular_speed_rad_s * self.period_s)

    @property
    def observation_age_limit_s(self) -> float:
        """An observation is never younger than the command computed from it."""
        return max(self.max_observation_age_s, self.max_command_age_s)

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


# --- Input validation -------------------------------------------------------------------------

_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes"}


def _real_vector(value: Any, n: int, what: str, names: str = "") -> np.ndarray | str:
    """A float64 copy of ``value`` if it is exactly ``n`` finite real numbers, else why it is not.

    Strict on purpose: a (7, 1) array, a numeric string, a bool or a masked entry is a bug upstream
    that must stop the arm, not something to reshape, parse or guess a value for.
    """
    if type(value) is np.ndarray and value.shape == (n,) and value.dtype.kind in "fiu":  # the usual case
        with np.errstate(over="ignore"):  # float128 beyond float64 range -> inf, refused below
            arr = value.astype(np.float64)
        if not np.isfinite(arr).all():
            return f"{what} has non-finite values at indices {np.flatnonzero(~np.isfinite(arr)).tolist()}"
        return arr
    if isinstance(value, np.ma.MaskedArray):
        return f"{what} is a masked array: pass plain numbers (a masked entry has no value to execute)"
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            return f"{what} must have {n} values {names}, got {len(value)}".replace("  ", " ")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value):
            return f"{what} is not numeric: every entry must be a real number, got {value!r:.120}"
        try:
            arr = np.array(value, dtype=np.float64)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. an int beyond float range
            return f"{what} is not numeric: {type(exc).__name__}: {exc}"
    elif isinstance(value, np.ndarray) or (
        hasattr(value, "__array__") and not isinstance(value, (str, bytes))
    ):
        try:
            arr = np.asarray(value)
        except Exception as exc:  # a foreign array type that cannot export itself
            return f"{what} is not numeric: {type(exc).__name__}: {exc}"
        if arr.dtype.kind not in "fiu":
            return f"{what} is not numeric: an array of {_KIND_NAMES.get(arr.dtype.kind, arr.dtype.name)}"
        if arr.shape != (n,):
            return f"{what} must have {n} values {names}, got shape {arr.shape}".replace("  ", " ")
        with np.errstate(over="ignore"):  # float128 beyond float64 range -> inf, refused below
            arr = arr.astype(np.float64)
    else:
        return f"{what} is not numeric: {type(value).__name__} {value!r:.80}"
    if not np.all(np.isfinite(arr)):
        return f"{what} has non-finite values at indices {np.flatnonzero(~np.isfinite(arr)).tolist()}"
    return arr


def _real_scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool or a string), else None."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiu":
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return None


# --- The filter ---------------------------------------------------------------------------------


@dataclass
class _Step:
    """The command as it passes the stages: translation and rotation vector in the base frame."""

    pose: np.ndarray  # current TCP pose, xyz + unit wxyz
    R: np.ndarray  # its rotation matrix
    q: np.ndarray | None  # current joints, when given
    dp: np.ndarray  # translation (m)
    w: np.ndarray  # rotation vector (rad) of the action's rotation (applied on the left, base frame)
    euler: np.ndarray | None  # the action's own Euler angles while ``w`` is unchanged (output bit-exact)
    gripper: float
    clipped: list[str] = field(default_factory=list)
    joint_scale: float = 1.0

    def scale_motion(self, f: float) -> None:
        self.dp, self.w, self.euler = self.dp * f, self.w * f, None


class SafetyFilter:
    """Applies :class:`SafetyLimits` to contract actions. Stateless apart from counters."""

    def __init__(self, limits: SafetyLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or SafetyLimits()
        self._clock = clock
        self.num_filtered = 0
        self.num_clipped = 0
        self.num_rejected = 0
        lim = self.limits
        # Joint box parts: margins (less the path check's integration guard), per-step budget, sanity.
        self._joint_lo, self._joint_hi = lim.joint_lower + _PATH_GUARD_RAD, lim.joint_upper - _PATH_GUARD_RAD
        self._joint_budget = lim.joint_step_limit
        self._joint_sane = (JOINT_LIMITS[lim.arm]["lower"] - 0.05, JOINT_LIMITS[lim.arm]["upper"] + 0.05)
        self._ws_low, self._ws_high = (
            np.asarray(lim.workspace_low, float),
            np.asarray(lim.workspace_high, float),
        )
        self._orientation = OrientationBox(
            lim.orientation_nominal_wxyz, lim.orientation_low, lim.orientation_high
        )

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
        action: Any,
        ee_pose: Any,
        joint_positions: Any = None,
        stamp: float | None = None,
        now: float | None = None,
        publish_stamp: float | None = None,
    ) -> SafetyResult:
        """Return the safe version of ``action`` for a robot at ``ee_pose`` (xyz + wxyz).

        ``stamp`` is the observation time the action was computed from (its oldest image/state) and
        ``publish_stamp`` when the command was published; ages are taken at ``now`` (default: the
        filter's clock). Without ``publish_stamp`` the observation age must also meet the tighter
        ``max_command_age_s`` (a command is published after its observation), as before.

        Stages, in order: validate -> staleness -> translation step -> rotation step -> workspace box
        -> orientation box -> joint-space check -> gripper. Never raises.
        """
        self.num_filtered += 1
        try:
            step = self._validate(action, ee_pose, joint_positions)
            if isinstance(step, SafetyResult):
                return step
            why = self._check_staleness(stamp, publish_stamp, now)
            why = why or self._limit_translation_step(step)
            why = why or self._limit_rotation_step(step)
            if why:
                return self._reject(why, step.pose)
            self._clip_to_workspace(step)
            self._clip_to_orientation_box(step)
            self._check_joint_motion(step)
            self._limit_gripper(step)
            return self._result(step)
        except Exception as exc:  # a bug in here must stop the arm, not crash the driver loop
            return self._reject(f"safety filter internal error ({type(exc).__name__}: {exc}): stopping", None)

    # --- stages, in the order they run --------------------------------------------------------

    def _validate(self, action: Any, ee_pose: Any, joint_positions: Any) -> _Step | SafetyResult:
        lim = self.limits
        pose = _real_vector(ee_pose, EE_POSE_DIM, "ee_pose", "(xyz + quat wxyz)")
        if isinstance(pose, str):
            return self._reject(pose, None)
        qn = float(np.linalg.norm(pose[3:]))
        if abs(qn - 1.0) > 0.05:
            return self._reject(f"ee_pose quaternion is not unit length (norm {qn:.3f})", None)
        pose[3:] /= qn
        a = _real_vector(action, ACTION_DIM, "action", "[dx dy dz droll dpitch dyaw gripper]")
        if isinstance(a, str):
            return self._reject(a, pose)
        q = None
        if joint_positions is not None:
            q = _real_vector(joint_positions, NUM_JOINTS, "joint_positions")
            if isinstance(q, str):
                return self._reject(q, pose)
            beyond = (q < self._joint_sane[0]) | (q > self._joint_sane[1])
            if beyond.any():
                bad = np.flatnonzero(beyond) + 1
                return self._reject(
                    f"joint positions beyond the {lim.arm} limits at joint(s) {bad.tolist()}: wrong arm model "
                    f"(SafetyLimits.arm) or bad state",
                    pose,
                )
        elif lim.require_joint_positions:
            return self._reject("no joint positions given and require_joint_positions is set", pose)
        return _Step(pose, quat_to_matrix(pose[3:]), q, a[:3].copy(), np.zeros(3), a[3:6].copy(), float(a[6]))

    def _check_staleness(self, stamp: Any, publish_stamp: Any, now: Any) -> str:
        if stamp is None and publish_stamp is None:
            return ""
        lim = self.limits
        t_now = _real_scalar(self._clock() if now is None else now)
        if t_now is None or not math.isfinite(t_now):
            return f"clock time is not a finite number: {now!r}"
        obs_limit = lim.observation_age_limit_s if publish_stamp is not None else lim.max_command_age_s
        times = {}
        for name, value, limit in (
            ("observation", stamp, obs_limit),
            ("publish", publish_stamp, lim.max_command_age_s),
        ):
            if value is None:
                continue
            t = _real_scalar(value)
            if t is None:
                return f"command timestamp ({name}) is not a number: {value!r:.80}"
            age = t_now - t
            if not math.isfinite(age):
                return f"command timestamp ({name}) is not finite: {value!r}"
            if age > limit:
                return f"stale command: {name} time {age * 1e3:.0f} ms old > {limit * 1e3:.0f} ms"
            if age < -lim.max_clock_skew_s:
                return f"command timestamp ({name}) {-age * 1e3:.0f} ms in the future: clocks out of sync"
            times[name] = t
        if len(times) == 2 and times["publish"] < times["observation"] - lim.max_clock_skew_s:
            return "command published before the observation it was computed from: stamps swapped?"
        return ""

    def _limit_translation_step(self, st: _Step) -> str:
        limit = self.limits.step_translation_m
        norm = math.hypot(*st.dp)  # no overflow: 1e308 components give a finite or inf norm, rejected below
        if norm > self.limits.reject_over_limit_factor * limit:
            return self._units_message(np.concatenate([st.dp, st.euler]))
        if norm > limit * _F32_HEADROOM:  # within the headroom it is rounding, not a clip
            st.dp *= limit * _F32_HEADROOM / norm
            if norm > limit:
                st.clipped.append("translation_step")
        return ""

    def _limit_rotation_step(self, st: _Step) -> str:
        """Limit the total angle (axis-angle norm), scaling the rotation vector so the axis is kept."""
        limit = self.limits.step_rotation_rad
        too_big = self.limits.reject_over_limit_factor * limit
        if np.any(np.abs(st.euler) > too_big):  # before any trigonometry: 1e300 rad has no meaningful sine
            return self._units_message(np.concatenate([st.dp, st.euler]))
        st.w = euler_xyz_to_rotvec(st.euler)
        angle = math.sqrt(float(st.w @ st.w))
        if angle > too_big:
            return self._units_message(np.concatenate([st.dp, st.euler]))
        if angle > limit * _F32_HEADROOM:
            st.w, st.euler = st.w * (limit * _F32_HEADROOM / angle), None
            if angle > limit:
                st.clipped.append("rotation_step")
        return ""

    def _clip_to_workspace(self, st: _Step) -> None:
        """The target may not leave the box; a TCP already outside may only move back in."""
        pos, wanted = st.pose[:3], st.pose[:3] + st.dp
        target = np.minimum(np.maximum(wanted, np.minimum(self._ws_low, pos)), np.maximum(self._ws_high, pos))
        if (np.abs(target - wanted) > 1e-12).any():
            st.dp = target - pos
            st.clipped.append("workspace")

    def _clip_to_orientation_box(self, st: _Step) -> None:
        """Roll/pitch/yaw about the nominal orientation, per axis; outside the box only back in."""
        w = self._orientation.clip_step(st.w, st.R)
        if w is not None:
            st.w, st.euler = w, None
            st.clipped.append("orientation")

    def _check_joint_motion(self, st: _Step) -> None:
        """Follow the exact joint path of the step; keep the prefix that stays inside the joint box.

        The box per joint: the limit margins (a joint already in its margin may not go deeper) and
        the per-step joint budget around the current position, at every substep of the path.
        """
        if st.q is None or not (np.any(st.dp) or np.any(st.w)):
            return
        q, budget = st.q, self._joint_budget
        margin_lo, margin_hi = np.minimum(self._joint_lo, q), np.maximum(self._joint_hi, q)
        path = follow_twist_path(
            q,
            np.concatenate([st.dp, st.w]),
            np.maximum(margin_lo, q - budget),
            np.minimum(margin_hi, q + budget),
            max_joint_substep=_JOINT_SUBSTEP_RAD,
            min_singular_value=self.limits.min_singular_value,
        )
        if path.fraction >= 1.0:
            return
        f = max(0.0, path.fraction * (1.0 - 1e-9))
        if f > 0.0:  # a shorter rotation may bend out of the (Euler-angle) orientation box
            f *= self._orientation.fraction_inside(f * st.w, st.R)
        st.scale_motion(f)
        st.joint_scale = f
        if path.stop == "joint":
            j = path.joint
            at_margin = path.bound in (margin_lo[j], margin_hi[j])
            st.clipped.append(f"{'joint_limit' if at_margin else 'joint_velocity'}:j{j + 1}")
        else:
            st.clipped.append("singularity" if path.stop in ("singularity", "tracking") else "joint_path")

    def _limit_gripper(self, st: _Step) -> None:
        if not (GRIPPER_CLOSED <= st.gripper <= GRIPPER_OPEN):
            st.gripper = float(np.clip(st.gripper, GRIPPER_CLOSED, GRIPPER_OPEN))
            st.clipped.append("gripper")

    # --- helpers ------------------------------------------------------------------------------

    def _result(self, st: _Step) -> SafetyResult:
        euler = st.euler if st.euler is not None else matrix_to_euler_xyz(rotvec_to_matrix(st.w))
        out = np.array([*st.dp, *euler, st.gripper], dtype=np.float32)
        if st.clipped:
            self.num_clipped += 1
        return SafetyResult(
            action=out,
            target_pose=apply_delta(st.pose, out.astype(np.float64)),
            clipped=st.clipped,
            joint_scale=st.joint_scale,
        )

    def _units_message(self, a: np.ndarray) -> str:
        lim = self.limits
        return (
            f"action {[float(f'{v:.4g}') for v in a[:6]]} exceeds {lim.reject_over_limit_factor:g}x the per-step "
            f"limits ({lim.step_translation_m} m, {lim.step_rotation_rad} rad): check the policy's action units "
            f"/ normalisation"
        )
