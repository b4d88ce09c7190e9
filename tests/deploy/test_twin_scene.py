"""The twin and the ManiSkill task are one scene: same cameras (from the description and from each
simulator's own parameters), same object sizes, and an object at a known place lands on the same
pixels in both renders. Also: the task renders exactly as before the scene description existed.
"""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest

from simbridge.data.geometry import quat_to_matrix
from simbridge.data.scene import (
    COLOURS,
    OBJECT_SHAPES,
    SCENE_CAMERA,
    TABLE,
    WRIST_CAMERA,
    gl_axes,
    intrinsic_matrix,
    task_to_base,
)

pytestmark = [pytest.mark.sim, pytest.mark.robot, pytest.mark.integration]

#: One object and one receptacle at known task-frame places (away from both arms).
OBJECT_XY, RECEPTACLE_XY = (0.0, 0.09), (-0.08, -0.08)
SIZE = 128


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def fixed_split():
    from simbridge.training.envs.splits import TRAIN

    return TRAIN.variant(
        "twin_agreement",
        "train",
        "one red cube and one white plate at fixed places",
        object_shapes=("cube",),
        object_colours=("red",),
        receptacle_shapes=("plate",),
        receptacle_colours=("white",),
        tablecloth_colours=("beige",),
        object_region=(OBJECT_XY[0], OBJECT_XY[0], OBJECT_XY[1], OBJECT_XY[1]),
        receptacle_region=(RECEPTACLE_XY[0], RECEPTACLE_XY[0], RECEPTACLE_XY[1], RECEPTACLE_XY[1]),
        robot_init_noise=0.0,
    )


@pytest.fixture(scope="module")
def task():
    """The ManiSkill task showing the fixed layout: (env, scene image, camera params, hand pose)."""
    pytest.importorskip("mani_skill")
    from simbridge.training.envs import make_env

    env = make_env("PutOnTarget-v1", seed=0, obs_mode="rgb", camera_size=(SIZE, SIZE), wrist_camera=True)
    obs, _ = env.reset(seed=0, options={"split": fixed_split()})
    sensors = env.unwrapped_ms.scene.sensors
    params = {name: {k: _np(v)[0] for k, v in sensors[name].get_params().items()} for name in ("scene", "wrist")}
    hand = _np(env.unwrapped_ms.agent.robot.links_map["panda_hand"].pose.raw_pose)[0]
    yield env, obs.images, params, hand
    env.close()


@pytest.fixture(scope="module")
def twin():
    """The twin showing the same layout: (twin, scene image)."""
    pytest.importorskip("franky_sim")
    from simbridge.deploy.twin import TwinScene, TwinSim

    scene = TwinScene(
        object_shapes=("cube",),
        object_colours=("red",),
        receptacle_shapes=("plate",),
        receptacle_colours=("white",),
        tablecloth_colours=("beige",),
        object_xy=task_to_base(OBJECT_XY),
        receptacle_xy=task_to_base(RECEPTACLE_XY),
    )
    with TwinSim(scene=scene, seed=0, camera_size=(SIZE, SIZE)) as sim:
        sim.reset(seed=0)
        sim.wait(0.2)  # settle on the table
        yield sim, sim.render("scene")


def mj_camera(sim, name: str) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """MuJoCo's own view of a camera: world pos, world axes (right, up, back), fovy (rad), pose in its body."""
    import mujoco

    model = sim._sim.model
    data = mujoco.MjData(model)
    data.qpos[:] = sim.snapshot()
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    return (
        data.cam_xpos[i].copy(),
        data.cam_xmat[i].reshape(3, 3).copy(),
        math.radians(float(model.cam_fovy[i])),
        model.cam_pos[i].copy(),
        quat_to_matrix(model.cam_quat[i].copy()),
    )


def red_centroid(img: np.ndarray) -> np.ndarray:
    """(row, col) centroid of the saturated red pixels (the cube), shading tolerated."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(int)
    ref = cv2.cvtColor((np.array(COLOURS["red"]) * 255).astype(np.uint8)[None, None], cv2.COLOR_RGB2HSV)
    dh = np.abs(hsv[..., 0] - int(ref[0, 0, 0]))
    mask = (np.minimum(dh, 180 - dh) < 5) & (hsv[..., 1] > 110) & (hsv[..., 2] > 50)
    assert mask.sum() > 20, f"the red cube is not visible ({mask.sum()} px)"
    return np.argwhere(mask).mean(axis=0)


def test_scene_camera_agrees_in_the_description_maniskill_and_mujoco(task, twin):
    _, _, params, _ = task
    sim, _ = twin
    k_desc = intrinsic_matrix(SCENE_CAMERA.fovy, SIZE, SIZE)
    np.testing.assert_allclose(params["scene"]["intrinsic_cv"], k_desc, atol=1e-3)
    pos, axes, fovy, _, _ = mj_camera(sim, "scene")
    np.testing.assert_allclose(intrinsic_matrix(fovy, SIZE, SIZE), k_desc, atol=1e-3)
    # Extrinsics: ManiSkill's cam2world_gl (task frame) vs MuJoCo's camera frame (base frame).
    gl = params["scene"]["cam2world_gl"]
    np.testing.assert_allclose(gl[:3, 3], SCENE_CAMERA.eye, atol=1e-5)
    np.testing.assert_allclose(gl[:3, :3], gl_axes(SCENE_CAMERA.axes()), atol=1e-5)
    np.testing.assert_allclose(pos, task_to_base(SCENE_CAMERA.eye), atol=1e-5)
    np.testing.assert_allclose(axes, gl[:3, :3], atol=1e-5)


def test_wrist_camera_sits_on_the_hand_the_same_way(task, twin):
    _, _, params, hand = task
    sim, _ = twin
    np.testing.assert_allclose(params["wrist"]["intrinsic_cv"], intrinsic_matrix(WRIST_CAMERA.fovy, SIZE, SIZE), atol=1e-3)
    # ManiSkill: the camera in the hand frame, from its world poses.
    r_hand = quat_to_matrix(hand[3:])
    gl = params["wrist"]["cam2world_gl"]
    rel_pos, rel_axes = r_hand.T @ (gl[:3, 3] - hand[:3]), r_hand.T @ gl[:3, :3]
    np.testing.assert_allclose(rel_pos, WRIST_CAMERA.pos, atol=1e-4)
    np.testing.assert_allclose(rel_axes, gl_axes(WRIST_CAMERA.axes()), atol=1e-4)
    _, _, fovy, mj_pos, mj_axes = mj_camera(sim, "wrist")
    assert fovy == pytest.approx(WRIST_CAMERA.fovy, abs=1e-6)
    np.testing.assert_allclose(mj_pos, rel_pos, atol=1e-4)
    np.testing.assert_allclose(mj_axes, rel_axes, atol=1e-4)


def test_an_object_lands_on_the_same_pixels_in_both_simulators(task, twin):
    _, images, _, _ = task
    _, img = twin
    ms, mj = red_centroid(images["scene"]), red_centroid(img)
    print(f"cube centroid (row, col): task {ms.round(2)}, twin {mj.round(2)}, off by {np.linalg.norm(ms - mj):.2f} px")
    assert np.linalg.norm(ms - mj) < 3.0
    # Where the description says it is: the cube's centre projected with the scene camera.
    eye, axes = np.asarray(SCENE_CAMERA.eye), SCENE_CAMERA.axes()
    centre = np.array([*OBJECT_XY, OBJECT_SHAPES["cube"].half_height])
    fwd, left, up = axes.T @ (centre - eye)
    k = intrinsic_matrix(SCENE_CAMERA.fovy, SIZE, SIZE)
    projected = np.array([k[1, 2] - k[1, 1] * up / fwd, k[0, 2] - k[0, 0] * left / fwd])
    assert np.linalg.norm(ms - projected) < 3.0 and np.linalg.norm(mj - projected) < 3.0


def test_the_twin_builds_the_tasks_table_and_shapes(twin):
    import mujoco

    sim, _ = twin
    model = sim._sim.model
    gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "obj_capsule")
    assert model.geom_type[gid] == mujoco.mjtGeom.mjGEOM_CAPSULE  # the task's unseen capsule exists here too
    for name, prim in OBJECT_SHAPES.items():
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"obj_{name}")
        np.testing.assert_allclose(model.geom_size[gid][: len(prim.size)], prim.size)
    gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table")
    np.testing.assert_allclose(model.geom_size[gid], TABLE.half_size, atol=1e-5)


def test_the_description_matches_maniskills_table(task):
    env = task[0]
    builder = env.unwrapped_ms.table_scene
    assert builder.table_height == pytest.approx(TABLE.height, abs=1e-6)
    assert builder.table_length == pytest.approx(TABLE.half_size[0] * 2, abs=1e-6)


#: sha256 of task observations (128 x 128, wrist on) rendered at the commit before the scene description
#: (001f7fe): the task must render exactly as the policies were trained.
TASK_IMAGE_SHA256 = {
    ("train", 0, "scene"): "d17c1612866e7234a85e48a13f5567e8cb44c2d6997a9374855880480ff06cb0",
    ("train", 0, "wrist"): "1fb797a74196625fe4308d6a957182bbb936f68b9869f5e9995a7ca2ac4b71aa",
    ("semantic_object", 1, "scene"): "f38e16e8131633c295a7e9eca555835d4757fe351c93aa0b2771a685a929ba30",
    ("semantic_object", 1, "wrist"): "3589fae330c2a945cd18f1fc2652059a1ea444d55860e5241699d15e7af762ed",
}


def test_the_task_renders_exactly_as_before(task):
    env = task[0]
    for split, seed in sorted({(s, n) for s, n, _ in TASK_IMAGE_SHA256}):
        obs, _ = env.reset(seed=seed, options={"split": split})
        for cam in ("scene", "wrist"):
            digest = hashlib.sha256(obs.images[cam].tobytes()).hexdigest()
            assert digest == TASK_IMAGE_SHA256[(split, seed, cam)], (split, seed, cam)
