"""Episode layouts of ``PutOnTarget``: what one episode looks like, sampled from (split, seed).

Pure numpy (no simulator import), so tests and tools can inspect what a split randomizes
without starting SAPIEN. Shapes, sizes and the robot base are the scene's
(:mod:`simbridge.data.scene`). :class:`~simbridge.training.envs.put_on_target.PutOnTargetEnv` only
applies a layout to its scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simbridge.data.scene import (  # the scene description; the names are re-exported here
    OBJECT_SHAPES,
    RECEPTACLE_SHAPES,
    ROBOT_BASE_XYZ,
    Region,
    object_half_height,
    receptacle_top,
)
from simbridge.training.envs.splits import Split

__all__ = [
    "REST_QPOS",
    "ROBOT_BASE_XYZ",
    "EpisodeLayout",
    "footprint_radius",
    "object_half_height",
    "receptacle_top",
    "sample_layout",
]

#: Panda "rest" keyframe (7 arm joints + 2 fingers).
REST_QPOS = np.array([0.0, np.pi / 8, 0.0, -np.pi * 5 / 8, 0.0, np.pi * 3 / 4, np.pi / 4, 0.04, 0.04])
#: Joints that the unseen-robot-pose split offsets (shoulder yaw, shoulder pitch, elbow, wrist pitch).
_OFFSET_JOINTS = (0, 1, 3, 5)


@dataclass
class EpisodeLayout:
    """What one episode looks like: sampled in ``_initialize_episode`` from (split, seed)."""

    seed: int
    instruction: str
    objects: list[tuple[str, str]]  # (shape, colour); index 0 is the target
    receptacles: list[tuple[str, str]]  # index 0 is the target
    object_xy_yaw: list[tuple[float, float, float]]
    receptacle_xy: list[tuple[float, float]]
    tablecloth: tuple[str, ...]  # colour name(s); two for a checker/stripes texture
    robot_qpos: np.ndarray
    moved_to: tuple[float, float] | None = None  # set when the object was moved mid-episode
    extra: dict = field(default_factory=dict)

    @property
    def target_object(self) -> str:
        return self.objects[0][0]

    @property
    def target_receptacle(self) -> str:
        return self.receptacles[0][0]


def _in_region(xy: np.ndarray, r: Region) -> bool:
    return r[0] <= xy[0] <= r[1] and r[2] <= xy[1] <= r[3]


def footprint_radius(kind: str, shape: str) -> float:
    """Radius of a circle that (nearly) covers an item's footprint, for non-overlapping placement."""
    if kind == "obj":
        _, size = OBJECT_SHAPES[shape]
        return 0.03 if max(size[:2]) < 0.031 else 0.04
    prim, size = RECEPTACLE_SHAPES[shape]
    return size[0] if prim == "disc" else 0.85 * math.hypot(size[0], size[1])


_CLEARANCE = 0.015  # m between the footprints of any two items


def _sample_xy(
    rng: np.random.Generator,
    region: Region,
    exclude: Region | None,
    radius: float,
    taken: list,
    tries: int = 100,
) -> np.ndarray | None:
    """A point in ``region`` (outside ``exclude``) clear of every ``(xy, radius)`` in ``taken``; None if none found."""
    for _ in range(tries):
        xy = np.array([rng.uniform(region[0], region[1]), rng.uniform(region[2], region[3])])
        if exclude is not None and _in_region(xy, exclude):
            continue
        if all(np.linalg.norm(xy - t) >= radius + r + _CLEARANCE for t, r in taken):
            return xy
    return None


def _place_all(rng: np.random.Generator, split: Split, objects: list, receptacles: list):
    """Place receptacles then objects without overlaps; restart the whole layout when stuck."""
    for _ in range(50):
        taken: list = []
        rec_xy, obj_xy = [], []
        for shape, _ in receptacles:
            r = footprint_radius("rec", shape)
            xy = _sample_xy(rng, split.receptacle_region, split.exclude_region, r, taken)
            if xy is None:
                break
            taken.append((xy, r))
            rec_xy.append((float(xy[0]), float(xy[1])))
        else:
            for shape, _ in objects:
                r = footprint_radius("obj", shape)
                xy = _sample_xy(rng, split.object_region, split.exclude_region, r, taken)
                if xy is None:
                    break
                taken.append((xy, r))
                obj_xy.append((float(xy[0]), float(xy[1]), float(rng.uniform(-np.pi / 4, np.pi / 4))))
            else:
                return rec_xy, obj_xy, taken
    raise RuntimeError(
        f"split {split.name!r}: cannot place {len(receptacles)} receptacles and {len(objects)} objects "
        f"without overlap in regions {split.receptacle_region} / {split.object_region}; widen the regions"
    )


def sample_layout(split: Split, seed: int) -> EpisodeLayout:
    """Sample one episode of ``split`` (pure numpy; the simulator only applies it)."""
    rng = np.random.default_rng([split.salt, int(seed)])
    obj_shapes = rng.choice(len(split.object_shapes), size=split.num_objects, replace=False)
    objects: list[tuple[str, str]] = []
    for i in obj_shapes:
        objects.append((split.object_shapes[i], str(rng.choice(split.object_colours))))
    if split.num_objects > 1:  # distractors: a different colour than the target, so the name is unique
        colours = rng.choice(len(split.object_colours), size=split.num_objects, replace=False)
        objects = [(s, split.object_colours[c]) for (s, _), c in zip(objects, colours, strict=True)]
    rec_shapes = rng.choice(len(split.receptacle_shapes), size=split.num_receptacles, replace=False)
    rec_colours = rng.choice(len(split.receptacle_colours), size=split.num_receptacles, replace=False)
    receptacles = [
        (split.receptacle_shapes[s], split.receptacle_colours[c])
        for s, c in zip(rec_shapes, rec_colours, strict=True)
    ]
    receptacle_xy, object_xy_yaw, taken = _place_all(rng, split, objects, receptacles)
    texture = split.tablecloth_texture
    if texture == "mixed":
        texture = str(rng.choice(["checker", "stripes"]))
    if texture == "none":
        tablecloth: tuple[str, ...] = (str(rng.choice(split.tablecloth_colours)),)
    else:
        pair = rng.choice(len(split.tablecloth_colours), size=2, replace=False)
        tablecloth = tuple(split.tablecloth_colours[i] for i in pair)
    qpos = REST_QPOS.copy()
    qpos[:7] += rng.normal(0.0, split.robot_init_noise, 7)
    if split.robot_init_offset > 0:
        signs = rng.choice([-1.0, 1.0], size=len(_OFFSET_JOINTS))
        qpos[list(_OFFSET_JOINTS)] += (
            signs * split.robot_init_offset * rng.uniform(0.7, 1.0, len(_OFFSET_JOINTS))
        )
    template = str(rng.choice(split.phrasings))
    obj_name = f"{objects[0][1]} {objects[0][0]}"
    rec_name = f"{receptacles[0][1]} {receptacles[0][0]}"
    layout = EpisodeLayout(
        seed=int(seed),
        instruction=template.format(obj=obj_name, rec=rec_name),
        objects=objects,
        receptacles=receptacles,
        object_xy_yaw=object_xy_yaw,
        receptacle_xy=receptacle_xy,
        tablecloth=tablecloth,
        robot_qpos=qpos,
    )
    if split.move_object_at_step >= 0:  # where the object will jump to, sampled now for reproducibility
        r = footprint_radius("obj", objects[0][0])
        others = taken[: len(receptacles)] + taken[len(receptacles) + 1 :]
        own = np.asarray(object_xy_yaw[0][:2])
        for _ in range(50):  # at least 8 cm away from where it was
            xy = _sample_xy(rng, split.object_region, split.exclude_region, r, others)
            if xy is not None and np.linalg.norm(xy - own) > 0.08:
                layout.extra["move_to"] = (float(xy[0]), float(xy[1]))
                break
    layout.extra["texture"] = texture
    layout.extra["tablecloth_jitter_seed"] = int(rng.integers(2**31))
    return layout
