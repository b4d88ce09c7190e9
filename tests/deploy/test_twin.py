"""The simulated twin: scene layout and conditions, success from object poses, headless cameras, ports."""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.data.config import ConfigError, load_config
from simbridge.deploy.twin import COLOURS, RECEPTACLE_SHAPES, TwinScene, TwinSim

pytestmark = [pytest.mark.robot, pytest.mark.integration]


@pytest.fixture(scope="module")
def twin():
    with TwinSim(seed=0, camera_size=(96, 128)) as sim:
        yield sim


def colour_fraction(img: np.ndarray, rgb: tuple[float, float, float], tol: float = 60) -> float:
    """Fraction of pixels within ``tol`` (0..255 units, per channel) of a colour (shading tolerated)."""
    target = np.array(rgb) * 255
    return float(np.mean(np.all(np.abs(img.astype(float) - target) < tol, axis=-1)))


def test_layouts_are_seeded_and_conditions_apply(twin):
    a, b, a_again = twin.sample_layout(1), twin.sample_layout(2), twin.sample_layout(1)
    assert a == a_again and a != b
    scene = TwinScene(
        object_shapes=("cube",),
        object_colours=("red",),
        receptacle_shapes=("plate",),
        receptacle_colours=("white",),
        tablecloth_colours=("navy",),
        object_xy=(0.55, -0.10),
        receptacle_xy=(0.60, 0.10),
        light_range=(0.6, 0.6),
    )
    layout = twin.reset(seed=7, scene=scene)
    assert layout.instruction == "put the red cube on the white plate"
    assert layout.target_object == "obj_cube" and layout.target_receptacle == "rec_plate"
    twin.wait(0.3)  # let the objects settle on the table
    poses = twin.object_poses()
    np.testing.assert_allclose(poses["obj_cube"][:2], [0.55, -0.10], atol=0.01)
    assert poses["obj_cube"][2] == pytest.approx(0.02, abs=0.005)  # resting on the table top (z = 0)
    np.testing.assert_allclose(poses["rec_plate"][:2], [0.60, 0.10], atol=0.01)
    assert poses["obj_can"][1] > 1.0  # unused items are parked out of view
    img = twin.render("scene")
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    assert colour_fraction(img, COLOURS["navy"]) > 0.2  # the tablecloth fills much of the view
    assert colour_fraction(img, COLOURS["red"], tol=70) > 0.002  # the red cube is visible


def test_success_is_computed_from_object_poses(twin):
    layout = twin.reset(seed=3)
    twin.wait(0.2)
    assert not twin.success()
    rec_xy = layout.receptacles[layout.target_receptacle]["xy"]
    rec_top = 2 * RECEPTACLE_SHAPES[layout.target_receptacle.removeprefix("rec_")][1][-1]
    twin.move_object(layout.target_object, rec_xy, lift=rec_top)
    twin.wait(0.3)
    assert twin.success()
    # Next to the receptacle (not on it) is not a success; neither is a lifted object.
    twin.move_object(layout.target_object, (rec_xy[0] + 0.12, rec_xy[1]))
    twin.wait(0.3)
    assert not twin.success()
    poses = twin.object_poses()
    poses[layout.target_object][:3] = [*rec_xy, 0.2]
    assert not twin.success(poses)


def test_a_maniskill_layout_is_copied_into_the_twin(twin):
    """Same shapes, colours, positions (task -> base frame) and yaws as the task's episode."""
    from simbridge.data.expert import yaw_of
    from simbridge.data.scene import task_to_base
    from simbridge.deploy.twin_scene import twin_layout_from_task
    from simbridge.training.envs.layout import sample_layout
    from simbridge.training.envs.splits import get_split

    task = sample_layout(get_split("semantic_object"), 5)
    fields = dict(instruction=task.instruction, objects=task.objects, receptacles=task.receptacles,
                  object_xy_yaw=task.object_xy_yaw, receptacle_xy=task.receptacle_xy, tablecloth=task.tablecloth)  # fmt: skip
    layout = twin.reset(layout=twin_layout_from_task(**fields, seed=5))
    twin.wait(0.2)
    pose = twin.object_poses()[f"obj_{task.target_object}"]
    x, y, yaw = task.object_xy_yaw[0]
    np.testing.assert_allclose(pose[:2], task_to_base((x, y)), atol=2e-3)
    assert yaw_of(pose[3:]) == pytest.approx(yaw, abs=0.02)
    assert layout.instruction == task.instruction and layout.tablecloth == task.tablecloth[0]
    with pytest.raises(ValueError, match="one body per object shape"):
        twin_layout_from_task(**{**fields, "objects": [task.objects[0]] * 2,
                                 "object_xy_yaw": [task.object_xy_yaw[0]] * 2})  # fmt: skip


def test_cameras_render_the_scene_headless_and_see_changes(twin):
    layout = twin.reset(seed=4)
    twin.wait(0.2)
    before = twin.render("scene")
    wrist = twin.render("wrist", size=(48, 64))
    assert wrist.shape == (48, 64, 3) and wrist.std() > 1  # not a blank frame
    twin.move_object(layout.target_object, (0.70, 0.0))
    twin.wait(0.2)
    after = twin.render("scene")
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 0.05  # the object moved in view
    with pytest.raises(ValueError, match="unknown camera"):
        twin.render("ceiling")


def test_lighting_condition_darkens_the_view(twin):
    bright = TwinScene(light_range=(1.0, 1.0))
    dim = TwinScene(light_range=(0.3, 0.3))
    twin.reset(seed=4, scene=bright)
    lit = twin.render("scene").mean()
    twin.reset(seed=4, scene=dim)
    assert twin.render("scene").mean() < 0.8 * lit


def test_second_twin_coexists_and_ports_are_freed(twin):
    with TwinSim(seed=1) as other:
        assert other.hostname != twin.hostname  # another loopback address, same ports
        host = other.hostname
    with TwinSim(seed=1, hostname_candidates=[host]) as again:  # the address is free again
        assert again.hostname == host
    with pytest.raises(RuntimeError, match="no free loopback address"):
        TwinSim(hostname_candidates=[twin.hostname], bind_timeout_s=0.5).start()


def test_scene_config_is_validated():
    assert load_config(TwinScene, overrides=["object_colours=[purple]"]).object_colours == ("purple",)
    with pytest.raises(ConfigError, match="object_colours"):
        load_config(TwinScene, overrides=["object_colours=[plaid]"])
    with pytest.raises(ConfigError, match="region"):
        load_config(TwinScene, data={"region": [0.7, 0.5, -0.1, 0.1]})
