"""Named, seeded evaluation splits of the PutOnTarget task family (RL4VLA's protocol).

A :class:`Split` is a frozen description of everything the task randomizes: which shapes,
colours and receptacles can appear, where they are placed, how the robot starts, how the
tablecloth looks, which instruction phrasings are used and what perturbations happen during
the episode. ``train`` is the training distribution; every other split changes one factor
along one of RL4VLA's three axes:

* ``vision``    — unseen tablecloth colours / textures, a tablecloth that changes every step,
  Gaussian image noise. Geometry and language are as in training.
* ``semantics`` — unseen objects (shapes and colours), unseen receptacles, unseen instruction
  phrasings, several objects on the table (the instruction names one), distractor receptacles.
* ``execution`` — unseen object/receptacle positions, unseen robot initial pose, the object
  moved to a new place mid-episode.

An episode is fully determined by ``(split, episode_seed)``: the task seeds its generator
with ``[split.salt, episode_seed]``, so the same seed gives different layouts on different
splits but the same layout every time it is run on one split.

Shapes, sizes, colours and the spawn regions are the scene's (:mod:`simbridge.data.scene`, shared
with the twin); they are re-exported here. This module is plain Python (no simulator import) so
configs and tests can list splits cheaply.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Literal

from simbridge.data.scene import (  # the scene description; re-exported here for existing imports
    COLOURS,
    OBJECT_SHAPES,
    RECEPTACLE_SHAPES,
    TRAIN_REGION,
    WIDE_REGION,
    Region,
)

Category = Literal["train", "vision", "semantics", "execution"]
CATEGORIES: tuple[str, ...] = ("train", "vision", "semantics", "execution")


TRAIN_PHRASINGS: tuple[str, ...] = (
    "put the {obj} on the {rec}",
    "place the {obj} on the {rec}",
)
UNSEEN_PHRASINGS: tuple[str, ...] = (
    "pick up the {obj} and set it down on the {rec}",
    "move the {obj} onto the {rec}",
    "could you transfer the {obj} to the {rec}",
    "the {obj} belongs on the {rec}, put it there",
)

@dataclass(frozen=True)
class Split:
    """One named, seeded configuration of the task's randomization (see module docstring)."""

    name: str
    category: Category
    description: str
    salt: int = 0  # mixed into every episode seed; derived from the name when 0
    object_shapes: tuple[str, ...] = ("cube", "block", "can")
    object_colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    receptacle_shapes: tuple[str, ...] = ("plate", "tray")
    receptacle_colours: tuple[str, ...] = ("white", "gray", "pink")
    tablecloth_colours: tuple[str, ...] = ("beige", "sky", "mint", "sand")
    tablecloth_texture: Literal["none", "checker", "stripes", "mixed"] = "none"  # mixed: per episode
    dynamic_texture: float = 0.0  # per-step colour jitter amplitude of the tablecloth (0..1)
    image_noise_std: float = 0.0  # Gaussian noise on every camera image, in uint8 units
    phrasings: tuple[str, ...] = TRAIN_PHRASINGS
    num_objects: int = 1  # objects on the table; the first is the one the instruction names
    num_receptacles: int = 1
    object_region: Region = TRAIN_REGION
    receptacle_region: Region = TRAIN_REGION
    exclude_region: Region | None = None  # positions must fall outside this (unseen positions)
    robot_init_noise: float = 0.02  # std of Gaussian joint noise (rad)
    robot_init_offset: float = 0.0  # magnitude of an extra random joint offset (rad), unseen poses
    move_object_at_step: int = -1  # >= 0: the object jumps to a new place at this control step
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category: one of {CATEGORIES}, got {self.category!r}")
        unknown = [s for s in self.object_shapes if s not in OBJECT_SHAPES]
        unknown += [s for s in self.receptacle_shapes if s not in RECEPTACLE_SHAPES]
        unknown += [
            c
            for c in self.object_colours + self.receptacle_colours + self.tablecloth_colours
            if c not in COLOURS
        ]
        if unknown:
            raise ValueError(f"split {self.name!r}: unknown shapes/colours {unknown}")
        if self.num_objects < 1 or self.num_objects > len(self.object_shapes):
            raise ValueError(f"num_objects: 1..{len(self.object_shapes)} (one actor per shape)")
        if self.num_receptacles < 1 or self.num_receptacles > len(self.receptacle_shapes):
            raise ValueError(f"num_receptacles: 1..{len(self.receptacle_shapes)} (one actor per shape)")
        if self.salt == 0:
            object.__setattr__(self, "salt", zlib.crc32(self.name.encode()) & 0x7FFFFFFF)

    def variant(self, name: str, category: Category, description: str, **changes) -> Split:
        """A copy with ``changes`` applied (how OOD splits are derived from ``train``)."""
        return dataclasses.replace(
            self, name=name, category=category, description=description, salt=0, **changes
        )


TRAIN = Split("train", "train", "the training distribution")

_SPLIT_LIST: list[Split] = [
    TRAIN,
    # --- vision -------------------------------------------------------------------------
    TRAIN.variant(
        "vision_table", "vision", "unseen tablecloth colours", tablecloth_colours=("crimson", "navy", "olive")
    ),
    TRAIN.variant(
        "vision_texture",
        "vision",
        "unseen tablecloth textures (checker / stripes)",
        tablecloth_texture="mixed",
    ),
    TRAIN.variant(
        "vision_dynamic", "vision", "tablecloth colour changes every step (strong)", dynamic_texture=0.35
    ),
    TRAIN.variant(
        "vision_noise", "vision", "Gaussian noise on every image (std 20/255)", image_noise_std=20.0
    ),
    # --- semantics ----------------------------------------------------------------------
    TRAIN.variant(
        "semantic_object",
        "semantics",
        "unseen objects: new shapes in new colours",
        object_shapes=("capsule", "brick"),
        object_colours=("purple", "orange"),
    ),
    TRAIN.variant(
        "semantic_receptacle",
        "semantics",
        "unseen receptacles: new shapes in new colours",
        receptacle_shapes=("mat", "coaster"),
        receptacle_colours=("cyan", "black", "brown"),
    ),
    TRAIN.variant(
        "semantic_instruction", "semantics", "unseen instruction phrasings", phrasings=UNSEEN_PHRASINGS
    ),
    TRAIN.variant(
        "semantic_multi_object",
        "semantics",
        "three objects on the table, the named one must be moved",
        num_objects=3,
    ),
    TRAIN.variant(
        "semantic_distractor_receptacle",
        "semantics",
        "a second receptacle as distractor (receptacles may stand a bit wider apart)",
        num_receptacles=2,
        receptacle_region=(-0.12, 0.06, -0.19, 0.19),
    ),
    # --- execution ----------------------------------------------------------------------
    TRAIN.variant(
        "execution_position",
        "execution",
        "unseen object / receptacle positions (outside the training area)",
        object_region=WIDE_REGION,
        receptacle_region=WIDE_REGION,
        exclude_region=TRAIN_REGION,
    ),
    TRAIN.variant(
        "execution_robot_pose",
        "execution",
        "unseen robot initial poses",
        robot_init_noise=0.05,
        robot_init_offset=0.25,
    ),
    TRAIN.variant(
        "execution_moved_object",
        "execution",
        "the object jumps to a new place at step 6",
        move_object_at_step=6,
    ),
]

SPLITS: dict[str, Split] = {s.name: s for s in _SPLIT_LIST}

#: Named groups of splits for ``simbridge eval --suite``.
SUITES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "vision": tuple(s.name for s in _SPLIT_LIST if s.category == "vision"),
    "semantics": tuple(s.name for s in _SPLIT_LIST if s.category == "semantics"),
    "execution": tuple(s.name for s in _SPLIT_LIST if s.category == "execution"),
    "ood": tuple(s.name for s in _SPLIT_LIST if s.category != "train"),
    "all": tuple(SPLITS),
}


def register_split(split: Split) -> Split:
    """Add a user-defined split (e.g. from a config file); names must be unique."""
    if split.name in SPLITS:
        raise ValueError(f"a split named {split.name!r} already exists")
    SPLITS[split.name] = split
    return split


def list_splits(category: str | None = None) -> list[str]:
    """Names of the registered splits, optionally only those of one category."""
    if category is not None and category not in CATEGORIES:
        raise KeyError(f"unknown split category {category!r}; valid categories: {', '.join(CATEGORIES)}")
    return [n for n, s in SPLITS.items() if category is None or s.category == category]


def get_split(name: str | Split) -> Split:
    """The split called ``name`` (a :class:`Split` passes through); KeyError lists valid names."""
    if isinstance(name, Split):
        return name
    try:
        return SPLITS[name]
    except KeyError:
        raise KeyError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}") from None


def resolve_suite(name: str) -> tuple[str, ...]:
    """Split names of a suite (``all``, ``ood``, a category) or of a single split name."""
    if name in SUITES:
        return SUITES[name]
    if name in SPLITS:
        return (name,)
    if "," in name:
        return tuple(get_split(n.strip()).name for n in name.split(",") if n.strip())
    raise KeyError(
        f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}; or a split name: {', '.join(SPLITS)}; "
        "or a comma-separated list of split names"
    )
