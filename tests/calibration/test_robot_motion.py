"""Calibration poses as contract delta actions: the conventions agree with the safety filter's."""

from __future__ import annotations

import numpy as np

from simbridge.calibration.geometry import matrix_to_pose7, pose7_to_matrix, pose_difference
from simbridge.calibration.handeye_poses import generate_poses
from simbridge.calibration.robot_motion import delta_action
from simbridge.calibration.synthetic import example_rig
from simbridge.deploy.safety import SafetyFilter, SafetyLimits, apply_delta


def test_delta_action_points_at_the_target_and_respects_step_limits():
    _, centre = example_rig("eye_in_hand", render=False)
    target = generate_poses(centre, 6, max_angle_deg=30, max_offset_m=0.1)[3]
    action = delta_action(centre, target, 0.02, 0.05)
    assert np.linalg.norm(action[:3]) <= 0.02 + 1e-6 and action[6] == 0.0
    assert np.dot(action[:3], target[:3, 3] - centre[:3, 3]) > 0


def test_repeated_delta_actions_through_the_safety_filter_reach_every_calibration_pose():
    _, centre = example_rig("eye_in_hand", render=False)
    safety = SafetyFilter(SafetyLimits())
    for target in generate_poses(centre, 8, pivot_in_ee=(0, 0, 0.40)):
        pose = matrix_to_pose7(centre)
        for _ in range(60):
            result = safety.filter(delta_action(pose7_to_matrix(pose), target, 0.02, 0.06), pose)
            assert not result.rejected, result.reason
            pose = apply_delta(pose, result.action.astype(np.float64))
        mm, deg = pose_difference(pose7_to_matrix(pose), target)
        assert mm < 0.1 and deg < 0.01
