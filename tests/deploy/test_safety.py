"""Safety filter, named cases: each stage's clipping, the rejection paths, staleness, limits config.

The hypothesis invariants (exact joint motion, total rotation angle, malformed inputs never raising)
are in test_safety_property.py; the arm model in test_kinematics.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from simbridge.data.config import ConfigError, load_config
from simbridge.deploy.kinematics import forward_kinematics, predict_joint_delta
from simbridge.deploy.safety import SafetyFilter, SafetyLimits, apply_delta

LIMITS = SafetyLimits()
HOME_Q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # TCP pointing down (franky's home orientation)
POSE = np.array([0.5, 0.0, 0.3, *DOWN])


def rotation_of(action: np.ndarray) -> Rotation:
    return Rotation.from_euler("xyz", np.asarray(action[3:6], np.float64))


def pose_with_rpy(rpy: list[float]) -> np.ndarray:
    """A pose whose orientation is ``rpy`` (extrinsic XYZ, base axes) away from pointing down."""
    R = Rotation.from_euler("xyz", rpy) * Rotation.from_quat([1.0, 0.0, 0.0, 0.0])  # xyzw of DOWN
    x, y, z, w = R.as_quat()
    return np.array([0.5, 0.0, 0.3, w, x, y, z])


def deviation(pose: np.ndarray) -> np.ndarray:
    """Roll/pitch/yaw of a pose's orientation relative to pointing down (what the box bounds)."""
    R = Rotation.from_quat([*pose[4:7], pose[3]]) * Rotation.from_quat([1.0, 0.0, 0.0, 0.0]).inv()
    return R.as_euler("xyz")


def test_clips_translation_rotation_and_gripper_and_reports_it():
    r = SafetyFilter().filter(np.array([0.1, 0.1, 0.0, 0.3, 0.0, -0.2, 3.0]), POSE)
    assert not r.rejected
    assert r.clipped == ["translation_step", "rotation_step", "gripper"]
    np.testing.assert_allclose(r.action[:3], [0.05 / math.sqrt(2)] * 2 + [0.0], atol=1e-7)
    # The rotation is limited on its total angle and keeps its axis.
    asked = rotation_of(np.array([0, 0, 0, 0.3, 0.0, -0.2])).as_rotvec()
    got = rotation_of(r.action).as_rotvec()
    assert np.linalg.norm(got) <= LIMITS.step_rotation_rad + 1e-9
    assert np.linalg.norm(got) == pytest.approx(LIMITS.step_rotation_rad, rel=1e-6)
    np.testing.assert_allclose(got / np.linalg.norm(got), asked / np.linalg.norm(asked), atol=1e-6)
    assert r.action[6] == 1.0
    np.testing.assert_allclose(r.target_pose, apply_delta(POSE, r.action.astype(np.float64)))


def test_rotation_limit_is_on_the_total_angle_not_per_axis():
    # The fuzzer's case: 0.15 rad on every axis is 0.26 rad in total, not within a 0.15 rad step.
    r = SafetyFilter().filter([0, 0, 0, 0.15, 0.15, 0.15, 1.0], POSE)
    assert r.clipped == ["rotation_step"]
    assert np.linalg.norm(rotation_of(r.action).as_rotvec()) <= LIMITS.step_rotation_rad + 1e-9
    # A single-axis rotation at the limit is untouched (up to float32 rounding headroom).
    single = SafetyFilter().filter([0, 0, 0, 0, 0, 0.1, 1.0], POSE)
    assert single.clipped == [] and single.action[5] == np.float32(0.1)


def test_unchanged_actions_pass_bit_exact():
    a = np.array([0.02, 0.01, -0.02, 0.0, 0.0, 0.05, 1.0], np.float32)
    pose = np.array([*forward_kinematics(HOME_Q)[0][:3, 3], *DOWN])
    r = SafetyFilter().filter(a, pose, joint_positions=HOME_Q)
    assert r.clipped == [] and r.joint_scale == 1.0
    np.testing.assert_array_equal(r.action, a)


def test_workspace_edge_blocks_outward_motion_only():
    f = SafetyFilter()
    at_floor = np.array([0.5, 0.0, LIMITS.workspace_low[2], *DOWN])
    down = f.filter(np.array([0.0, 0.0, -0.03, 0, 0, 0, 0]), at_floor)
    assert down.clipped == ["workspace"] and down.action[2] == 0.0
    up = f.filter(np.array([0.0, 0.0, 0.03, 0, 0, 0, 0]), at_floor)
    assert up.clipped == [] and up.action[2] == pytest.approx(0.03)
    # Outside the box (e.g. after hand guiding), moving back in is allowed, further out is not.
    outside = np.array([0.9, 0.0, 0.3, *DOWN])
    assert f.filter(np.array([0.02, 0, 0, 0, 0, 0, 0]), outside).action[0] == 0.0
    assert f.filter(np.array([-0.02, 0, 0, 0, 0, 0, 0]), outside).action[0] == pytest.approx(-0.02)


def test_orientation_box_clips_tilt_and_keeps_the_rest_of_the_motion():
    f = SafetyFilter()
    tilt = LIMITS.orientation_high[0]
    at_bound = pose_with_rpy([tilt, 0.0, 0.0])
    # Tilting further about x is stopped at the bound; the yaw asked for at the same time still happens.
    r = f.filter([0.01, 0, 0, 0.1, 0, 0.1, 1.0], at_bound)
    assert "orientation" in r.clipped and not r.rejected
    dev = deviation(r.target_pose)
    assert dev[0] <= tilt + 1e-9 and dev[2] > 0.05 and r.action[0] == pytest.approx(0.01)
    # Tilting back is not clipped.
    back = f.filter([0, 0, 0, -0.1, 0, 0, 1.0], at_bound)
    assert back.clipped == [] and deviation(back.target_pose)[0] == pytest.approx(tilt - 0.1, abs=1e-6)


def test_orientation_outside_the_box_may_only_move_back():
    f = SafetyFilter()
    outside = pose_with_rpy([0.0, 1.0, 0.0])  # tilted 1 rad in pitch, e.g. after hand guiding
    further = f.filter([0, 0, 0, 0, 0.1, 0, 1.0], outside)
    assert "orientation" in further.clipped and deviation(further.target_pose)[1] <= 1.0 + 1e-9
    back = f.filter([0, 0, 0, 0, -0.1, 0, 1.0], outside)
    assert back.clipped == [] and deviation(back.target_pose)[1] == pytest.approx(0.9, abs=1e-6)


def test_a_narrow_yaw_box_works_across_the_pi_seam():
    # Nominal yaw of 180 deg: the box [-0.3, 0.3] around it straddles +-pi in absolute terms.
    nominal = Rotation.from_euler("z", math.pi) * Rotation.from_quat([1.0, 0, 0, 0])
    x, y, z, w = nominal.as_quat()
    lim = SafetyLimits(
        orientation_nominal_wxyz=(w, x, y, z),
        orientation_low=(-0.5, -0.5, -0.3),
        orientation_high=(0.5, 0.5, 0.3),
    )
    f = SafetyFilter(lim)
    pose = np.array([0.5, 0, 0.3, w, x, y, z])
    for dyaw in (0.1, -0.1):
        pose_k = pose
        for _ in range(6):  # 0.6 rad asked for in total; the box allows 0.3
            pose_k = f.filter([0, 0, 0, 0, 0, dyaw, 1.0], pose_k).target_pose
        yaw = (Rotation.from_quat([*pose_k[4:], pose_k[3]]) * nominal.inv()).as_euler("xyz")[2]
        assert abs(yaw) == pytest.approx(0.3, abs=1e-6)


BAD_ACTIONS = [
    ([0.01, 0, 0, 0, 0, math.nan, 0], "non-finite"),
    ([0.01, 0, 0, 0, 0, 0], "7 values"),
    ("forward", "not numeric"),
    ([10**400, 0, 0, 0, 0, 0, 0], "not numeric"),  # an int too large for a float: no OverflowError
    (np.zeros((7, 1)), "shape (7, 1)"),
    (np.zeros((1, 7)), "shape (1, 7)"),
    (["0.01", "0", "0", "0", "0", "0", "1"], "not numeric"),
    (np.array(["0.01"] * 7), "strings"),
    (np.zeros(7, complex), "complex"),
    (np.ma.masked_array(np.zeros(7), mask=[0, 1, 0, 0, 0, 0, 0]), "masked"),
    (np.zeros(7, object), "objects"),
    ([True, False, False, False, False, False, True], "not numeric"),
    (np.zeros(7, bool), "booleans"),
    (None, "not numeric"),
    (0.01, "not numeric"),
    (np.float64(0.01), "shape ()"),
    ([[0.01], [0], [0], [0], [0], [0], [1]], "not numeric"),
    ([2.0, 0, 0, 0, 0, 0, 0], "units"),  # 2 m in one step: a unit bug, never clipped
    ([0, 0, 0, 1e300, 0, 0, 0], "units"),
]


@pytest.mark.parametrize(("action", "reason"), BAD_ACTIONS)
def test_malformed_actions_are_rejected_with_a_reason(action, reason):
    f = SafetyFilter()
    r = f.filter(action, POSE)
    assert r.rejected and r.stop and reason in r.reason, r.reason
    assert r.action.dtype == np.float32 and np.all(r.action == 0) and f.num_rejected == 1


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"ee_pose": [0.5, 0, 0.3, 0, 0, 0, 0]}, "unit length"),
        ({"ee_pose": [0.5, 0, math.inf, *DOWN]}, "finite"),
        ({"ee_pose": np.zeros((7, 1))}, "ee_pose must have 7 values"),
        ({"stamp": 99.0, "now": 100.0}, "stale"),
        ({"stamp": 101.0, "now": 100.0}, "future"),
        ({"stamp": math.nan, "now": 100.0}, "not finite"),
        ({"stamp": "99.9", "now": 100.0}, "not a number"),
        ({"stamp": 10**400, "now": 100.0}, "not a number"),
        ({"stamp": True, "now": 100.0}, "not a number"),
        ({"stamp": 99.9, "now": "100"}, "clock"),
        ({"joint_positions": [0.0] * 6}, "joint_positions"),
        ({"joint_positions": np.zeros((1, 7))}, "joint_positions"),
        ({"joint_positions": [0.0, 0, 0, 0.5, 0, 1.0, 0]}, "beyond the fr3 limits"),  # j4 must be negative
    ],
)
def test_rejects_fail_closed(kwargs, reason):
    args = {"action": [0.01, 0, 0, 0, 0, 0, 1.0], "ee_pose": POSE} | kwargs
    f = SafetyFilter()
    r = f.filter(**args)
    assert r.rejected and r.stop and reason in r.reason, r.reason
    assert np.all(r.action == 0) and f.num_rejected == 1


def test_a_failing_clock_or_internal_error_rejects_instead_of_raising():
    def broken_clock() -> float:
        raise RuntimeError("clock gone")

    r = SafetyFilter(clock=broken_clock).filter([0.01, 0, 0, 0, 0, 0, 1], POSE, stamp=1.0)
    assert r.rejected and "internal error" in r.reason and "clock gone" in r.reason


def test_fresh_stamp_passes_and_require_joint_positions_fails_closed():
    assert not SafetyFilter().filter([0.01, 0, 0, 0, 0, 0, 1], POSE, stamp=99.9, now=100.0).rejected
    strict = SafetyFilter(SafetyLimits(require_joint_positions=True))
    assert strict.filter([0.01, 0, 0, 0, 0, 0, 1], POSE).rejected
    assert not strict.filter([0.01, 0, 0, 0, 0, 0, 1], POSE, joint_positions=HOME_Q).rejected


def test_observation_age_and_transport_age_are_bounded_separately():
    f = SafetyFilter(SafetyLimits(max_command_age_s=0.25, max_observation_age_s=0.6))
    a = [0.01, 0, 0, 0, 0, 0, 1]
    # 0.5 s of image age + inference, published 0.1 s ago: fine.
    assert not f.filter(a, POSE, stamp=99.5, publish_stamp=99.9, now=100.0).rejected
    # A fresh publish does not launder an old observation.
    old = f.filter(a, POSE, stamp=99.3, publish_stamp=99.95, now=100.0)
    assert old.rejected and "observation time 700 ms old > 600 ms" in old.reason
    late = f.filter(a, POSE, stamp=99.7, publish_stamp=99.7, now=100.0)
    assert late.rejected and "publish time 300 ms old > 250 ms" in late.reason
    swapped = f.filter(a, POSE, stamp=99.95, publish_stamp=99.8, now=100.0)
    assert swapped.rejected and "before the observation" in swapped.reason
    # Only an observation stamp: the transport limit applies to it too (publish is never earlier).
    only_obs = f.filter(a, POSE, stamp=99.5, now=100.0)
    assert only_obs.rejected and "250 ms" in only_obs.reason
    assert not f.filter(a, POSE, publish_stamp=99.9, now=100.0).rejected


def test_joint_limit_margin_scales_motion_to_zero_at_the_margin():
    # Joint 4 at its upper margin (elbow nearly straight): stretching further outwards must stop.
    q = HOME_Q.copy()
    q[3] = LIMITS.joint_upper[3]
    pose_T, _ = forward_kinematics(q)
    pose = np.array([*pose_T[:3, 3], *DOWN])
    twist_dir = None
    for d in ([0.03, 0, 0], [-0.03, 0, 0], [0, 0, 0.03], [0, 0, -0.03]):
        dq = predict_joint_delta(q, np.array([*d, 0, 0, 0]))
        if dq[3] > 1e-4:
            twist_dir = d
            break
    assert twist_dir is not None
    r = SafetyFilter().filter(np.array([*twist_dir, 0, 0, 0, 1.0]), pose, joint_positions=q)
    assert "joint_limit:j4" in r.clipped and r.joint_scale == 0.0 and np.all(r.action[:6] == 0)


def test_joint_budget_scales_a_fast_joint_step_and_names_the_joint():
    pose = np.array([*forward_kinematics(HOME_Q)[0][:3, 3], *DOWN])
    slow = SafetyLimits(joint_velocity_fraction=0.05)  # 0.013 rad per step on joints 1-4
    r = SafetyFilter(slow).filter([0.04, 0, 0, 0, 0, 0, 1.0], pose, joint_positions=HOME_Q)
    assert 0 < r.joint_scale < 1 and any(c.startswith("joint_velocity:j") for c in r.clipped), r.clipped
    assert r.action[0] == pytest.approx(0.04 * r.joint_scale, rel=1e-6)


def test_velocity_limits_tighten_the_step():
    limits = SafetyLimits(max_linear_speed_m_s=0.2, max_angular_speed_rad_s=0.5)  # 2 cm, 0.05 rad at 10 Hz
    r = SafetyFilter(limits).filter([0.04, 0, 0, 0.1, 0, 0, 1], POSE)
    assert r.action[0] == pytest.approx(0.02) and r.action[3] == pytest.approx(0.05)


def test_gripper_width_mapping_respects_limits():
    lim = SafetyLimits(gripper_min_width_m=0.01, gripper_max_width_m=0.07)
    assert lim.gripper_width(1.0) == pytest.approx(0.07)
    assert lim.gripper_width(-5.0) == pytest.approx(0.01)
    assert lim.gripper_width(math.nan) == pytest.approx(0.07)  # unknown -> open (releases, never crushes)


def test_limits_config_is_validated():
    assert load_config(SafetyLimits, overrides=["max_translation_m=0.03"]).max_translation_m == 0.03
    with pytest.raises(ConfigError, match="workspace_low"):
        load_config(SafetyLimits, data={"workspace_low": [0.9, 0, 0], "workspace_high": [0.8, 1, 1]})
    with pytest.raises(ConfigError, match="max_translation_m"):
        load_config(SafetyLimits, overrides=["max_translation_m=-1"])
    with pytest.raises(ConfigError):
        load_config(SafetyLimits, overrides=["workspace=1"])
    with pytest.raises(ConfigError, match="orientation_low"):  # the nominal orientation must be inside
        load_config(SafetyLimits, data={"orientation_low": [0.1, -0.5, -0.5]})
    with pytest.raises(ConfigError, match="pitch"):  # pitch beyond pi/2 is not a unique Euler angle
        load_config(SafetyLimits, data={"orientation_high": [0.5, 1.6, 0.5]})
    with pytest.raises(ConfigError, match="orientation_nominal_wxyz"):
        load_config(SafetyLimits, data={"orientation_nominal_wxyz": [1.0, 1.0, 0.0, 0.0]})
    with pytest.raises(ConfigError, match="max_observation_age_s"):
        load_config(SafetyLimits, overrides=["max_observation_age_s=0"])
    box = load_config(
        SafetyLimits, data={"orientation_low": [-0.2, -0.2, -0.4], "orientation_high": [0.2, 0.2, 0.4]}
    )
    assert box.orientation_high == (0.2, 0.2, 0.4)
