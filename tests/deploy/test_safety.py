"""Safety filter: property-based (hypothesis) invariants plus the rejection paths, named."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simbridge.data.config import ConfigError, load_config
from simbridge.deploy.safety import (
    JOINT_LIMITS,
    SafetyFilter,
    SafetyLimits,
    apply_delta,
    euler_xyz_to_quat,
    forward_kinematics,
    predict_joint_delta,
    quat_to_rotvec,
)

LIMITS = SafetyLimits()
TOL = 1e-6
HOME_Q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # TCP pointing down (franky's home orientation)

wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-0.3, 0.3),
    st.sampled_from([0.0, 1e308, -1e308, 1e-320, 0.05, -0.15, 0.1500001]),
)
actions = st.lists(wild, min_size=7, max_size=7).map(np.array)
plausible_actions = st.lists(st.floats(-0.6, 0.6), min_size=7, max_size=7).map(np.array)


@st.composite
def poses(draw) -> np.ndarray:
    """TCP poses inside, on the edges of, and (a little) outside the workspace box."""
    lo, hi = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
    pos = []
    for i in range(3):
        kind = draw(st.sampled_from(["inside", "low_edge", "high_edge", "outside"]))
        if kind == "inside":
            pos.append(draw(st.floats(lo[i], hi[i])))
        elif kind == "low_edge":
            pos.append(lo[i])
        elif kind == "high_edge":
            pos.append(hi[i])
        else:
            pos.append(draw(st.one_of(st.floats(lo[i] - 0.2, lo[i]), st.floats(hi[i], hi[i] + 0.2))))
    rpy = [draw(st.floats(-0.5, 0.5)) for _ in range(3)]
    quat = quat_mul_down(euler_xyz_to_quat(np.array(rpy)))
    return np.concatenate([pos, quat])


def quat_mul_down(q: np.ndarray) -> np.ndarray:
    from simbridge.data.geometry import quat_multiply

    return quat_multiply(q, DOWN)


joints = st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7).map(
    lambda u: np.clip(HOME_Q + np.array(u) * 1.5, JOINT_LIMITS["fr3"]["lower"], JOINT_LIMITS["fr3"]["upper"])
)


def assert_within_limits(result, pose: np.ndarray) -> None:
    a = result.action
    assert a.shape == (7,) and a.dtype == np.float32 and np.all(np.isfinite(a))
    if result.rejected:
        assert np.all(a == 0) and result.stop and result.reason
        return
    assert np.linalg.norm(a[:3]) <= LIMITS.step_translation_m + TOL
    assert np.all(np.abs(a[3:6]) <= LIMITS.step_rotation_rad + TOL)
    assert -1.0 <= a[6] <= 1.0
    lo, hi = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
    pos, target = pose[:3], result.target_pose[:3]
    # Inside the box the target stays inside; outside it, no axis moves further out.
    assert np.all(target >= np.minimum(lo, pos) - TOL) and np.all(target <= np.maximum(hi, pos) + TOL)
    assert abs(np.linalg.norm(result.target_pose[3:]) - 1.0) < 1e-9


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=actions, pose=poses())
def test_no_action_leaves_the_limits(action, pose):
    r = SafetyFilter(LIMITS).filter(action, pose)
    assert_within_limits(r, pose)
    if not np.all(np.isfinite(action)):
        assert r.rejected and "non-finite" in r.reason


@settings(max_examples=300, deadline=None)
@given(action=plausible_actions, pose=poses(), q=joints)
def test_joint_steps_stay_inside_margins_and_velocity(action, pose, q):
    r = SafetyFilter(LIMITS).filter(action, pose, joint_positions=q)
    assert_within_limits(r, pose)
    if r.rejected:
        return
    twist = np.concatenate([r.action[:3], quat_to_rotvec(euler_xyz_to_quat(r.action[3:6]))]).astype(
        np.float64
    )
    dq = predict_joint_delta(q, twist)
    assert np.all(np.abs(dq) <= LIMITS.joint_step_limit + 1e-6)
    lo, hi = LIMITS.joint_lower, LIMITS.joint_upper
    # A joint inside its margin stays inside; one already in the margin does not go deeper.
    assert np.all((q + dq >= lo - 1e-6) | (dq >= -1e-9))
    assert np.all((q + dq <= hi + 1e-6) | (dq <= 1e-9))


def test_clips_translation_rotation_and_gripper_and_reports_it():
    pose = np.array([0.5, 0.0, 0.3, *DOWN])
    r = SafetyFilter().filter(np.array([0.1, 0.1, 0.0, 0.3, 0.0, -0.2, 3.0]), pose)
    assert not r.rejected
    assert r.clipped == ["translation_step", "rotation_step", "gripper"]
    np.testing.assert_allclose(r.action[:3], [0.05 / math.sqrt(2)] * 2 + [0.0], atol=1e-7)
    np.testing.assert_allclose(r.action[3:], [0.15, 0.0, -0.15, 1.0], atol=1e-7)
    np.testing.assert_allclose(r.target_pose, apply_delta(pose, r.action.astype(np.float64)))


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


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"action": [0.01, 0, 0, 0, 0, math.nan, 0]}, "non-finite"),
        ({"action": [0.01, 0, 0, 0, 0, 0]}, "7 values"),
        ({"action": "forward"}, "not numeric"),
        ({"action": [2.0, 0, 0, 0, 0, 0, 0]}, "units"),  # 2 m in one step: a unit bug, never clipped
        ({"ee_pose": [0.5, 0, 0.3, 0, 0, 0, 0]}, "unit length"),
        ({"ee_pose": [0.5, 0, math.inf, *DOWN]}, "finite"),
        ({"stamp": 99.0, "now": 100.0}, "stale"),
        ({"stamp": 101.0, "now": 100.0}, "future"),
        ({"stamp": math.nan, "now": 100.0}, "not finite"),
        ({"joint_positions": [0.0] * 6}, "joint_positions"),
        ({"joint_positions": [0.0, 0, 0, 0.5, 0, 1.0, 0]}, "beyond the fr3 limits"),  # j4 must be negative
    ],
)
def test_rejects_fail_closed(kwargs, reason):
    args = {"action": [0.01, 0, 0, 0, 0, 0, 1.0], "ee_pose": [0.5, 0, 0.3, *DOWN]} | kwargs
    f = SafetyFilter()
    r = f.filter(**args)
    assert r.rejected and r.stop and reason in r.reason, r.reason
    assert np.all(r.action == 0) and f.num_rejected == 1


def test_fresh_stamp_passes_and_require_joint_positions_fails_closed():
    pose = np.array([0.5, 0, 0.3, *DOWN])
    assert not SafetyFilter().filter([0.01, 0, 0, 0, 0, 0, 1], pose, stamp=99.9, now=100.0).rejected
    strict = SafetyFilter(SafetyLimits(require_joint_positions=True))
    assert strict.filter([0.01, 0, 0, 0, 0, 0, 1], pose).rejected
    assert not strict.filter([0.01, 0, 0, 0, 0, 0, 1], pose, joint_positions=HOME_Q).rejected


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


def test_velocity_limits_tighten_the_step():
    limits = SafetyLimits(max_linear_speed_m_s=0.2, max_angular_speed_rad_s=0.5)  # 2 cm, 0.05 rad at 10 Hz
    r = SafetyFilter(limits).filter([0.04, 0, 0, 0.1, 0, 0, 1], [0.5, 0, 0.3, *DOWN])
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


def test_kinematics_matches_franka_home_pose():
    T, _ = forward_kinematics(HOME_Q)
    np.testing.assert_allclose(T[:3, 3], [0.3069, 0.0, 0.4869], atol=2e-3)
    np.testing.assert_allclose(np.abs(T[:3, 2]), [0, 0, 1], atol=1e-6)  # TCP z axis points down
