"""Split registry and episode layouts: every OOD split really changes what it claims to.

Pure numpy (no simulator): layouts are sampled the way the ManiSkill task samples them.
"""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.training.envs import (
    SPLITS,
    SUITES,
    get_split,
    list_splits,
    list_tasks,
    make_env,
    resolve_suite,
)
from simbridge.training.envs.layout import REST_QPOS, sample_layout
from simbridge.training.envs.splits import CATEGORIES, TRAIN_PHRASINGS, TRAIN_REGION, Split

SEEDS = range(40)


def layouts(split: str):
    return [sample_layout(get_split(split), s) for s in SEEDS]


def test_every_rl4vla_axis_has_splits_and_each_split_a_category():
    for cat in CATEGORIES:
        assert list_splits(cat), f"no split in category {cat}"
    for name, split in SPLITS.items():
        assert split.category in CATEGORIES and split.description and split.name == name
    assert set(resolve_suite("ood")) == set(SPLITS) - {"train"}
    assert resolve_suite("vision_noise,train") == ("vision_noise", "train")
    assert "PutOnTarget-v1" in list_tasks() and "libero_spatial" in list_tasks()


def test_unknown_names_give_errors_listing_the_valid_ones():
    with pytest.raises(KeyError, match="valid splits: train, vision_table"):
        get_split("vision_tablecloth")
    with pytest.raises(KeyError, match="valid suites: train"):
        resolve_suite("everything")
    with pytest.raises(KeyError, match="valid tasks: PutOnTarget-v1"):
        make_env("PutOnTable-v9")
    with pytest.raises(KeyError, match="valid splits"):  # fails before any simulator starts
        make_env("PutOnTarget-v1", split="nope")
    with pytest.raises(ValueError, match="obs_mode"):
        make_env("PutOnTarget-v1", obs_mode="depth")
    with pytest.raises(KeyError, match="valid categories: train, vision"):
        list_splits("physics")
    with pytest.raises(ValueError, match="unknown shapes/colours"):
        Split("bad", "vision", "x", tablecloth_colours=("plaid",))


def test_layouts_are_reproducible_and_salted_per_split():
    a, b = sample_layout(get_split("train"), 5), sample_layout(get_split("train"), 5)
    assert a.instruction == b.instruction and a.object_xy_yaw == b.object_xy_yaw
    np.testing.assert_array_equal(a.robot_qpos, b.robot_qpos)
    c = sample_layout(get_split("execution_robot_pose"), 5)
    assert c.object_xy_yaw != a.object_xy_yaw  # same seed, different split: a different scene
    assert len({lay.object_xy_yaw[0] for lay in layouts("train")}) == len(SEEDS)


def test_train_samples_its_whole_palette():
    train = layouts("train")
    assert {o[0] for lay in train for o in lay.objects} == set(SPLITS["train"].object_shapes)
    assert {o[1] for lay in train for o in lay.objects} == set(SPLITS["train"].object_colours)
    assert {lay.tablecloth[0] for lay in train} == set(SPLITS["train"].tablecloth_colours)
    assert len({lay.instruction for lay in train}) > 10


def test_vision_splits_change_only_appearance():
    train = layouts("train")
    table = layouts("vision_table")
    assert not {lay.tablecloth[0] for lay in table} & {lay.tablecloth[0] for lay in train}
    textures = {lay.extra["texture"] for lay in layouts("vision_texture")}
    assert textures == {"checker", "stripes"}
    assert SPLITS["vision_dynamic"].dynamic_texture > 0 and SPLITS["vision_noise"].image_noise_std > 0
    # geometry and language are the training distribution's
    for lay in table:
        assert lay.objects[0][0] in SPLITS["train"].object_shapes
        assert any(lay.instruction.startswith(p.split("{")[0]) for p in TRAIN_PHRASINGS)


def test_semantic_splits_use_unseen_objects_receptacles_and_phrasings():
    train_objects = {(o[0], o[1]) for lay in layouts("train") for o in lay.objects}
    for lay in layouts("semantic_object"):
        assert lay.objects[0] not in train_objects and lay.objects[0][0] not in SPLITS["train"].object_shapes
        assert lay.objects[0][1] in lay.instruction and lay.objects[0][0] in lay.instruction
    for lay in layouts("semantic_receptacle"):
        assert lay.receptacles[0][0] not in SPLITS["train"].receptacle_shapes
    train_starts = {p.split("{")[0] for p in TRAIN_PHRASINGS}
    for lay in layouts("semantic_instruction"):
        assert not any(lay.instruction.startswith(s) for s in train_starts), lay.instruction
    for lay in layouts("semantic_multi_object"):
        assert len(lay.objects) == 3 and len(set(lay.objects)) == 3
        names = [f"{c} {s}" for s, c in lay.objects]
        assert names[0] in lay.instruction and not any(n in lay.instruction for n in names[1:])
    for lay in layouts("semantic_distractor_receptacle"):
        assert len(lay.receptacles) == 2 and lay.receptacles[0] != lay.receptacles[1]
        assert f"{lay.receptacles[0][1]} {lay.receptacles[0][0]}" in lay.instruction


def test_execution_splits_move_things_outside_the_training_range():
    def inside(xy):
        return TRAIN_REGION[0] <= xy[0] <= TRAIN_REGION[1] and TRAIN_REGION[2] <= xy[1] <= TRAIN_REGION[3]

    for lay in layouts("train"):
        assert inside(lay.object_xy_yaw[0]) and inside(lay.receptacle_xy[0])
    for lay in layouts("execution_position"):
        assert not inside(lay.object_xy_yaw[0]) and not inside(lay.receptacle_xy[0])
    train_dev = max(np.abs(lay.robot_qpos - REST_QPOS).max() for lay in layouts("train"))
    pose_dev = min(np.abs(lay.robot_qpos - REST_QPOS).max() for lay in layouts("execution_robot_pose"))
    assert pose_dev > 1.5 * train_dev
    for lay in layouts("execution_moved_object"):
        jump = np.linalg.norm(np.subtract(lay.extra["move_to"], lay.object_xy_yaw[0][:2]))
        assert jump > 0.08


def test_items_never_overlap():
    for name in ("train", "semantic_multi_object", "semantic_distractor_receptacle", "execution_position"):
        for lay in layouts(name):
            pts = [xy[:2] for xy in lay.object_xy_yaw] + list(lay.receptacle_xy)
            d = [np.linalg.norm(np.subtract(p, q)) for i, p in enumerate(pts) for q in pts[i + 1 :]]
            assert not d or min(d) > 0.07, (name, lay.seed)


def test_suites_cover_every_split():
    assert set(SUITES["all"]) == set(SPLITS)
    assert set(SUITES["vision"]) | set(SUITES["semantics"]) | set(SUITES["execution"]) | {"train"} == set(
        SPLITS
    )
