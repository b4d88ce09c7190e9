"""Franka kinematics: FK/Jacobian against the DH chain and finite differences, rotation helpers, path following."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from simbridge.deploy.kinematics import (
    JOINT_LIMITS,
    euler_xyz_to_matrix,
    fk_jacobian,
    follow_twist_path,
    forward_kinematics,
    geometric_jacobian,
    matrix_to_euler_xyz,
    matrix_to_rotvec,
    predict_joint_delta,
    rotvec_to_matrix,
)

HOME_Q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
LOWER, UPPER = JOINT_LIMITS["fr3"]["lower"], JOINT_LIMITS["fr3"]["upper"]
FREE = (np.full(7, -10.0), np.full(7, 10.0))  # a joint box that never binds


def numeric_jacobian(q: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the DH chain: position, and rotation as the rotvec of R(q+h) R(q-h)^T."""
    J = np.zeros((6, 7))
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = h
        Tp, Tm = forward_kinematics(q + dq)[0], forward_kinematics(q - dq)[0]
        J[:3, i] = (Tp[:3, 3] - Tm[:3, 3]) / (2 * h)
        J[3:, i] = Rotation.from_matrix(Tp[:3, :3] @ Tm[:3, :3].T).as_rotvec() / (2 * h)
    return J


def test_kinematics_matches_franka_home_pose():
    T, _ = forward_kinematics(HOME_Q)
    np.testing.assert_allclose(T[:3, 3], [0.3069, 0.0, 0.4869], atol=2e-3)
    np.testing.assert_allclose(np.abs(T[:3, 2]), [0, 0, 1], atol=1e-6)  # TCP z axis points down


def test_fast_fk_and_jacobian_match_the_dh_chain_and_finite_differences():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(LOWER, UPPER)
        T, J = fk_jacobian(q)
        np.testing.assert_allclose(T, forward_kinematics(q)[0], atol=1e-12)
        np.testing.assert_allclose(J, numeric_jacobian(q), atol=1e-6)
        np.testing.assert_allclose(geometric_jacobian(q), J)


def test_rotation_helpers_round_trip_and_agree_with_scipy():
    rng = np.random.default_rng(1)
    for _ in range(50):
        rpy = rng.uniform([-3, -1.5, -3], [3, 1.5, 3])
        R = euler_xyz_to_matrix(rpy)
        np.testing.assert_allclose(R, Rotation.from_euler("xyz", rpy).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler_xyz(R), rpy, atol=1e-9)
        w = rng.normal(size=3)
        w *= rng.uniform(0, math.pi) / np.linalg.norm(w)
        np.testing.assert_allclose(rotvec_to_matrix(w), Rotation.from_rotvec(w).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix(w)), w, atol=1e-9)
    near_pi = np.array([0.0, 0.0, math.pi - 1e-9])  # the quaternion route stays exact near pi
    np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix(near_pi)), near_pi, atol=1e-7)
    assert np.all(matrix_to_rotvec(np.eye(3)) == 0)


def test_path_follower_reaches_the_commanded_pose_and_agrees_with_first_order_for_small_steps():
    twist = np.array([0.02, -0.01, 0.015, 0.03, -0.02, 0.05])
    path = follow_twist_path(HOME_Q, twist, *FREE)
    assert path.fraction == 1.0 and path.stop == "" and path.substeps >= 1
    T0, T1 = forward_kinematics(HOME_Q)[0], forward_kinematics(path.q_end)[0]
    np.testing.assert_allclose(T1[:3, 3], T0[:3, 3] + twist[:3], atol=1e-3)
    np.testing.assert_allclose(matrix_to_rotvec(T1[:3, :3] @ T0[:3, :3].T), twist[3:], atol=1e-3)
    small = twist * 0.01
    np.testing.assert_allclose(
        follow_twist_path(HOME_Q, small, *FREE).q_end - HOME_Q,
        predict_joint_delta(HOME_Q, small, 0.0),
        atol=1e-6,
    )


def test_path_follower_stops_where_a_joint_reaches_its_box_and_prefixes_are_consistent():
    twist = np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.1])
    full = follow_twist_path(HOME_Q, twist, *FREE)
    moved = np.abs(full.q_end - HOME_Q)
    j = int(np.argmax(moved))
    box = (HOME_Q - 0.5 * moved[j], HOME_Q + 0.5 * moved[j])  # the fastest joint may use half its travel
    cut = follow_twist_path(HOME_Q, twist, *box)
    assert cut.stop == "joint" and 0.3 < cut.fraction < 0.7
    assert abs(abs(cut.q_end[cut.joint] - HOME_Q[cut.joint]) - 0.5 * moved[j]) < 1e-3
    # Scaling the step by the fraction gives the verified prefix: it fits the box (up to the
    # integration's discretisation: substeps differ between the two runs).
    again = follow_twist_path(HOME_Q, twist * cut.fraction, *box)
    assert again.fraction > 0.999, again
    np.testing.assert_allclose(again.q_end, cut.q_end, atol=1e-4)
    assert follow_twist_path(HOME_Q, np.zeros(6), *box).fraction == 1.0


def stretched_arm() -> np.ndarray:
    """Elbow almost straight (joint 4 near its upper limit): a boundary singularity."""
    q = HOME_Q.copy()
    q[3] = UPPER[3] - 0.05
    return q


def test_singular_value_floor_stops_motion_into_a_singularity_but_not_out_of_it():
    q = stretched_arm()
    T, J = fk_jacobian(q)
    sigma = np.linalg.svd(J, compute_uv=False)[-1]
    reach = T[:3, 3] - np.array([0.0, 0.0, 0.333])  # from the shoulder towards the TCP
    outward = np.array([*(0.03 * reach / np.linalg.norm(reach)), 0, 0, 0])
    inward = -outward
    floor = sigma * 1.05  # already below the floor: only motion that raises sigma may go on
    into = follow_twist_path(q, outward, *FREE, min_singular_value=floor)
    assert into.stop == "singularity" and into.fraction < 1.0
    back = follow_twist_path(q, inward, *FREE, min_singular_value=floor)
    assert back.fraction == 1.0 and back.min_singular_value >= sigma - 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_path_follower_joint_motion_matches_a_fine_newton_reference(seed):
    rng = np.random.default_rng(seed)
    q0 = np.clip(HOME_Q + rng.uniform(-0.8, 0.8, 7), LOWER + 0.1, UPPER - 0.1)
    twist = np.concatenate([rng.uniform(-0.04, 0.04, 3), rng.uniform(-0.1, 0.1, 3)])
    path = follow_twist_path(q0, twist, *FREE)
    T0 = forward_kinematics(q0)[0]
    q = q0.copy()
    for s in np.linspace(0, 1, 201)[1:]:  # 200 substeps, each solved to convergence
        p_t, R_t = T0[:3, 3] + s * twist[:3], rotvec_to_matrix(s * twist[3:]) @ T0[:3, :3]
        for _ in range(10):
            T, J = fk_jacobian(q)
            e = np.r_[p_t - T[:3, 3], Rotation.from_matrix(R_t @ T[:3, :3].T).as_rotvec()]
            q = q + np.linalg.lstsq(J, e, rcond=None)[0]
    assert path.fraction == 1.0
    np.testing.assert_allclose(path.q_end, q, atol=2e-3)
