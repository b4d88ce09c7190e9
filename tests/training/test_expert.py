"""The scripted expert's two styles on the real PutOnTarget task (SAPIEN, CPU physics, state mode).

``funnel`` (the default) labels steps smoothly: its waypoint height grows monotonically with the
xy error, the hand turns only for objects that do not fit the opening in every orientation, and it
closes at grasp height with no hover; ``gated`` is the original expert the older demo stores used.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from simbridge.data.spec import GRIPPER_CLOSED
from simbridge.training.envs import make_env, make_expert
from simbridge.training.envs.expert import (
    GRIPPER_OPENING,
    ScriptedExpert,
    funnel_height,
    maniskill_state,
    needs_yaw,
    width_excess,
)
from simbridge.training.envs.wrapper import ContractEnv


@pytest.fixture(scope="module")
def env():
    e = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="state", camera_size=(64, 64))
    yield e
    e.close()


def rollout(env: ContractEnv, seed: int, split: str, style: str = "funnel", max_steps: int = 80):
    expert = make_expert(env, style=style)
    obs, info = env.reset(seed=seed, options={"split": split})
    expert.reset()
    steps = []  # (phase after predict, tcp position, grasp z, xy error, action)
    for _ in range(max_steps):
        s = maniskill_state(env)
        action = expert.predict(obs)[0]
        pos = np.asarray(obs.ee_pose[:3], np.float64)
        steps.append((expert.phase, pos, max(s.obj[2] - 0.003, 0.02), np.linalg.norm(pos[:2] - s.obj[:2]), action))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return info, expert, steps


def test_funnel_height_is_monotone_in_the_error_and_clipped():
    errs = np.linspace(0.0, 0.2, 401)
    h = np.array([funnel_height(e, 3.0, 0.08) for e in errs])
    assert h[0] == 0.0 and h[-1] == pytest.approx(0.08)
    assert np.all(np.diff(h) >= 0) and np.any(np.diff(h) > 0)
    assert funnel_height(0.01, 3.0, 0.08) == pytest.approx(0.03)  # no discrete gate: linear near the object
    assert funnel_height(0.003, 2.0, 0.08, flat=0.004) == 0.0 < funnel_height(0.005, 2.0, 0.08, flat=0.004)


def test_the_experts_waypoint_height_grows_with_the_xy_error(env):
    """The real waypoint over a real object: grasp height when centred, rising with the offset, capped."""
    env.reset(seed=0, options={"split": "train"})
    expert = make_expert(env)
    s = dataclasses.replace(maniskill_state(env), shape="cube")  # fits the opening at any yaw: the height is the xy error's
    grasp_z = max(s.obj[2] - 0.003, 0.02)
    heights = []
    for off in np.linspace(0.0, 0.1, 41):
        expert.reset()
        pos = s.obj + np.array([off, 0.0, 0.2])  # high above: the sideways motion is not held back
        target, _ = expert._funnel(s, pos, np.array([0.0, 1.0, 0.0, 0.0]))
        heights.append(target[2] - grasp_z)
        np.testing.assert_allclose(target[:2], s.obj[:2], atol=1e-9)
    heights = np.array(heights)
    assert heights[0] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(heights) >= -1e-12) and heights[-1] == pytest.approx(s.obj[2] + 0.08 - grasp_z)


def test_the_yaw_gate_is_skipped_for_shapes_that_fit_the_opening():
    for shape in ("cube", "can"):  # diagonal 5.7 / 4.0 cm: fit the 8 cm opening (1.5 cm to spare) turned any way
        assert not needs_yaw(shape), shape
        assert all(width_excess(shape, a) == 0.0 for a in np.linspace(0, math.pi, 37))
    assert needs_yaw("brick") and needs_yaw("block")  # diagonals 8.1 / 7.0 cm: too little to spare
    assert width_excess("brick", 0.0) == 0.0  # across the narrow side
    assert width_excess("brick", math.atan2(0.035, 0.02)) > 0.0  # across the diagonal
    assert not needs_yaw("brick", opening=0.1) and needs_yaw("cube", opening=0.05)
    assert pytest.approx(0.08) == GRIPPER_OPENING


def test_the_funnel_keeps_the_yaw_for_a_cube_and_turns_for_a_brick(env):
    env.reset(seed=0, options={"split": "train"})
    expert = make_expert(env)
    s = maniskill_state(env)
    down = np.array([0.0, 1.0, 0.0, 0.0])  # closing axis along world y (angle pi/2)
    heights = {}
    for shape, turns in (("cube", False), ("brick", True)):
        state = dataclasses.replace(s, shape=shape, obj_yaw=math.pi / 2 - math.atan2(0.035, 0.02))  # fingers across the diagonal
        expert.reset()
        pos = state.obj + np.array([0.0, 0.0, 0.2])  # centred, high above
        target, _ = expert._funnel(state, pos, down)
        action = expert._action(pos, down, target, 1.0)
        assert bool(abs(action[5]) > 0.1) is turns, (shape, action)  # yaw rate about base z
        heights[shape] = target[2]
    # the brick's footprint does not fit yet: the funnel keeps it above the object while it turns
    assert heights["brick"] > heights["cube"] + 0.04


def test_invalid_style_is_rejected(env):
    with pytest.raises(ValueError, match="funnel, gated"):
        ScriptedExpert(env, style="hover")


@pytest.mark.parametrize(
    ("split", "seed"),
    [("train", 0), ("train", 1), ("semantic_object", 0), ("semantic_object", 3), ("execution_moved_object", 2)],
)
def test_the_funnel_expert_succeeds_without_hovering(env, split, seed):
    info, expert, steps = rollout(env, seed, split)
    assert info["success"], (split, seed, env.layout, expert.phases)
    assert info["elapsed_steps"] < 60
    assert len(expert.phases) == len(steps) and {"descend", "grasp", "lift", "release"} <= set(expert.phases)
    # centred above the object means going down: no step holds still at hover height
    for phase, pos, grasp_z, err, action in steps:
        if phase in ("approach", "descend") and err < 0.01 and pos[2] > grasp_z + 0.05:
            assert action[2] < -0.005, (phase, pos, err, action)
    # the gripper closes with the fingers at grasp height, not above the object
    first_close = next(k for k, st in enumerate(steps) if st[4][6] == GRIPPER_CLOSED)
    assert steps[first_close][0] == "grasp" and steps[first_close][1][2] < steps[first_close][2] + 0.012


def test_the_gated_style_still_hovers_and_succeeds(env):
    info, expert, steps = rollout(env, 0, "train", style="gated")
    assert info["success"] and expert.style == "gated"
    hover = [st for st in steps if st[0] == "approach" and st[3] < 0.01 and st[1][2] > st[2] + 0.05]
    assert any(abs(st[4][2]) < 0.005 for st in hover)  # what the funnel removes
