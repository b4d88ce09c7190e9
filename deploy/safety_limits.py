"""The limits the safety filter enforces: :class:`SafetyLimits`, validated when built.

A typed ``@config`` dataclass (loaded from YAML with :func:`simbridge.data.config.load_config`, e.g.
the franka node's ``safety_limits_file``): the workspace and orientation boxes, per-step and velocity
limits at the control rate, joint margins and budget of the arm model, gripper limits and the
staleness bounds on command stamps. It also derives the effective per-step limits the filter
(:mod:`simbridge.deploy.safety`) uses. Defaults follow DROID / serl (``REFERENCE.md`` section 3).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from simbridge.data.config import config
from simbridge.data.spec import GRIPPER_CLOSED, GRIPPER_OPEN
from simbridge.deploy.kinematics import JOINT_LIMITS
from simbridge.deploy.safety_input import real_vector

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
        lo, hi = real_vector(self.workspace_low, 3, ""), real_vector(self.workspace_high, 3, "")
        if isinstance(lo, str) or isinstance(hi, str):
            raise ValueError("workspace_low/workspace_high: three finite numbers (x, y, z) each")
        if not np.all(lo < hi):
            raise ValueError(f"workspace_low: must be below workspace_high on every axis, got {lo} vs {hi}")
        nominal = real_vector(self.orientation_nominal_wxyz, 4, "")
        if isinstance(nominal, str) or abs(float(np.linalg.norm(nominal)) - 1.0) > 1e-3:
            raise ValueError("orientation_nominal_wxyz: a unit quaternion (w, x, y, z)")
        olo, ohi = real_vector(self.orientation_low, 3, ""), real_vector(self.orientation_high, 3, "")
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
