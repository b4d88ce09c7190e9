"""The scripted expert in the franky-sim twin: the task's waypoint logic, MuJoCo's privileged state,
its actions through the whole robot stack (safety filter -> franky -> franky-sim)."""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.data.spec import CameraSpec, Observation, ObservationSpec, PolicyContract
from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.franky_robot import FrankyRobot
from simbridge.deploy.twin import TwinSim
from simbridge.deploy.twin_expert import make_twin_expert, run_twin_episode, twin_state
from simbridge.deploy.twin_scene import TwinScene

pytestmark = [pytest.mark.robot, pytest.mark.integration]

CONTRACT = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 64, 64),)))


@pytest.fixture(scope="module")
def twin():
    with TwinSim(seed=0) as sim:
        yield sim


def test_the_twin_expert_puts_the_object_on_the_receptacle(twin):
    with FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True), clock=twin.clock) as robot:
        expert = make_twin_expert(twin, CONTRACT)
        result = run_twin_episode(twin, robot, expert, CONTRACT, seed=1, scene=TwinScene(), max_steps=80)
        assert result.success, (result, twin.object_poses()[result.target_object])
        # The phases of the task's expert, in order: it grasped, carried, and let go (success needs
        # the hand open: the twin's success, like the task's, is "placed and not held").
        firsts = list(dict.fromkeys(result.phases))
        assert firsts[:3] == ["approach", "descend", "grasp"] and firsts[-1] == "release", result.phases
        assert not twin.held(result.target_object) and robot.status()["safety_rejected"] == 0


def test_held_needs_both_fingers_on_the_object(twin):
    """Before the grasp nothing is held; with the fingers closed on the cube it is (MuJoCo's contacts),
    and the expert's state says so."""
    scene = TwinScene(object_shapes=("cube",), receptacle_shapes=("tray",), object_xy=(0.5, -0.07),
                      receptacle_xy=(0.5, 0.07))  # fmt: skip
    with FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True), clock=twin.clock) as robot:
        robot.home()
        layout = twin.reset(seed=0, scene=scene)
        twin.wait(0.2)
        assert not twin.held(layout.target_object)
        cube = twin.object_poses()[layout.target_object][:3]
        for gripper, steps in ((1.0, 30), (-1.0, 8)):  # to the cube, open; then close on it
            for _ in range(steps):
                error = cube - robot.get_observation()["ee_pose"][:3]
                robot.send_action(np.r_[np.clip(error, -0.05, 0.05), 0.0, 0.0, 0.0, gripper])
                twin.wait(0.1)
        assert twin.held(layout.target_object), robot.get_observation()["gripper_width"]
        obs = Observation(images={}, ee_pose=np.asarray(robot.get_observation()["ee_pose"], np.float32),
                          gripper_width=0.0, joint_positions=np.zeros(7, np.float32), instruction="")  # fmt: skip
        assert twin_state(twin, obs).grasped
        robot.stop()
