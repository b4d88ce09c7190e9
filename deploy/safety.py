"""Safety filter between a policy's action and the robot: clip what is unsafe, reject what is wrong.

Every action that reaches the arm passes :meth:`SafetyFilter.filter` first. Plain numpy (no ROS,
franky or torch), so it runs and is tested anywhere. This module owns the stages and their order;
the arm model is in :mod:`simbridge.deploy.kinematics`, the limits (:class:`SafetyLimits`,
importable from here) in :mod:`simbridge.deploy.safety_limits` and the strict number checks in
:mod:`simbridge.deploy.safety_input`. It takes a contract action (``[dx, dy, dz, droll, dpitch,
dyaw, gripper]``, :mod:`simbridge.data.spec`) and the current end-effector pose and returns a
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
    >>> r.action[:3].astype(float).round(3).tolist(), r.clipped
    ([0.05, 0.0, 0.0], ['translation_step'])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbridge.data.geometry import apply_action_delta, quat_to_matrix
from simbridge.data.spec import ACTION_DIM, EE_POSE_DIM, GRIPPER_CLOSED, GRIPPER_OPEN, NUM_JOINTS
from simbridge.deploy.kinematics import (
    JOINT_LIMITS,
    OrientationBox,
    euler_xyz_to_rotvec,
    follow_twist_path,
    matrix_to_euler_xyz,
    rotvec_to_matrix,
)
from simbridge.deploy.safety_input import real_scalar, real_vector
from simbridge.deploy.safety_limits import SafetyLimits

__all__ = ["SafetyFilter", "SafetyLimits", "SafetyResult", "apply_delta"]

# The contract's rotation conventions live in simbridge.data.geometry (shared with the simulator).
apply_delta = apply_action_delta

#: Clipped steps are scaled to this fraction of their limit, so the float32 action the robot gets
#: stays within the limit after rounding (float32 is exact to ~6e-8 relative).
_F32_HEADROOM = 1.0 - 2.5e-7
#: Joint substep of the path check (rad), and the margin kept for its integration error (measured
#: <= 0.5 mrad against a 200-substep Newton-converged reference over the whole FR3 range).
_JOINT_SUBSTEP_RAD = 0.05
_PATH_GUARD_RAD = 0.002


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
        pose = real_vector(ee_pose, EE_POSE_DIM, "ee_pose", "(xyz + quat wxyz)")
        if isinstance(pose, str):
            return self._reject(pose, None)
        qn = float(np.linalg.norm(pose[3:]))
        if abs(qn - 1.0) > 0.05:
            return self._reject(f"ee_pose quaternion is not unit length (norm {qn:.3f})", None)
        pose[3:] /= qn
        a = real_vector(action, ACTION_DIM, "action", "[dx dy dz droll dpitch dyaw gripper]")
        if isinstance(a, str):
            return self._reject(a, pose)
        q = None
        if joint_positions is not None:
            q = real_vector(joint_positions, NUM_JOINTS, "joint_positions")
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
        t_now = real_scalar(self._clock() if now is None else now)
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
            t = real_scalar(value)
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
