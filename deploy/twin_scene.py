"""What an episode in the franky-sim twin looks like: :class:`TwinScene` (the conditions) and :class:`TwinLayout`.

The fixed scene (table, tablecloth, shapes and sizes, lights, cameras) is the task's, read from
:mod:`simbridge.data.scene`; a :class:`TwinScene` chooses what may vary between episodes
(palettes, spawn region, distractors, light intensity, fixed positions) and
:func:`sample_twin_layout` draws one episode from it. Plain numpy: no MuJoCo import, so configs
and evaluation protocols can be checked cheaply.

The twin works in the robot **base** frame: the table top is z = 0 and the table centre is at
x = :data:`TASK_TO_BASE_X` (the task frame shifted by the robot base, :func:`simbridge.data.scene.task_to_base`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbridge.data.config import config
from simbridge.data.scene import (
    COLOURS,
    OBJECT_SHAPES,
    RECEPTACLE_SHAPES,
    ROBOT_BASE_XYZ,
    TRAIN_REGION,
    Region,
    task_to_base,
)

#: Adding it converts task-frame x to base-frame x (the base is at ``ROBOT_BASE_XYZ`` in the task).
TASK_TO_BASE_X = -ROBOT_BASE_XYZ[0]
#: Items of one layout stand at least this far apart (m), when the region allows.
MIN_SEPARATION = 0.13


def task_region_to_base(region: Region) -> Region:
    """A task-frame ``(x_min, x_max, y_min, y_max)`` rectangle in the base frame."""
    x0, x1, y0, y1 = region
    (bx0, by0), (bx1, by1) = task_to_base((x0, y0)), task_to_base((x1, y1))
    return (bx0, bx1, by0, by1)


@config
class TwinScene:
    """What an episode in the twin may look like. Fixed values (``*_xy``, ``light``) override sampling.

    Palettes are colour / shape names from :data:`COLOURS`, :data:`OBJECT_SHAPES`,
    :data:`RECEPTACLE_SHAPES`; the region is ``(x_min, x_max, y_min, y_max)`` in the base frame
    (default: the task's training region). Cameras, sizes and lights are the task's
    (:mod:`simbridge.data.scene`), not a condition.
    """

    object_shapes: tuple[str, ...] = ("cube", "can")
    object_colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    receptacle_shapes: tuple[str, ...] = ("plate", "tray")
    receptacle_colours: tuple[str, ...] = ("white", "gray")
    tablecloth_colours: tuple[str, ...] = ("beige",)
    region: tuple[float, float, float, float] = task_region_to_base(TRAIN_REGION)
    num_distractors: int = 0
    #: Light intensity range (1 = the task's nominal lighting); sampled per episode.
    light_range: tuple[float, float] = (1.0, 1.0)
    object_xy: tuple[float, float] | None = None
    receptacle_xy: tuple[float, float] | None = None
    instruction_template: str = "put the {obj} on the {rec}"

    def __post_init__(self) -> None:
        for fld, names, allowed in (
            ("object_shapes", self.object_shapes, OBJECT_SHAPES),
            ("receptacle_shapes", self.receptacle_shapes, RECEPTACLE_SHAPES),
            ("object_colours", self.object_colours, COLOURS),
            ("receptacle_colours", self.receptacle_colours, COLOURS),
            ("tablecloth_colours", self.tablecloth_colours, COLOURS),
        ):
            bad = [n for n in names if n not in allowed]
            if not names or bad:
                raise ValueError(f"{fld}: a non-empty list of {sorted(allowed)}, got unknown {bad}")
        x0, x1, y0, y1 = self.region
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"region: (x_min, x_max, y_min, y_max) with min < max, got {self.region}")
        if not (0 <= self.num_distractors < min(len(self.object_shapes), len(self.object_colours))):
            raise ValueError("num_distractors: fewer than the number of object shapes and colours")
        lo, hi = self.light_range
        if not (0 < lo <= hi):
            raise ValueError(f"light_range: 0 < low <= high, got {self.light_range}")


@dataclass
class TwinLayout:
    """One episode's scene, as applied by :meth:`~simbridge.deploy.twin.TwinSim.reset`."""

    instruction: str
    target_object: str  # body name, e.g. "obj_cube"
    target_receptacle: str  # body name, e.g. "rec_plate"
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # body -> {colour, xy, yaw (optional, rad)}
    receptacles: dict[str, dict[str, Any]] = field(default_factory=dict)
    tablecloth: str = "beige"
    light: float = 1.0
    seed: int | None = None


def sample_twin_layout(sc: TwinScene, seed: int | None) -> TwinLayout:
    """Draw an episode layout from ``sc`` (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    n_obj = 1 + sc.num_distractors
    shapes = rng.choice(len(sc.object_shapes), size=n_obj, replace=False)
    colours = rng.choice(len(sc.object_colours), size=n_obj, replace=False)
    rec_shape = sc.receptacle_shapes[int(rng.integers(len(sc.receptacle_shapes)))]
    rec_colour = sc.receptacle_colours[int(rng.integers(len(sc.receptacle_colours)))]
    x0, x1, y0, y1 = sc.region
    fixed = [p for p in (sc.receptacle_xy, sc.object_xy) if p is not None]
    points: list[tuple[float, float]] = []
    for i in range(n_obj + 1):  # receptacle first, then objects
        given = sc.receptacle_xy if i == 0 else sc.object_xy if i == 1 else None
        if given is not None:
            points.append(tuple(given))
            continue
        best, best_d = None, -1.0
        for _ in range(200):  # rejection sampling; keep the most separated draw if the region is tight
            p = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
            d = min((math.dist(p, q) for q in points + fixed), default=1.0)
            if d >= MIN_SEPARATION:
                best = p
                break
            if d > best_d:
                best, best_d = p, d
        points.append(best)
    objects = {
        f"obj_{sc.object_shapes[s]}": {"colour": sc.object_colours[c], "xy": points[1 + k]}
        for k, (s, c) in enumerate(zip(shapes, colours, strict=True))
    }
    target_obj = f"obj_{sc.object_shapes[shapes[0]]}"
    obj_name = f"{sc.object_colours[colours[0]]} {sc.object_shapes[shapes[0]]}"
    rec_name = f"{rec_colour} {rec_shape}"
    lo, hi = sc.light_range
    return TwinLayout(
        instruction=sc.instruction_template.format(obj=obj_name, rec=rec_name),
        target_object=target_obj,
        target_receptacle=f"rec_{rec_shape}",
        objects=objects,
        receptacles={f"rec_{rec_shape}": {"colour": rec_colour, "xy": points[0]}},
        tablecloth=sc.tablecloth_colours[int(rng.integers(len(sc.tablecloth_colours)))],
        light=float(rng.uniform(lo, hi)),
        seed=seed,
    )


def twin_layout_from_task(
    *,
    instruction: str,
    objects: list[tuple[str, str]],
    receptacles: list[tuple[str, str]],
    object_xy_yaw: list[tuple[float, float, float]],
    receptacle_xy: list[tuple[float, float]],
    tablecloth: tuple[str, ...],
    seed: int | None = None,
) -> TwinLayout:
    """The twin's copy of a ManiSkill episode layout (the fields of ``training.envs.layout.EpisodeLayout``,
    task frame): same shapes, colours, positions and yaws, in the base frame; index 0 is the target.

    The twin has one body per shape, so a layout naming a shape twice cannot be copied; a two-colour
    tablecloth texture becomes its first colour.
    """
    for kind, items in (("object", objects), ("receptacle", receptacles)):
        shapes = [shape for shape, _ in items]
        if len(set(shapes)) != len(shapes):
            raise ValueError(f"the twin has one body per {kind} shape; this layout repeats one: {shapes}")
    return TwinLayout(
        instruction=instruction,
        target_object=f"obj_{objects[0][0]}",
        target_receptacle=f"rec_{receptacles[0][0]}",
        objects={f"obj_{shape}": {"colour": colour, "xy": task_to_base((x, y)), "yaw": float(yaw)}
                 for (shape, colour), (x, y, yaw) in zip(objects, object_xy_yaw, strict=True)},
        receptacles={f"rec_{shape}": {"colour": colour, "xy": task_to_base(xy)}
                     for (shape, colour), xy in zip(receptacles, receptacle_xy, strict=True)},
        tablecloth=tablecloth[0],
        seed=seed,
    )
