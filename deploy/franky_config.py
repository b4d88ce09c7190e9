"""How to reach and drive a Franka arm through franky: :class:`FrankyRobotConfig`, validated at load."""

from __future__ import annotations

from dataclasses import field

from simbridge.data.config import config
from simbridge.deploy.robot import HOME_JOINTS
from simbridge.deploy.safety import SafetyLimits


@config
class FrankyRobotConfig:
    """How to reach and drive a Franka arm through franky."""

    #: Robot (FCI) IP address; the simulated twin uses a 127.x.y.z loopback address.
    host: str = "172.16.0.2"
    #: True for franky-sim: franky's RealtimeConfig.Ignore (no realtime kernel needed).
    sim: bool = False
    #: Scales franky's velocity/acceleration/jerk limits (franky's advice: 0.05-0.2 to start).
    relative_dynamics_factor: float = 0.15
    #: Collision reflex thresholds: joint torques (Nm, 7) and Cartesian forces/torques (N, Nm, 6).
    torque_thresholds: tuple[float, ...] = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
    force_thresholds: tuple[float, ...] = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
    #: Stop the arm when no command arrived for this long (s).
    watchdog_timeout_s: float = 0.5
    use_gripper: bool = True
    gripper_speed_m_s: float = 0.05
    gripper_force_n: float = 20.0
    #: Gripper commands within +-deadband keep the previous open/closed state (avoids chattering).
    gripper_deadband: float = 0.2
    home_joints: tuple[float, ...] = HOME_JOINTS
    safety: SafetyLimits = field(default_factory=SafetyLimits)

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("host: the robot's IP address, e.g. 172.16.0.2 (or the twin's 127.0.0.x)")
        if not (0 < self.relative_dynamics_factor <= 1):
            raise ValueError(f"relative_dynamics_factor: in (0, 1], got {self.relative_dynamics_factor}")
        if len(self.torque_thresholds) != 7 or len(self.force_thresholds) != 6:
            raise ValueError("torque_thresholds/force_thresholds: 7 joint torques and 6 Cartesian values")
        if any(not (v > 0) for v in (*self.torque_thresholds, *self.force_thresholds)):
            raise ValueError("torque_thresholds/force_thresholds: positive values")
        if not (self.watchdog_timeout_s > 0):
            raise ValueError(f"watchdog_timeout_s: positive seconds, got {self.watchdog_timeout_s}")
        if len(self.home_joints) != 7:
            raise ValueError("home_joints: 7 joint angles (rad)")
        if not (0 <= self.gripper_deadband < 1):
            raise ValueError(f"gripper_deadband: in [0, 1), got {self.gripper_deadband}")
        if not (self.gripper_speed_m_s > 0 and self.gripper_force_n > 0):
            raise ValueError("gripper_speed_m_s/gripper_force_n: positive values")
