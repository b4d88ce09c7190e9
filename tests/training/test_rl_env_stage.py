"""Env worker stages (issue #25): envs stepped together one action chunk at a time.

* The chunk semantics (an env whose episode ends inside a chunk stops there and is reset after
  it, or frozen for GRPO) equal the one-env-at-a-time loop the worker used before, written out
  here as the reference.
* With ManiSkill: one scene per env in one stage and batched scenes in two stages give the same
  trajectory per env id (batched scenes hold one env each on this CPU backend).
* A held env of a batched scene neither moves its target, counts a step nor ends.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simbridge.data.config import load_config
from simbridge.training.envs import make_batched_env
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.env_stage import BatchedBlock, SingleEnvBlock, batched_scenes
from simbridge.training.rl.toy import ToyReachEnv
from simbridge.training.rl.workers import EnvWorker, episode_seed


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # the workers set their own thread count
    yield
    torch.set_num_threads(threads)


def rl_config(env: dict) -> RLConfig:
    return load_config(RLConfig, data={"env": env, "policy": {"backend": "toy"}, "algorithm": {"group_size": 2},
                                       "reward": {"dense_coef": 0.5}})  # fmt: skip


def reference_stage(cfg: RLConfig, episodic: bool, chunks: list[np.ndarray]) -> list[tuple]:
    """The pre-#25 worker loop for one worker with one stage: env by env, action by action."""
    n = cfg.env.envs_per_worker
    envs = [ToyReachEnv(split=cfg.env.spec.split, seed=cfg.env.seed + j, max_episode_steps=cfg.env.max_episode_steps)
            for j in range(n)]  # fmt: skip
    counter, active = np.zeros(n, np.int64), np.zeros(n, bool)
    obs: list = [None] * n

    def seed_of(j: int) -> int:
        if episodic:
            g = cfg.algorithm.group_size
            return episode_seed(cfg.env.seed, j // g, cfg.env.num_envs // g, int(counter[j]))
        return episode_seed(cfg.env.seed, j, cfg.env.num_envs, int(counter[j]))

    for j in range(n):
        obs[j], active[j] = envs[j].reset(seed=seed_of(j))[0], True
    out = []
    for chunk in chunks:
        rewards, dones = np.zeros(n), np.zeros(n, bool)
        for j in range(n):
            if not active[j]:
                continue
            for i, action in enumerate(chunk[j]):
                o, r, term, trunc, info = envs[j].step(action, observe=i == len(chunk[j]) - 1)
                rewards[j] += cfg.reward.success * r + cfg.reward.dense_coef * info.get("dense_reward", 0.0)
                if o is not None:
                    obs[j] = o
                if term or trunc:
                    dones[j] = True
                    break
            if dones[j]:
                counter[j] += 1
                if episodic:
                    active[j] = False
                else:
                    obs[j] = envs[j].reset(seed=seed_of(j))[0]
        out.append((rewards.astype(np.float32), dones, active.copy(), [o.ee_pose.copy() for o in obs]))
    return out


@pytest.mark.parametrize("episodic", [False, True])
def test_chunk_stepping_equals_the_one_env_at_a_time_loop(episodic):
    cfg = rl_config({"backend": "toy", "num_workers": 1, "envs_per_worker": 4, "pipeline_stage_num": 1,
                     "spec": {"max_episode_steps": 5}})  # fmt: skip
    rng = np.random.default_rng(3)
    chunks = [rng.uniform(-1, 1, (4, 3, 7)).astype(np.float32) for _ in range(6)]  # episodes end inside chunks
    worker = EnvWorker(cfg, 0, episodic)
    worker.reset_stage(0, 0)
    got = [worker.step_stage(0, chunk, 0) for chunk in chunks]
    want = reference_stage(cfg, episodic, chunks)
    assert any(r.dones.any() for r in got) and any(not r.active.all() for r in got) == episodic
    for result, (rewards, dones, active, ee) in zip(got, want, strict=True):
        np.testing.assert_array_equal(result.rewards, rewards)
        np.testing.assert_array_equal(result.dones, dones)
        np.testing.assert_array_equal(result.active, active)
        np.testing.assert_array_equal(np.array([o.ee_pose for o in result.obs]), np.array(ee))
    assert all(isinstance(block, SingleEnvBlock) for block in worker.stages[0].blocks)


def sim_config(stages: int, batching: str) -> RLConfig:
    return rl_config({"backend": "sim", "num_workers": 1, "envs_per_worker": 2, "pipeline_stage_num": stages,
                      "scene_batching": batching, "seed": 40,
                      "spec": {"obs_mode": "state", "camera_size": [32, 32], "max_episode_steps": 6}})  # fmt: skip


def test_batched_scenes_in_two_stages_give_the_single_scene_trajectories():
    single, batched = EnvWorker(sim_config(1, "single"), 0, False), EnvWorker(sim_config(2, "batched"), 0, False)
    try:
        assert not batched_scenes(single.cfg.env) and batched_scenes(batched.cfg.env)
        assert all(isinstance(b, BatchedBlock) for stage in batched.stages for b in stage.blocks)
        rng = np.random.default_rng(0)
        chunks = [rng.uniform(-0.6, 0.6, (2, 4, 7)).astype(np.float32) for _ in range(4)]
        a = [single.reset_stage(0, 0)]
        b = [[batched.reset_stage(s, 0) for s in range(2)]]
        for chunk in chunks:
            a.append(single.step_stage(0, chunk, 0))
            b.append([batched.step_stage(s, chunk, s) for s in range(2)])
        ended = 0
        for ra, rb in zip(a, b, strict=True):
            for k in range(2):  # env k: row k of the one stage, row 0 of stage k
                assert ra.env_ids[k] == rb[k].env_ids[0]
                np.testing.assert_array_equal(ra.obs[k].ee_pose, rb[k].obs[0].ee_pose)
                np.testing.assert_array_equal(ra.obs[k].joint_positions, rb[k].obs[0].joint_positions)
                assert ra.rewards[k] == rb[k].rewards[0] and ra.dones[k] == rb[k].dones[0]
                ended += int(ra.dones[k])
        assert ended == 4  # each env: truncated at action 2 of chunks 2 and 4 (episodes of 6 steps)
        assert [e.seed for e in a[-1].episodes] == [e.seed for r in b[-1] for e in r.episodes]
    finally:
        single.close()
        batched.close()


def test_a_held_env_keeps_its_target_and_neither_steps_nor_ends():
    env = make_batched_env(1, sim_backend="physx_cpu", obs_mode="state", camera_size=(32, 32), max_episode_steps=3)
    try:
        env.reset(seeds=[5])
        push = np.array([[0.05, 0, 0, 0, 0, 0, -1]], np.float32)
        env.step(push)
        target = env._target_p.copy()
        for _ in range(4):  # more than the episode's length: a held env never truncates
            held, rewards, term, trunc, _ = env.step(push, active=np.array([False]), observe=False)
            assert held == [None] and not term[0] and not trunc[0] and rewards[0] == 0
        np.testing.assert_array_equal(env._target_p, target)
        assert env.elapsed_steps[0] == 1
        last, _, _, trunc, infos = env.step(push, observe=False, auto_reset=False)
        assert last == [None] and not trunc[0]
        final, _, _, trunc, infos = env.step(push, observe=False, auto_reset=False)
        assert trunc[0] and final[0] is not None  # a final observation is always real ...
        assert env.elapsed_steps[0] == 3 and "final_observation" not in infos[0]  # ... and not reset
    finally:
        env.close()
