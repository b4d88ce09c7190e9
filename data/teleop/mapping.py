"""Device state -> contract action: deadzones, speed scaling, gripper latch, safety filter.

The same for every device, so a SpaceMouse and a keyboard feel alike and both go through
:class:`simbridge.deploy.safety.SafetyFilter` before anything moves.
"""

from __future__ import annotations

import numpy as np

from simbridge.data.config import config
from simbridge.data.spec import ACTION_DIM, GRIPPER_OPEN, ActionSpec
from simbridge.data.teleop.devices import DeviceState


@config
class TeleopMapping:
    """How device deflection becomes an end-effector delta per control step."""

    #: Fraction of full deflection ignored around zero (per axis); the rest is rescaled to 0..1.
    deadzone: float = 0.1
    #: End-effector motion per control step at full deflection (times speed_scale).
    translation_step_m: float = 0.02
    rotation_step_rad: float = 0.08
    #: Runtime speed multiplier; the speed_up / speed_down buttons change it by speed_factor.
    speed_scale: float = 1.0
    speed_factor: float = 1.5
    min_speed_scale: float = 0.1
    max_speed_scale: float = 2.5
    #: Multiplied onto (vx, vy, vz, wx, wy, wz): flip or disable device axes to match the base frame.
    axis_signs: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0 <= self.deadzone < 1:
            raise ValueError(f"deadzone: in [0, 1), got {self.deadzone}")
        for name in ("translation_step_m", "rotation_step_rad", "speed_scale", "speed_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: a positive number, got {getattr(self, name)}")
        if not 0 < self.min_speed_scale <= self.speed_scale <= self.max_speed_scale:
            raise ValueError("speed_scale: between min_speed_scale and max_speed_scale")
        if len(self.axis_signs) != 6:
            raise ValueError("axis_signs: six numbers (vx, vy, vz, wx, wy, wz)")


def apply_deadzone(twist: np.ndarray, deadzone: float) -> np.ndarray:
    """Zero inside the deadzone, then rescale so the output still spans [-1, 1] continuously."""
    t = np.clip(np.asarray(twist, np.float32), -1, 1)
    mag = np.maximum(np.abs(t) - deadzone, 0.0) / (1.0 - deadzone)
    return (np.sign(t) * mag).astype(np.float32)


class ActionMapper:
    """Stateful mapping (gripper latch, speed scale) from device states to 7-D contract actions."""

    def __init__(self, mapping: TeleopMapping | None = None, action_spec: ActionSpec | None = None) -> None:
        self.mapping = mapping or TeleopMapping()
        self.action_spec = action_spec or ActionSpec()
        self.reset()

    def reset(self, gripper: float = GRIPPER_OPEN) -> None:
        self.gripper = float(gripper)
        self.speed_scale = self.mapping.speed_scale

    def is_active(self, state: DeviceState) -> bool:
        """The operator is moving the device (outside the deadzone) or commanding the gripper."""
        moving = bool(np.any(apply_deadzone(state.twist, self.mapping.deadzone) != 0))
        return moving or (state.gripper is not None and state.gripper != self.gripper)

    def __call__(self, state: DeviceState) -> np.ndarray:
        m = self.mapping
        if "speed_up" in state.buttons:
            self.speed_scale = min(self.speed_scale * m.speed_factor, m.max_speed_scale)
        if "speed_down" in state.buttons:
            self.speed_scale = max(self.speed_scale / m.speed_factor, m.min_speed_scale)
        if state.gripper is not None:
            self.gripper = float(np.clip(state.gripper, -1.0, 1.0))
        twist = apply_deadzone(state.twist, m.deadzone) * np.asarray(m.axis_signs, np.float32)
        action = np.zeros(ACTION_DIM, np.float32)
        action[:3] = twist[:3] * m.translation_step_m * self.speed_scale
        action[3:6] = twist[3:] * m.rotation_step_rad * self.speed_scale
        action[6] = self.gripper
        # Contract bounds first (the safety filter downstream may be tighter).
        return np.clip(action, self.action_spec.low, self.action_spec.high)
