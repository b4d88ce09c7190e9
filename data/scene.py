"""The one description of the ``PutOnTarget`` scene, shared by the simulation task and the twin.

Instructions name colours and shapes ("put the red cube on the white plate"); the ManiSkill task
(``simbridge.training.envs``) and the franky-sim twin (``simbridge.deploy.twin``) must build the
same table, tablecloth, objects, receptacles, lights and cameras, so both read them from here
(and nowhere else): colours, primitive shapes and sizes, the table, the tablecloth, the lighting,
the robot base, the training spawn regions, and (from :mod:`simbridge.data.scene_cameras`) the
camera poses, fields of view and image sizes.

Everything is in the **task frame**: table centre at the origin, table top z = 0, the robot base
at :data:`ROBOT_BASE_XYZ` facing +x. The twin works in the robot base frame
(:func:`task_to_base`). The ManiSkill task's values are the truth: policies were trained on them.
Plain Python and numpy: no simulator import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple

from simbridge.data.scene_cameras import (
    CAMERAS,
    IMAGE_SIZE,
    SCENE_CAMERA,
    VIEWER_CAMERA,
    WRIST_CAMERA,
    FixedCamera,
    MountedCamera,
    gl_axes,
    intrinsic_matrix,
    look_at_axes,
)

__all__ = [
    "CAMERAS",
    "COLOURS",
    "IMAGE_SIZE",
    "LIGHTING",
    "OBJECT_SHAPES",
    "RECEPTACLE_SHAPES",
    "ROBOT_BASE_XYZ",
    "SCENE_CAMERA",
    "TABLE",
    "TABLECLOTH",
    "TRAIN_REGION",
    "VIEWER_CAMERA",
    "WIDE_REGION",
    "WRIST_CAMERA",
    "DirectionalLight",
    "FixedCamera",
    "Lighting",
    "MountedCamera",
    "Primitive",
    "Region",
    "Table",
    "Tablecloth",
    "gl_axes",
    "intrinsic_matrix",
    "look_at_axes",
    "object_half_height",
    "receptacle_top",
    "task_to_base",
]

#: Named RGB colours (0..1). Names are what instructions say.
COLOURS: dict[str, tuple[float, float, float]] = {
    # objects (train)
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    # objects (unseen)
    "purple": (0.55, 0.20, 0.75),
    "orange": (1.00, 0.50, 0.05),
    # receptacles (train / unseen)
    "white": (0.92, 0.92, 0.92),
    "gray": (0.45, 0.45, 0.48),
    "pink": (0.95, 0.55, 0.70),
    "cyan": (0.10, 0.80, 0.85),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.50, 0.32, 0.18),
    # tablecloths (train / unseen)
    "beige": (0.85, 0.78, 0.62),
    "sky": (0.62, 0.76, 0.88),
    "mint": (0.66, 0.85, 0.70),
    "sand": (0.76, 0.70, 0.55),
    "crimson": (0.55, 0.05, 0.12),
    "navy": (0.08, 0.10, 0.35),
    "olive": (0.40, 0.42, 0.10),
}

# --- frames and regions -----------------------------------------------------------------------

#: The robot base in the task frame (ManiSkill's table-scene Panda pose); it faces +x.
ROBOT_BASE_XYZ: tuple[float, float, float] = (-0.615, 0.0, 0.0)


def task_to_base(xyz: tuple[float, ...]) -> tuple[float, ...]:
    """A task-frame point (2-D or 3-D) in the robot base frame (the base is not rotated)."""
    return tuple(float(v - o) for v, o in zip(xyz, ROBOT_BASE_XYZ, strict=False))


#: Rectangles ``(x_min, x_max, y_min, y_max)`` on the table, task frame.
Region = tuple[float, float, float, float]
#: Where objects and receptacles appear in training.
TRAIN_REGION: Region = (-0.12, 0.06, -0.14, 0.14)
#: The wider area of the unseen-position split (outside TRAIN_REGION).
WIDE_REGION: Region = (-0.20, 0.14, -0.26, 0.26)

# --- objects and receptacles ----------------------------------------------------------------


class Primitive(NamedTuple):
    """A shape built from one primitive, sizes in metres (a ``(kind, size)`` pair).

    * ``box``: half sizes ``(x, y, z)``, resting on its z face.
    * ``cylinder``: ``(radius, half height)``, standing upright (a can).
    * ``disc``: ``(radius, half height)``, standing upright (a flat receptacle).
    * ``capsule``: ``(radius, half length)``, lying on the table along its local x axis.
    """

    kind: Literal["box", "cylinder", "disc", "capsule"]
    size: tuple[float, ...]

    @property
    def half_height(self) -> float:
        """Half its height as it rests on the table."""
        if self.kind == "box":
            return self.size[2]
        if self.kind in ("cylinder", "disc"):
            return self.size[1]
        return self.size[0]  # capsule lying on its side


#: Graspable objects, by the name instructions use.
OBJECT_SHAPES: Mapping[str, Primitive] = MappingProxyType(
    {
        "cube": Primitive("box", (0.02, 0.02, 0.02)),
        "block": Primitive("box", (0.018, 0.03, 0.018)),
        "can": Primitive("cylinder", (0.02, 0.025)),
        "capsule": Primitive("capsule", (0.016, 0.02)),
        "brick": Primitive("box", (0.02, 0.035, 0.015)),
    }
)

#: Flat receptacles (their bottom on the table), by the name instructions use.
RECEPTACLE_SHAPES: Mapping[str, Primitive] = MappingProxyType(
    {
        "plate": Primitive("disc", (0.065, 0.004)),
        "tray": Primitive("box", (0.06, 0.06, 0.006)),
        "mat": Primitive("box", (0.05, 0.08, 0.003)),
        "coaster": Primitive("disc", (0.05, 0.006)),
    }
)


def object_half_height(shape: str) -> float:
    """Height of an object's centre above what it rests on."""
    return OBJECT_SHAPES[shape].half_height


def receptacle_top(shape: str) -> float:
    """Height of a receptacle's top surface above its bottom."""
    return 2 * RECEPTACLE_SHAPES[shape].half_height


# --- table, tablecloth, lights ------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The table: its top at z = 0 spans ``top_min``..``top_max`` (xy); it stands ``height`` tall on the floor."""

    top_min: tuple[float, float]
    top_max: tuple[float, float]
    height: float
    #: Mean colour of the table's wood as a plain colour (ManiSkill paints a texture).
    rgb: tuple[float, float, float]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.top_min[0] + self.top_max[0]) / 2, (self.top_min[1] + self.top_max[1]) / 2)

    @property
    def half_size(self) -> tuple[float, float, float]:
        return (
            (self.top_max[0] - self.top_min[0]) / 2,
            (self.top_max[1] - self.top_min[1]) / 2,
            self.height / 2,
        )


#: ManiSkill's ``TableSceneBuilder`` table (its visual bounding box; the floor is at -height).
TABLE = Table(
    top_min=(-0.7402168, -1.2148621), top_max=(0.4688596, 1.2030163), height=0.9196429, rgb=(0.62, 0.36, 0.22)
)


@dataclass(frozen=True)
class Tablecloth:
    """A thin coloured box on the table top; textures are drawn with tiles on top of it.

    ``half_size`` is (x, y, z) in metres, ``center`` its xy; its bottom is on the table (z = 0).
    A texture colours half of the ``tile_grid`` (rows along x, columns along y) cells with a
    second colour, using ``num_tiles`` tiles as thick as the cloth laid on it.
    """

    half_size: tuple[float, float, float]
    center: tuple[float, float]
    tile_grid: tuple[int, int]
    num_tiles: int


TABLECLOTH = Tablecloth(half_size=(0.30, 0.42, 0.0005), center=(-0.05, 0.0), tile_grid=(6, 8), num_tiles=24)


@dataclass(frozen=True)
class DirectionalLight:
    """A light from infinitely far along ``direction`` (task frame) with ``colour`` (RGB, 1 = nominal)."""

    direction: tuple[float, float, float]
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Lighting:
    """Ambient light plus directional lights; no shadows."""

    ambient: tuple[float, float, float]
    directional: tuple[DirectionalLight, ...]
    shadows: bool = False


#: ManiSkill's default scene lighting (``BaseEnv._load_lighting``), which the task keeps.
LIGHTING = Lighting(
    ambient=(0.3, 0.3, 0.3),
    directional=(
        DirectionalLight((1.0, 1.0, -1.0), (1.0, 1.0, 1.0)),
        DirectionalLight((0.0, 0.0, -1.0), (1.0, 1.0, 1.0)),
    ),
)
