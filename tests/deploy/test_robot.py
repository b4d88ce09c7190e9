"""FrankyRobot against the embedded franky-sim twin: real franky, real TCP/UDP, real MuJoCo arm.

Policy-like deltas -> safety filter -> franky moves the arm and the new state is observed; the
e-stop stops motion and latches; the watchdog stops the arm on stale commands; reflex and
communication faults (which franky-sim cannot raise) come from FaultInjector at the franky boundary.
"""

from __future__ import annotations

import threading

import franky
import numpy as np
import pytest

from simbridge.data.config import ConfigError, load_config
from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.franky_robot import FrankyRobot
from simbridge.deploy.kinematics import forward_kinematics
from simbridge.deploy.robot import RobotError, RobotFault
from simbridge.deploy.testing import FaultInjector
from simbridge.deploy.twin import TwinScene, TwinSim

pytestmark = [pytest.mark.robot, pytest.mark.integration]

PERIOD = 0.1  # 10 Hz, the contract's control rate


@pytest.fixture(scope="module")
def twin():
    with TwinSim(seed=0) as sim:
        yield sim


def make_robot(twin: TwinSim, faults: FaultInjector | None = None, **overrides) -> FrankyRobot:
    """A driver on the twin's simulated clock (the simulator may run slower than real time here)."""
    cfg = FrankyRobotConfig(host=twin.hostname, sim=True, **overrides)
    if faults is None:
        return FrankyRobot(cfg, clock=twin.clock)
    factories = {"robot_factory": faults.robot_factory(), "gripper_factory": faults.gripper_factory()}
    return FrankyRobot(cfg, clock=twin.clock, **factories)


@pytest.fixture
def robot(twin):
    with make_robot(twin) as r:
        r.home()
        yield r


def settle(twin: TwinSim, robot: FrankyRobot, seconds: float = 0.4) -> np.ndarray:
    """Let ``seconds`` of simulated time pass; return the end-effector pose."""
    twin.wait(seconds)
    return robot.get_observation()["ee_pose"]


def test_policy_deltas_move_the_arm_and_the_new_state_is_observed(robot, twin):
    start = robot.get_observation()
    np.testing.assert_allclose(start["ee_pose"][:3], [0.307, 0.0, 0.487], atol=0.005)
    delta = np.array([0.02, 0.01, -0.02, 0.0, 0.0, 0.05, 1.0], np.float32)
    for _ in range(6):
        sent = robot.send_action(delta)
        np.testing.assert_array_equal(sent, delta)  # inside every limit: sent unchanged
        twin.wait(PERIOD)
    end = robot.get_observation()
    moved = end["ee_pose"][:3] - start["ee_pose"][:3]
    assert 0.03 < moved[0] < 0.125 and 0.015 < moved[1] < 0.065 and -0.125 < moved[2] < -0.03, moved
    # The arm yawed about the base z axis (positive dyaw), and the joints moved accordingly.
    assert not np.allclose(end["joint_positions"], start["joint_positions"], atol=1e-3)
    assert robot.watchdog_trips == 0 and robot.status()["num_sent"] == 6  # 10 Hz commands keep it fed
    settle(twin, robot, 0.5)
    at_rest = robot.get_observation()  # at rest, measured joints and pose agree with our FR3 kinematics
    tcp, _ = forward_kinematics(at_rest["joint_positions"])
    np.testing.assert_allclose(tcp[:3, 3], at_rest["ee_pose"][:3], atol=2e-3)


def test_oversized_action_is_clipped_and_the_clipped_action_is_what_moves(robot, twin):
    before = settle(twin, robot, 0.0)
    sent = robot.send_action(np.array([0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    clipped = robot.status()["last_clipped"]
    assert 0.0 < sent[0] <= 0.05 + 1e-6 and clipped[0] == "translation_step", clipped
    if sent[0] < 0.05 - 1e-6:  # further scaled by the joint checks, and they say which joint
        assert any(c.startswith("joint_") for c in clipped[1:]), clipped
    robot.send_action(np.zeros(7))  # keep the watchdog fed; hold the (already reached) target
    after = settle(twin, robot, 0.6)
    assert after[0] - before[0] < 0.055


def test_rejected_actions_stop_the_arm_and_return_zeros(robot, twin):
    x0 = robot.get_observation()["ee_pose"][0]
    robot.send_action(np.array([0.05, 0, 0, 0, 0, 0, 1.0]))
    twin.wait(0.05)
    sent = robot.send_action(np.array([np.nan, 0, 0, 0, 0, 0, 1.0]))
    assert np.all(sent == 0) and "non-finite" in robot.status()["last_rejection"]
    x_stopped = settle(twin, robot)[0]
    assert x_stopped - x0 < 0.04  # stopped well short of the 5 cm target
    assert settle(twin, robot, 0.2)[0] == pytest.approx(x_stopped, abs=1e-3)
    stale = robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]), stamp=twin.clock() - 2.0)
    assert np.all(stale == 0) and "stale" in robot.status()["last_rejection"]
    assert robot.status()["safety_rejected"] == 2


def test_estop_stops_motion_and_latches_until_reset(robot, twin):
    x0 = robot.get_observation()["ee_pose"][0]
    robot.send_action(np.array([0.05, 0, 0, 0, 0, 0, 1.0]))
    twin.wait(0.05)
    robot.estop("test")
    x_stopped = settle(twin, robot)[0]
    assert x_stopped - x0 < 0.04 and robot.status()["estopped"]
    for _ in range(3):  # latched: commands are refused, nothing moves
        assert np.all(robot.send_action(np.array([0.05, 0, 0, 0, 0, 0, 1.0])) == 0)
        twin.wait(PERIOD)
    assert settle(twin, robot, 0.2)[0] == pytest.approx(x_stopped, abs=1e-3)
    with pytest.raises(RobotError, match="e-stop"):
        robot.home()
    robot.reset_estop()
    robot.send_action(np.array([0.03, 0, 0, 0, 0, 0, 1.0]))
    assert settle(twin, robot, 0.5)[0] - x_stopped > 0.02


def test_estop_interrupts_a_blocking_homing_without_a_fault(robot, twin):
    for _ in range(4):
        robot.send_action(np.array([0.05, 0.0, -0.05, 0, 0, 0, 1.0]))
        twin.wait(PERIOD)
    errors: list[BaseException] = []

    def home() -> None:
        try:
            robot.home()
        except RobotError as exc:
            errors.append(exc)

    homing = threading.Thread(target=home)
    homing.start()
    twin.wait(0.2)
    robot.estop("operator pressed stop during homing")
    homing.join(timeout=30)
    assert not homing.is_alive()
    assert len(errors) == 1 and "interrupted by the e-stop" in str(errors[0])
    assert robot.fault == ""  # an e-stop is not a fault: reset_estop() is enough to continue
    robot.reset_estop()
    robot.home()


def test_watchdog_stops_the_arm_when_commands_go_stale(twin):
    with make_robot(twin, watchdog_timeout_s=0.15) as robot:
        robot.home()
        x0 = robot.get_observation()["ee_pose"][0]
        robot.send_action(np.array([0.05, 0, 0, 0, 0, 0, 1.0]))  # then the policy goes silent
        x_end = settle(twin, robot, 0.8)[0]
        assert robot.watchdog_trips == 1
        assert x_end - x0 < 0.045  # stopped before reaching the 5 cm target
        assert not robot.status()["motion_active"]


def test_reflex_during_motion_stops_reports_and_recovers(twin):
    faults = FaultInjector()
    with make_robot(twin, faults) as robot:
        robot.home()
        robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        reflex = franky.ControlException(
            'libfranka: Move command aborted: motion aborted by reflex! ["cartesian_reflex"]'
        )
        faults.inject("poll_motion", reflex)  # surfaces on the next command, as after a real reflex
        n_stop = faults.calls.count("stop")
        with pytest.raises(RobotFault, match="reflex"):
            robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        assert faults.calls.count("stop") > n_stop  # the driver stopped the arm
        assert "ControlException" in robot.status()["fault"]
        with pytest.raises(RobotFault, match="recover"):  # refused until recovery
            robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        robot.recover()
        assert robot.status()["fault"] == ""
        x0 = robot.get_observation()["ee_pose"][0]
        robot.send_action(np.array([0.03, 0, 0, 0, 0, 0, 1.0]))
        assert settle(twin, robot, 0.5)[0] - x0 > 0.02  # moving again


def test_planner_refusing_a_step_stops_the_arm_without_a_fault(twin):
    faults = FaultInjector()
    with make_robot(twin, faults) as robot:
        robot.home()
        robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        # franky's planner (Ruckig) can refuse a start state; the robot itself reports no error.
        faults.inject("move", RuntimeError("Motion planner failed with error code -101"), robot_error=False)
        n_stop = faults.calls.count("stop")
        sent = robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))
        assert not sent.any() and faults.calls.count("stop") > n_stop  # nothing sent, the arm stopped
        status = robot.status()
        assert status["fault"] == "" and status["planner_rejections"] == 1
        x0 = settle(twin, robot)[0]
        robot.send_action(np.array([0.03, 0, 0, 0, 0, 0, 1.0]))  # the next command is executed
        assert settle(twin, robot, 0.5)[0] - x0 > 0.01
        # The same exception from a robot that *is* in error is a fault, as before.
        faults.inject("move", RuntimeError("Motion planner failed with error code -101"))
        with pytest.raises(RobotFault, match="Motion planner failed"):
            robot.send_action(np.array([0.02, 0, 0, 0, 0, 0, 1.0]))


def test_communication_loss_and_failed_recovery_are_reported(twin):
    faults = FaultInjector()
    with make_robot(twin, faults) as robot:
        faults.inject("state", franky.NetworkException("libfranka: UDP receive: Timeout"))
        with pytest.raises(RobotFault, match="communication with the robot was lost"):
            robot.get_observation()
        faults.inject("recover_from_errors", franky.CommandException("libfranka: error recovery rejected"))
        with pytest.raises(RobotError, match=r"recovering .* failed"):
            robot.recover()
        assert robot.fault  # still faulted
        robot.recover()
        assert robot.fault == "" and robot.get_observation()["ee_pose"].shape == (7,)


def test_gripper_closes_and_opens_without_overlapping_commands(robot, twin):
    close = np.array([0, 0, 0, 0, 0, 0, -1.0])
    robot.send_action(close)
    robot.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))  # changes its mind while the grasp runs: deferred
    robot.send_action(close)
    for _ in range(15):
        robot.send_action(close)
        twin.wait(PERIOD)
    assert robot.get_observation()["gripper_width"] < 0.01
    opened = False
    for _ in range(25):
        robot.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        twin.wait(PERIOD)
        if robot.get_observation()["gripper_width"] > 0.06:
            opened = True
            break
    assert opened


def test_unreachable_robot_names_host_and_fix():
    with pytest.raises(RobotError, match=r"127\.0\.0\.254.*FCI"):
        FrankyRobot(FrankyRobotConfig(host="127.0.0.254", sim=True)).connect()
    with pytest.raises(RobotError, match="not connected"):
        FrankyRobot(FrankyRobotConfig(host="127.0.0.254")).send_action(np.zeros(7))


def test_config_validation():
    cfg = load_config(FrankyRobotConfig, overrides=["host=10.0.0.2", "safety.max_translation_m=0.02"])
    assert cfg.safety.max_translation_m == 0.02
    with pytest.raises(ConfigError, match="relative_dynamics_factor"):
        load_config(FrankyRobotConfig, overrides=["relative_dynamics_factor=2"])
    with pytest.raises(ConfigError, match="torque_thresholds"):
        load_config(FrankyRobotConfig, data={"torque_thresholds": [10.0] * 6})


def up(dz: float) -> np.ndarray:
    return np.array([0.0, 0.0, dz])


def test_scripted_pick_and_place_through_the_whole_stack_succeeds(twin):
    """An expert's deltas -> safety filter -> franky -> franky-sim: the cube ends on the tray."""
    scene = TwinScene(
        object_shapes=("cube",),
        receptacle_shapes=("tray",),
        object_xy=(0.45, -0.07),
        receptacle_xy=(0.45, 0.07),
    )
    with make_robot(twin) as robot:
        robot.home()
        layout = twin.reset(seed=1, scene=scene)
        twin.wait(0.2)
        assert not twin.success()
        cube = twin.object_poses()[layout.target_object][:3]
        tray = np.array([*layout.receptacles[layout.target_receptacle]["xy"], 0.012])
        waypoints = [  # (TCP goal, gripper, minimum steps there: time for the fingers)
            (cube + up(0.06), 1.0, 0),
            (cube, 1.0, 0),
            (cube, -1.0, 8),
            (tray + up(0.06), -1.0, 0),
            (tray + up(0.035), -1.0, 0),
            (tray + up(0.035), 1.0, 6),
            (tray + up(0.08), 1.0, 0),
        ]
        for goal, gripper, min_steps in waypoints:
            for k in range(40):
                error = goal - robot.get_observation()["ee_pose"][:3]
                robot.send_action(np.r_[np.clip(error, -0.05, 0.05), 0.0, 0.0, 0.0, gripper])
                twin.wait(PERIOD)
                if np.linalg.norm(error) < 0.008 and k >= min_steps:
                    break
            else:
                pytest.fail(f"did not reach {goal} (gripper {gripper}): {robot.status()}")
        twin.wait(0.3)
        assert twin.success(), twin.object_poses()[layout.target_object]
        assert robot.status()["safety_rejected"] == 0
