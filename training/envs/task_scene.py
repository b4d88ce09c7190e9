"""The scene pieces of ``PutOnTarget-v1``: shape pools, the tablecloth and its tiles, colours.

Split out of :mod:`~simbridge.training.envs.put_on_target` (which owns the episodes, success and
reward). Everything here is built from the one scene description, :mod:`simbridge.data.scene`.

**Colours per sub-scene.** Items are recoloured per episode through their render materials. In a
batched (GPU) scene ManiSkill's ``ActorBuilder.build`` makes one entity per sub-scene from the
*same* visual records, so every sub-scene's render shapes share one ``RenderMaterial`` object and
recolouring env ``i`` would recolour all of them (``tests/training/test_envs_batched.py`` shows the
sharing on this CPU). :func:`own_materials_per_sub_scene` gives every entity after the first its
own copies; the first keeps the original material objects, so a one-env scene is built exactly as
before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sapien
import torch
from mani_skill.utils.structs.pose import Pose

from simbridge.data.scene import COLOURS, OBJECT_SHAPES, RECEPTACLE_SHAPES, TABLE, TABLECLOTH
from simbridge.training.envs.layout import object_half_height

_TABLECLOTH_HALF = TABLECLOTH.half_size
_TABLECLOTH_CENTER = TABLECLOTH.center
#: The tablecloth texture is drawn with tiles (SAPIEN primitives have no usable UVs for an image texture).
_TILE_GRID = TABLECLOTH.tile_grid
_NUM_TILES = TABLECLOTH.num_tiles  # both patterns colour half of the 6 x 8 cells
# Rotates a primitive's x axis (SAPIEN's cylinder axis) onto z: discs and cans stand upright.
_X_TO_Z = (math.sqrt(0.5), 0.0, -math.sqrt(0.5), 0.0)


def tile_cells(kind: str) -> list[tuple[int, int]]:
    """Grid cells (row along x, column along y) covered by the second colour of a texture."""
    if kind == "checker":
        return [(i, j) for i in range(_TILE_GRID[0]) for j in range(_TILE_GRID[1]) if (i + j) % 2 == 0]
    if kind == "stripes":
        return [(i, j) for i in range(_TILE_GRID[0]) for j in range(_TILE_GRID[1]) if j % 2 == 0]
    return []


def copy_material(m: sapien.render.RenderMaterial) -> sapien.render.RenderMaterial:
    """A new material with ``m``'s scalar properties (the task's materials have no textures)."""
    return sapien.render.RenderMaterial(
        emission=list(m.emission), base_color=list(m.base_color), specular=m.specular,
        roughness=m.roughness, metallic=m.metallic, transmission=m.transmission, ior=m.ior,
        transmission_roughness=m.transmission_roughness,
    )  # fmt: skip


def own_materials_per_sub_scene(builder: Any) -> Any:
    """Make ``builder`` give each entity after the first its own copies of the visual materials."""
    build_entity = builder.build_entity
    built = [0]

    def build_entity_with_own_materials():
        if built[0] > 0:
            for record in builder.visual_records:
                if record.material is not None:
                    record.material = copy_material(record.material)
        built[0] += 1
        return build_entity()

    builder.build_entity = build_entity_with_own_materials
    return builder


def material(roughness: float = 0.6) -> sapien.render.RenderMaterial:
    return sapien.render.RenderMaterial(base_color=[0.8, 0.8, 0.8, 1.0], roughness=roughness, metallic=0.0)


def render_materials(actor: Any, env_i: int) -> list:
    """The render materials of env ``env_i``'s entity of ``actor`` ([] without a renderer)."""
    entity = actor._objs[env_i] if len(actor._objs) > 1 else actor._objs[0]
    comp = entity.find_component_by_type(sapien.render.RenderBodyComponent)
    if comp is None:  # no renderer (e.g. render_backend="none")
        return []
    return [shape.material for shape in comp.render_shapes]


def set_colour(actor: Any, env_i: int, rgb: Any) -> None:
    for mat in render_materials(actor, env_i):
        mat.base_color = [*rgb, 1.0]


def park_xyz(kind: str, name: str) -> list[float]:
    """Off-table spot on the floor (out of the cameras' view) for items not in the episode."""
    names = list(OBJECT_SHAPES) if kind == "obj" else list(RECEPTACLE_SHAPES)
    i = names.index(name)
    floor = -TABLE.height  # TableSceneBuilder puts the floor one table height below the top
    lift = object_half_height(name) + 0.002 if kind == "obj" else 0.0
    return [-1.6 - 0.3 * i, 1.5 if kind == "obj" else -1.5, floor + lift]


def build_object(scene: Any, name: str) -> Any:
    kind, size = OBJECT_SHAPES[name]
    b = own_materials_per_sub_scene(scene.create_actor_builder())
    mat = material()
    if kind == "box":
        b.add_box_collision(half_size=list(size), density=500)
        b.add_box_visual(half_size=list(size), material=mat)
    elif kind == "cylinder":
        pose = sapien.Pose(q=list(_X_TO_Z))
        b.add_cylinder_collision(pose=pose, radius=size[0], half_length=size[1], density=500)
        b.add_cylinder_visual(pose=pose, radius=size[0], half_length=size[1], material=mat)
    else:  # capsule lying along its local x axis
        b.add_capsule_collision(radius=size[0], half_length=size[1], density=500)
        b.add_capsule_visual(radius=size[0], half_length=size[1], material=mat)
    b.initial_pose = sapien.Pose(p=park_xyz("obj", name))
    return b.build(name=f"object_{name}")


def build_receptacle(scene: Any, name: str) -> Any:
    kind, size = RECEPTACLE_SHAPES[name]
    b = own_materials_per_sub_scene(scene.create_actor_builder())
    mat = material(0.8)
    if kind == "box":
        pose = sapien.Pose(p=[0, 0, size[2]])
        b.add_box_collision(pose=pose, half_size=list(size))
        b.add_box_visual(pose=pose, half_size=list(size), material=mat)
    else:
        pose = sapien.Pose(p=[0, 0, size[1]], q=list(_X_TO_Z))
        b.add_cylinder_collision(pose=pose, radius=size[0], half_length=size[1])
        b.add_cylinder_visual(pose=pose, radius=size[0], half_length=size[1], material=mat)
    b.initial_pose = sapien.Pose(p=park_xyz("rec", name))
    return b.build_kinematic(name=f"receptacle_{name}")


class Tablecloth:
    """The tablecloth (one kinematic box) and the tiles drawing its checker / stripes texture."""

    def __init__(self, scene: Any):
        b = own_materials_per_sub_scene(scene.create_actor_builder())
        b.add_box_visual(
            half_size=list(_TABLECLOTH_HALF),
            material=sapien.render.RenderMaterial(base_color=[*COLOURS["beige"], 1]),
        )
        b.initial_pose = sapien.Pose(p=[*_TABLECLOTH_CENTER, _TABLECLOTH_HALF[2]])
        self.cloth = b.build_kinematic(name="tablecloth")
        self.tile_half = (_TABLECLOTH_HALF[0] / _TILE_GRID[0], _TABLECLOTH_HALF[1] / _TILE_GRID[1], 0.0005)
        self.tiles = []
        for k in range(_NUM_TILES):
            b = own_materials_per_sub_scene(scene.create_actor_builder())
            b.add_box_visual(half_size=list(self.tile_half), material=material(0.9))
            b.initial_pose = sapien.Pose(p=[0.0, 0.0, -0.1 - 0.002 * k])
            self.tiles.append(b.build_kinematic(name=f"tablecloth_tile_{k}"))

    def tile_poses(self, kind: str) -> list[list[float]]:
        cells = tile_cells(kind)
        hx, hy, hz = self.tile_half
        x0 = _TABLECLOTH_CENTER[0] - _TABLECLOTH_HALF[0] + hx
        y0 = _TABLECLOTH_CENTER[1] - _TABLECLOTH_HALF[1] + hy
        poses = []
        for k in range(_NUM_TILES):
            if k < len(cells):
                i, j = cells[k]
                poses.append([x0 + 2 * hx * i, y0 + 2 * hy * j, 2 * _TABLECLOTH_HALF[2] + hz, 1, 0, 0, 0])
            else:  # hidden inside the table top
                poses.append([0.0, 0.0, -0.1 - 0.002 * k, 1, 0, 0, 0])
        return poses

    def place(self, kinds: list[str]) -> None:
        """Tiles of the envs being reset (one texture kind per env, in the reset's env order)."""
        per_env = [self.tile_poses(kind) for kind in kinds]
        for k, tile in enumerate(self.tiles):
            tile.set_pose(Pose.create(torch.as_tensor([p[k] for p in per_env], dtype=torch.float32)))

    def paint(self, env_i: int, colours: tuple[str, ...], jitter: np.ndarray | None = None) -> None:
        """Colour env ``env_i``'s cloth (and tiles, for a two-colour texture), optionally jittered."""
        rgb = [np.asarray(COLOURS[c]) for c in colours]
        if jitter is not None:
            rgb = [np.clip(c + jitter, 0, 1) for c in rgb]
        for mat in render_materials(self.cloth, env_i):
            mat.base_color = [*rgb[0], 1.0]
        if len(rgb) > 1:
            for tile in self.tiles:
                for mat in render_materials(tile, env_i):
                    mat.base_color = [*rgb[1], 1.0]
