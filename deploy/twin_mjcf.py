"""The twin's MuJoCo scene, built from the one scene description (:mod:`simbridge.data.scene`).

:func:`build_scene` adds to franky-sim's MJCF tree (before the model is compiled) what the ManiSkill
task builds in SAPIEN: the table, the tablecloth, one body per object and receptacle shape (parked
out of view until an episode uses it), the task's lights and its "scene" and "wrist" cameras.
Everything is placed in the robot base frame (:func:`~simbridge.data.scene.task_to_base`).

Simulator conventions translated here:

* SAPIEN cameras look along +x with y left, z up; MuJoCo cameras look along -z with x right, y up
  (``xyaxes`` gives the right and up axes): :func:`~simbridge.data.scene.gl_axes`.
* SAPIEN cylinders lie along x (the task turns them upright); MuJoCo cylinders and capsules stand
  along z, so discs and cans need no turn and the lying capsule is turned onto x.
* MuJoCo's fixed-function lighting adds ambient and diffuse terms without SAPIEN's physically based
  shading: the task's lights are scaled by :data:`MUJOCO_LIGHT_GAIN` so a flat tablecloth renders
  about as bright as in the task.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import numpy as np

from simbridge.data.scene import (
    CAMERAS,
    COLOURS,
    LIGHTING,
    OBJECT_SHAPES,
    RECEPTACLE_SHAPES,
    TABLE,
    TABLECLOTH,
    FixedCamera,
    Primitive,
    gl_axes,
    task_to_base,
)

#: MuJoCo diffuse light per unit of the task's light colour (see the module docstring).
MUJOCO_LIGHT_GAIN = 0.5
#: Unused items wait on the floor far to the side, out of view (base frame y).
PARK_Y = 2.0
#: Largest image the twin renders offscreen (MuJoCo's framebuffer), width x height.
OFFSCREEN_SIZE = (640, 480)
#: MuJoCo prefixes franky-sim's first robot's bodies with this.
ROBOT_PREFIX = "robot0_"
#: Turns MuJoCo's z-axis primitive onto x (a capsule lying along its local x, as in the task).
_Z_TO_X = (math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0)


def fmt(v: Iterable[float]) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


def xyaxes(sapien_axes: np.ndarray) -> str:
    """MuJoCo camera ``xyaxes`` (right, up) of a camera with SAPIEN axes (columns forward, left, up)."""
    gl = gl_axes(sapien_axes)
    return " ".join(f"{v:.9f}" for v in (*gl[:, 0], *gl[:, 1]))


def primitive_geom(prim: Primitive) -> dict[str, str]:
    """MJCF ``<geom>`` attributes (type, size, orientation) of a scene primitive centred on its body."""
    if prim.kind == "box":
        return {"type": "box", "size": fmt(prim.size)}
    if prim.kind in ("cylinder", "disc"):
        return {"type": "cylinder", "size": fmt(prim.size)}
    return {"type": "capsule", "size": fmt(prim.size), "quat": fmt(_Z_TO_X)}


def object_park_xyz(name: str) -> tuple[float, float, float]:
    """Where an unused object waits (base frame): on the floor, out of view."""
    i = list(OBJECT_SHAPES).index(name)
    return (0.0, PARK_Y + 0.2 * i, -TABLE.height + OBJECT_SHAPES[name].half_height + 0.001)


def receptacle_park_xyz(name: str) -> tuple[float, float, float]:
    """Where an unused receptacle waits (base frame): on the floor, out of view."""
    i = list(RECEPTACLE_SHAPES).index(name)
    return (0.3, -PARK_Y - 0.2 * i, -TABLE.height + 0.001)


def _lights(scene: ET.Element, wb: ET.Element) -> None:
    """Replace franky-sim's lights with the task's: ambient (as the headlight's) plus directional lights."""
    vis = scene.find("visual")
    head = vis.find("headlight")
    if head is None:
        head = ET.SubElement(vis, "headlight")
    head.set("ambient", fmt(LIGHTING.ambient))
    head.set("diffuse", "0 0 0")
    head.set("specular", "0 0 0")
    for light in wb.findall("light"):
        wb.remove(light)
    for k, light in enumerate(LIGHTING.directional):
        ET.SubElement(
            wb,
            "light",
            name=f"task_light_{k}",
            directional="true",
            pos="0 0 3",
            dir=fmt(light.direction),
            diffuse=fmt(np.asarray(light.colour) * MUJOCO_LIGHT_GAIN),
            specular="0 0 0",
            castshadow="true" if LIGHTING.shadows else "false",
        )


def _cameras(wb: ET.Element) -> None:
    for cam in CAMERAS.values():
        attrs = {"name": cam.name, "fovy": f"{math.degrees(cam.fovy):.6f}"}
        if isinstance(cam, FixedCamera):
            ET.SubElement(wb, "camera", pos=fmt(task_to_base(cam.eye)), xyaxes=xyaxes(cam.axes()), **attrs)
            continue
        link = wb.find(f".//body[@name='{ROBOT_PREFIX}{cam.link}']")
        if link is None:
            raise RuntimeError(f"franky-sim's model has no body {ROBOT_PREFIX}{cam.link} for the {cam.name} camera")
        ET.SubElement(link, "camera", pos=fmt(cam.pos), xyaxes=xyaxes(cam.axes()), **attrs)


def build_scene(sim: Any) -> None:
    """Add the task's scene to franky-sim's MJCF tree (``sim.scene``, ``sim.worldbody``) before it compiles."""
    scene, wb = sim.scene, sim.worldbody
    quality = scene.find("visual/quality")
    if quality is not None:  # cheaper offscreen rendering (software GL)
        quality.set("shadowsize", "1024")
        quality.set("offsamples", "0")
    ET.SubElement(scene.find("visual"), "global", offwidth=str(OFFSCREEN_SIZE[0]), offheight=str(OFFSCREEN_SIZE[1]))
    # Grasps held by friction: MuJoCo's default pyramidal cones with impratio 1 let a squeezed object
    # creep out of the fingers while the arm moves; elliptic cones with impratio 10 are the setting
    # MuJoCo's documentation recommends against such slip.
    option = scene.find("option")
    if option is None:
        option = ET.SubElement(scene, "option")
    option.set("cone", "elliptic")
    option.set("impratio", "10")
    _lights(scene, wb)
    ground = wb.find("geom[@name='ground']")
    if ground is not None:  # the robot stands on the table top (z = 0), the floor is below
        ground.set("pos", f"0 0 {-TABLE.height}")
    table = ET.SubElement(wb, "body", name="table", pos=fmt((*task_to_base(TABLE.center), -TABLE.height / 2)))
    ET.SubElement(table, "geom", name="table", type="box", size=fmt(TABLE.half_size), rgba=fmt((*TABLE.rgb, 1)))
    ET.SubElement(
        wb,
        "geom",
        name="tablecloth",
        type="box",
        size=fmt(TABLECLOTH.half_size),
        pos=fmt((*task_to_base(TABLECLOTH.center), TABLECLOTH.half_size[2])),
        rgba=fmt((*COLOURS["beige"], 1)),
        contype="0",
        conaffinity="0",
    )
    for name, prim in OBJECT_SHAPES.items():
        body = ET.SubElement(wb, "body", name=f"obj_{name}", pos=fmt(object_park_xyz(name)))
        ET.SubElement(body, "freejoint", name=f"obj_{name}_joint")
        ET.SubElement(
            body,
            "geom",
            name=f"obj_{name}",
            **primitive_geom(prim),
            density="500",
            friction="1.5 0.01 0.001",
            rgba="0.8 0.8 0.8 1",
            condim="4",
        )
    for name, prim in RECEPTACLE_SHAPES.items():
        body = ET.SubElement(wb, "body", name=f"rec_{name}", pos=fmt(receptacle_park_xyz(name)))
        ET.SubElement(body, "freejoint", name=f"rec_{name}_joint")
        ET.SubElement(  # the body's origin is the receptacle's bottom centre, as in the task
            body,
            "geom",
            name=f"rec_{name}",
            **primitive_geom(prim),
            pos=f"0 0 {prim.half_height}",
            density="800",
            rgba="0.9 0.9 0.9 1",
        )
    _cameras(wb)
