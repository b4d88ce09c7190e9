"""Safety filter invariants under hypothesis: exact joint motion, total rotation angle, malformed input.

Each accepted command's joint motion is re-derived here with an independent exact IK: the commanded
Cartesian path cut into 200 substeps, each solved to convergence with undamped least-squares Newton
steps (finer where that does not converge). Joint configurations cover the whole FR3 range plus a
pool of near-singular poses (smallest singular value of J below 0.016). Derandomized: CI runs the
same examples every time.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

from simbridge.deploy.kinematics import JOINT_LIMITS, fk_jacobian, rotvec_to_matrix
from simbridge.deploy.safety import SafetyFilter, SafetyLimits

LIMITS = SafetyLimits()
#: Workspace and orientation boxes that never bind: the joint-space stage does all the limiting.
OPEN = SafetyLimits(
    workspace_low=(-2.0, -2.0, -2.0),
    workspace_high=(2.0, 2.0, 2.0),
    orientation_low=(-math.pi, -1.5, -math.pi),
    orientation_high=(math.pi, 1.5, math.pi),
)
LOWER, UPPER = JOINT_LIMITS["fr3"]["lower"], JOINT_LIMITS["fr3"]["upper"]
DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]


def fast(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )


def _near_singular_pool(n: int = 3000, threshold: float = 0.016) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    pool = []
    for _ in range(n):
        q = rng.uniform(LOWER, UPPER)
        if np.linalg.svd(fk_jacobian(q)[1], compute_uv=False)[-1] < threshold:
            pool.append(q)
    return pool


NEAR_SINGULAR = _near_singular_pool()

whole_range = st.tuples(*[st.floats(float(lo), float(hi)) for lo, hi in zip(LOWER, UPPER, strict=True)]).map(
    np.array
)
near_singular = st.tuples(
    st.sampled_from(NEAR_SINGULAR), st.lists(st.floats(-0.01, 0.01), min_size=7, max_size=7)
).map(lambda t: np.clip(t[0] + np.array(t[1]), LOWER, UPPER))
joints = st.one_of(whole_range, near_singular)
moves = st.lists(st.floats(-0.08, 0.08), min_size=3, max_size=3).flatmap(
    lambda t: st.lists(st.floats(-0.3, 0.3), min_size=3, max_size=3).map(lambda r: np.array([*t, *r, 1.0]))
)


def pose_of(q: np.ndarray) -> np.ndarray:
    T = fk_jacobian(q)[0]
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    return np.array([*T[:3, 3], w, x, y, z])


def pose_error(q: np.ndarray, p_t: np.ndarray, R_t: np.ndarray) -> np.ndarray:
    T = fk_jacobian(q)[0]
    return np.r_[p_t - T[:3, 3], Rotation.from_matrix(R_t @ T[:3, :3].T).as_rotvec()]


def solve_pose(q: np.ndarray, p_t: np.ndarray, R_t: np.ndarray) -> np.ndarray | None:
    """Levenberg-Marquardt from ``q`` to the pose (p_t, R_t), to 1 um / 1 urad (None if it cannot).

    LM rather than plain Newton: it stays well-behaved at singular poses, where the Newton steps of
    directions with a singular value ~1e-5 overshoot.
    """
    e, lam = pose_error(q, p_t, R_t), 1e-6
    for _ in range(100):
        if np.abs(e).max() < 1e-10:
            return q
        J = fk_jacobian(q)[1]
        q_try = q + J.T @ np.linalg.solve(J @ J.T + lam**2 * np.eye(6), e)
        e_try = pose_error(q_try, p_t, R_t)
        if np.linalg.norm(e_try) < np.linalg.norm(e):
            q, e, lam = q_try, e_try, max(lam / 10, 1e-12)
        else:
            lam *= 10
    return q if np.abs(e).max() < 1e-6 else None


def exact_joint_path(q0: np.ndarray, action: np.ndarray, substeps: int = 200) -> np.ndarray | None:
    """Joint positions along the commanded straight-line / constant-axis path, or None if not followable."""
    T0 = fk_jacobian(q0)[0]
    w = Rotation.from_euler("xyz", action[3:6]).as_rotvec()
    q, path = q0.copy(), [q0.copy()]
    for s in np.linspace(0.0, 1.0, substeps + 1)[1:]:
        q = solve_pose(q, T0[:3, 3] + s * action[:3], rotvec_to_matrix(s * w) @ T0[:3, :3])
        if q is None:
            return None if substeps >= 1000 else exact_joint_path(q0, action, 1000)
        path.append(q.copy())
    return np.array(path)


@fast(250)
@given(q=joints, action=moves, limits=st.sampled_from([LIMITS, OPEN]))
def test_accepted_joint_motion_stays_inside_margins_and_the_joint_budget(q, action, limits):
    r = SafetyFilter(limits).filter(action, pose_of(q), joint_positions=q)
    if r.rejected or not np.any(r.action[:6]):
        return
    path = exact_joint_path(q, r.action.astype(np.float64))
    assert path is not None, f"accepted a step whose exact path cannot be followed: {r}"
    excursion = np.abs(path - q).max(axis=0)
    assert np.all(excursion <= 1.1 * limits.joint_step_limit), (excursion / limits.joint_step_limit, r)
    lo, hi = limits.joint_lower, limits.joint_upper
    inside = (q >= lo) & (q <= hi)
    # A joint inside its margins stays inside; one already in a margin goes no deeper (1e-4 rad:
    # the integration noise between this reference and the filter's own path).
    assert np.all(path[:, inside] >= lo[inside]) and np.all(path[:, inside] <= hi[inside]), r
    assert np.all(path.min(axis=0)[~inside] >= np.minimum(q, lo)[~inside] - 1e-4), r
    assert np.all(path.max(axis=0)[~inside] <= np.maximum(q, hi)[~inside] + 1e-4), r


wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-0.3, 0.3),
    st.sampled_from([0.0, 1e308, -1e308, 1e-320, 0.05, -0.15, 0.15, 0.1500001]),
)
actions = st.lists(wild, min_size=7, max_size=7).map(np.array)


@st.composite
def poses(draw) -> np.ndarray:
    """TCP poses inside, on the edges of, and (a little) outside the workspace and orientation boxes."""
    lo, hi = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
    pos = []
    for i in range(3):
        kind = draw(st.sampled_from(["inside", "low_edge", "high_edge", "outside"]))
        if kind == "inside":
            pos.append(draw(st.floats(lo[i], hi[i])))
        elif kind in ("low_edge", "high_edge"):
            pos.append(lo[i] if kind == "low_edge" else hi[i])
        else:
            pos.append(draw(st.one_of(st.floats(lo[i] - 0.2, lo[i]), st.floats(hi[i], hi[i] + 0.2))))
    rpy = [draw(st.floats(-1.0, 1.0)) for _ in range(2)] + [draw(st.floats(-math.pi, math.pi))]
    x, y, z, w = (Rotation.from_euler("xyz", rpy) * Rotation.from_quat(DOWN_XYZW)).as_quat()
    return np.array([*pos, w, x, y, z])


def deviation(pose: np.ndarray) -> np.ndarray:
    R = Rotation.from_quat([*pose[4:7], pose[3]]) * Rotation.from_quat(DOWN_XYZW).inv()
    return R.as_euler("xyz")


@fast(500)
@given(action=actions, pose=poses(), q=st.one_of(st.none(), joints))
def test_no_accepted_action_leaves_the_limits(action, pose, q):
    r = SafetyFilter(LIMITS).filter(action, pose, joint_positions=q)
    a = r.action
    assert a.shape == (7,) and a.dtype == np.float32 and np.all(np.isfinite(a))
    if r.rejected:
        assert np.all(a == 0) and r.stop and r.reason and "internal error" not in r.reason
        if not np.all(np.isfinite(action)):
            assert "non-finite" in r.reason
        return
    assert np.linalg.norm(a[:3]) <= LIMITS.step_translation_m
    # The rotation limit is on the total angle (the executed float32 Euler angles as a rotation).
    angle = np.linalg.norm(Rotation.from_euler("xyz", a[3:6].astype(np.float64)).as_rotvec())
    assert angle <= LIMITS.step_rotation_rad + 1e-9
    assert -1.0 <= a[6] <= 1.0
    lo, hi = np.array(LIMITS.workspace_low), np.array(LIMITS.workspace_high)
    pos, target = pose[:3], r.target_pose[:3]
    # Inside the box the target stays inside; outside it, no axis moves further out.
    assert np.all(target >= np.minimum(lo, pos) - 1e-6) and np.all(target <= np.maximum(hi, pos) + 1e-6)
    # Roll and pitch about the nominal (down) orientation: the same rule (1e-6: float32 rounding).
    cur, dev = deviation(pose), deviation(r.target_pose)
    olo, ohi = np.array(LIMITS.orientation_low), np.array(LIMITS.orientation_high)
    assert np.all(dev[:2] >= np.minimum(olo, cur)[:2] - 1e-6) and np.all(
        dev[:2] <= np.maximum(ohi, cur)[:2] + 1e-6
    )
    assert abs(np.linalg.norm(r.target_pose[3:]) - 1.0) < 1e-9


@fast(300)
@given(
    rot=st.lists(st.floats(-0.75, 0.75), min_size=3, max_size=3),
    pose=poses(),
    rate=st.sampled_from([10.0, 15.0, 30.0]),
)
def test_accepted_rotation_steps_are_within_the_total_angle_limit(rot, pose, rate):
    limits = SafetyLimits(control_rate_hz=rate)
    r = SafetyFilter(limits).filter([0.0, 0.0, 0.0, *rot, 0.0], pose)
    if r.rejected:
        assert "units" in r.reason
        return
    angle = np.linalg.norm(Rotation.from_euler("xyz", r.action[3:6].astype(np.float64)).as_rotvec())
    assert angle <= limits.step_rotation_rad + 1e-9
    asked = Rotation.from_euler("xyz", rot).as_rotvec()
    if np.linalg.norm(asked) > limits.step_rotation_rad and "orientation" not in r.clipped:
        got = Rotation.from_euler("xyz", r.action[3:6].astype(np.float64)).as_rotvec()
        cos = got @ asked / (np.linalg.norm(got) * np.linalg.norm(asked))
        assert cos > 1 - 1e-9  # scaled as a whole: the axis is kept


# --- malformed input: always a rejection with a reason, never an exception ----------------------

huge_ints = st.integers(min_value=2**1024, max_value=2**1100).flatmap(lambda n: st.sampled_from([n, -n]))
bad_vectors = st.one_of(
    st.lists(st.floats(-1, 1), max_size=12).filter(lambda v: len(v) != 7),
    st.lists(st.floats(-0.01, 0.01), min_size=6, max_size=6).flatmap(
        lambda v: huge_ints.map(lambda n: [*v, n])
    ),
    hnp.arrays(np.float64, st.sampled_from([(7, 1), (1, 7), (), (0,), (7, 7), (14,)])),
    hnp.arrays(st.sampled_from([np.complex128, np.bool_, np.str_, np.bytes_, object]), 7),
    st.lists(st.text(max_size=5), min_size=7, max_size=7),
    st.lists(st.floats(-0.01, 0.01).map(str), min_size=7, max_size=7),  # numeric strings
    st.lists(st.booleans(), min_size=7, max_size=7),
    st.lists(st.floats(-0.01, 0.01), min_size=7, max_size=7).map(lambda v: np.ma.masked_array(v)),
    st.lists(st.lists(st.floats(-0.01, 0.01), min_size=1, max_size=1), min_size=7, max_size=7),
    st.sampled_from([None, 0.0, "", "abc", b"\x00" * 7, {"dx": 0.01}, object(), float("nan"), [None] * 7]),
    st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=7, max_size=7),
    hnp.arrays(np.float16, 7, elements=st.just(np.inf)),
)
bad_stamps = st.one_of(
    huge_ints,
    st.text(max_size=5),
    st.booleans(),
    st.sampled_from([math.nan, math.inf, [1.0], b"1", 1j, object()]),
)
GOOD_POSE = np.array([0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0])
GOOD_Q = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])


@fast(400)
@given(bad=bad_vectors, where=st.sampled_from(["action", "ee_pose", "joint_positions"]))
def test_malformed_vectors_are_rejected_never_raised(bad, where):
    assume(not (where == "joint_positions" and bad is None))  # None there means "not given": valid
    args = {"action": [0.01, 0, 0, 0, 0, 0, 1.0], "ee_pose": GOOD_POSE, "joint_positions": GOOD_Q, where: bad}
    r = SafetyFilter().filter(**args)
    assert r.rejected and r.reason and "internal error" not in r.reason, (where, bad, r.reason)
    assert r.action.dtype == np.float32 and np.all(r.action == 0)


@fast(150)
@given(bad=bad_stamps, where=st.sampled_from(["stamp", "publish_stamp", "now"]))
def test_malformed_stamps_are_rejected_never_raised(bad, where):
    args = {"stamp": 99.9, "publish_stamp": 99.95, "now": 100.0, where: bad}
    r = SafetyFilter().filter([0.01, 0, 0, 0, 0, 0, 1.0], GOOD_POSE, GOOD_Q, **args)
    assert r.rejected and r.reason and "internal error" not in r.reason, (where, bad, r.reason)
