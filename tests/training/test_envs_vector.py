"""One environment per process on the CPU (ProcessVectorEnv) and the GPU-batched path's guard."""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.data.spec import Observation
from simbridge.training.envs import EnvUnavailable, make_gpu_batched_env, make_vector_env


def test_two_worker_processes_step_in_lock_step_and_auto_reset():
    with make_vector_env(
        2, split="train", seed=10, obs_mode="state", camera_size=(32, 32), max_episode_steps=3
    ) as venv:
        obs, infos = venv.reset(seeds=[10, 11])
        assert len(obs) == 2 and all(isinstance(o, Observation) for o in obs)
        assert [i["seed"] for i in infos] == [10, 11] and infos[0]["instruction"] != infos[1]["instruction"]
        actions = np.zeros((2, 7), np.float32)
        actions[:, 2] = 0.02  # both move up 2 cm per step
        actions[:, 6] = 1.0
        for _ in range(2):
            obs2, _, _, trunc, infos = venv.step(actions)
            assert not trunc.any()
        assert all(o2.ee_pose[2] > o.ee_pose[2] + 0.02 for o, o2 in zip(obs, obs2, strict=True))
        _, rew, _, trunc, infos = venv.step(actions)  # third step hits max_episode_steps=3
        assert trunc.all() and rew.shape == (2,)
        assert all("final_observation" in i and i["elapsed_steps"] == 0 for i in infos)  # already reset
        assert [i["seed"] for i in infos] == [11, 12]  # each worker's next seed
        assert venv.call("set_split", "vision_noise") == [None, None]
        _, infos = venv.reset()
        assert {i["split"] for i in infos} == {"vision_noise"}
        with pytest.raises(ValueError, match="shape"):
            venv.step(np.zeros((3, 7), np.float32))


def test_worker_errors_reach_the_parent():
    with pytest.raises(RuntimeError, match="valid splits"):
        make_vector_env(1, split="no_such_split", obs_mode="state")


def test_gpu_batched_path_needs_cuda():
    import torch

    if torch.cuda.is_available():  # a GPU machine: the batched simulation must come up
        env = make_gpu_batched_env(2, obs_mode="state")
        obs, infos = env.reset(seeds=[0, 1])
        assert len(obs) == len(infos) == 2 and [i["seed"] for i in infos] == [0, 1]
        env.close()
        return
    with pytest.raises(EnvUnavailable, match="make_vector_env"):
        make_gpu_batched_env(4)
