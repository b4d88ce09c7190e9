"""PutOnTarget-v1 in ManiSkill3 through the contract wrapper (real SAPIEN, CPU physics).

One state-mode environment is shared by the module (creating one costs seconds on this CPU);
every test resets it with its own seed, so the order of the tests does not matter.
"""

from __future__ import annotations

import numpy as np
import pytest

from simbridge.data.spec import ContractError, Observation, Policy
from simbridge.training.envs import EnvUnavailable, get_split, list_splits, make_env, make_expert
from simbridge.training.envs.wrapper import ContractEnv


@pytest.fixture(scope="module")
def env():
    e = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="state", camera_size=(64, 64))
    yield e
    e.close()


def run_expert(env: ContractEnv, seed: int, split: str = "train", max_steps: int = 80):
    expert = make_expert(env)
    obs, info = env.reset(seed=seed, options={"split": split})
    expert.reset()
    for _ in range(max_steps):
        obs, _, terminated, truncated, info = env.step(expert.predict(obs)[0])
        if terminated or truncated:
            break
    return info


def test_reset_returns_a_contract_observation(env):
    obs, info = env.reset(seed=3, options={"split": "train"})
    assert isinstance(obs, Observation)
    obs.validate(env.contract.observation)
    assert obs.images["scene"].shape == (64, 64, 3)  # state mode: black frames of the contract's size
    assert info["instruction"] == env.instruction == obs.instruction
    assert info["split"] == "train" and info["seed"] == 3 and info["category"] == "train"
    assert info["state"].dtype == np.float32 and info["state"].ndim == 1
    # The TCP of the rest pose: in front of the base, above the table, pointing down.
    assert 0.45 < obs.ee_pose[0] < 0.75 and 0.1 < obs.ee_pose[2] < 0.3
    assert abs(abs(obs.ee_pose[4]) - 1.0) < 0.05  # quaternion wxyz ~ (0, 1, 0, 0): 180 deg about x
    assert obs.gripper_width == pytest.approx(0.08, abs=1e-3)
    assert obs.joint_positions.shape == (7,)


def test_same_seed_same_episode_and_next_seed_by_default(env):
    obs_a, info_a = env.reset(seed=11)
    layout_a = (env.layout.objects, env.layout.object_xy_yaw)
    obs_b, info_b = env.reset(seed=11)
    assert (env.layout.objects, env.layout.object_xy_yaw) == layout_a
    np.testing.assert_allclose(obs_a.joint_positions, obs_b.joint_positions)
    assert info_a["instruction"] == info_b["instruction"]
    _, info_c = env.reset()  # no seed: continues with the next one
    assert info_c["seed"] == 12


def test_a_commanded_centimetre_moves_the_tcp_a_centimetre(env):
    obs, _ = env.reset(seed=0)
    start = obs.ee_pose[:3].copy()
    step = np.array([0.01, -0.005, 0.0, 0, 0, 0, 1], np.float32)
    positions = []
    for _ in range(12):
        obs, *_ = env.step(step)
        positions.append(obs.ee_pose[:3].copy())
    per_step = np.diff(np.array(positions), axis=0)[-5:].mean(axis=0)  # steady motion
    np.testing.assert_allclose(per_step[:2], [0.01, -0.005], atol=0.0015)
    for _ in range(6):  # stop: the TCP settles where 12 steps put it
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
    np.testing.assert_allclose(obs.ee_pose[:3] - start, [0.12, -0.06, 0.0], atol=0.006)


def test_rotation_and_gripper_follow_the_contract(env):
    from simbridge.training.envs.wrapper import quat_mul

    obs, _ = env.reset(seed=1)
    q0 = obs.ee_pose[3:].astype(np.float64)
    for _ in range(4):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0.05, 1], np.float32))  # +yaw about base z
    for _ in range(6):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1], np.float32))  # hold, close gripper
    d = quat_mul(obs.ee_pose[3:].astype(np.float64), q0 * np.array([1, -1, -1, -1]))
    d = d if d[0] >= 0 else -d
    angle = 2 * np.arctan2(np.linalg.norm(d[1:]), d[0])
    assert angle == pytest.approx(0.2, abs=0.02) and d[3] > 0.95 * np.linalg.norm(d[1:])  # about +z
    assert obs.gripper_width < 0.005  # closed on nothing


def test_bad_actions_are_rejected_with_the_field_named(env):
    env.reset(seed=0)
    with pytest.raises(ContractError, match="shape"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ContractError, match="dz"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0, 1], np.float32))


@pytest.mark.parametrize("split", list_splits())
def test_each_split_is_applied_in_the_simulator(env, split):
    env.reset(seed=4, options={"split": split})
    ms = env.unwrapped_ms
    lay = env.layout
    assert env.split.name == split and lay.instruction == env.instruction
    # every object of the layout stands where the layout says, the others are parked off the table
    for k, (shape, _) in enumerate(lay.objects):
        p = ms.objects[shape].pose.p[0].numpy()
        np.testing.assert_allclose(p[:2], lay.object_xy_yaw[k][:2], atol=1e-3)
    used = {s for s, _ in lay.objects}
    for shape, actor in ms.objects.items():
        if shape not in used:
            assert actor.pose.p[0, 2] < -0.5
    for k, (shape, _) in enumerate(lay.receptacles):
        np.testing.assert_allclose(
            ms.receptacles[shape].pose.p[0, :2].numpy(), lay.receptacle_xy[k], atol=1e-3
        )
    np.testing.assert_allclose(
        env.unwrapped_ms.agent.robot.get_qpos()[0, :7].numpy(), lay.robot_qpos[:7], atol=1e-4
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_succeeds_on_train(env, seed):
    info = run_expert(env, seed)
    assert info["success"], (seed, env.layout)
    assert info["elapsed_steps"] < 60


def test_expert_implements_the_policy_protocol(env):
    expert = make_expert(env)
    assert isinstance(expert, Policy)
    obs, _ = env.reset(seed=0)
    chunk = expert.predict(obs)
    assert chunk.shape == (1, 7) and chunk.dtype == np.float32
    assert np.all(chunk >= env.contract.action.low) and np.all(chunk <= env.contract.action.high)


def test_object_moved_mid_episode_and_the_expert_follows(env):
    info = run_expert(env, seed=2, split="execution_moved_object")
    lay = env.layout
    assert info["object_moved"] and lay.moved_to == lay.extra["move_to"]
    assert info["success"]


def test_expert_handles_unseen_objects_and_robot_poses(env):
    assert run_expert(env, seed=0, split="semantic_object")["success"]
    assert run_expert(env, seed=0, split="execution_robot_pose")["success"]


def test_dense_reward_grows_as_the_task_progresses(env):
    expert = make_expert(env)
    obs, _ = env.reset(seed=5, options={"split": "train"})
    expert.reset()
    rewards, grasped_reward = [], None
    for _ in range(80):
        obs, reward, terminated, truncated, info = env.step(expert.predict(obs)[0])
        rewards.append(info["dense_reward"])
        if info["is_grasped"] and grasped_reward is None:
            grasped_reward = info["dense_reward"]
        if terminated or truncated:
            break
    assert info["success"] and reward >= 1.0 and info["dense_reward"] == pytest.approx(1.0)
    assert rewards[0] < grasped_reward < 1.0


def test_unavailable_vulkan_gives_the_fix(monkeypatch):
    import sapien

    from simbridge.training.envs.registry import require_maniskill

    def no_device():  # what SAPIEN raises when no Vulkan ICD is installed
        raise RuntimeError("vk::createInstanceUnique: ErrorIncompatibleDriver")

    monkeypatch.setattr(sapien.render, "get_device_summary", no_device)
    with pytest.raises(EnvUnavailable, match="mesa-vulkan-drivers"):
        require_maniskill()
    with pytest.raises(EnvUnavailable, match="Vulkan"):
        make_env("PutOnTarget-v1", split="train", obs_mode="state")


def test_missing_maniskill_gives_the_install_command(monkeypatch):
    import importlib.util

    from simbridge.training.envs.registry import require_maniskill

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mani_skill" else real(name, *a)
    )
    with pytest.raises(EnvUnavailable, match="pip install mani-skill"):
        require_maniskill()


def test_split_registry_objects_are_usable_directly(env):
    env.set_split(get_split("vision_noise"))
    _, info = env.reset(seed=0)
    assert info["split"] == "vision_noise" and info["category"] == "vision"
    env.set_split("train")


def test_expert_demos_are_written_to_the_episode_store(env, tmp_path):
    from simbridge.data.store import EpisodeStore
    from simbridge.training.envs.demos import write_expert_demos

    stats = write_expert_demos(
        tmp_path / "demos.zarr", episodes=2, seed=0, env=env, split="train", progress=False
    )
    assert stats["written"] == 2 and stats["successes"] == stats["attempted"] == 2
    store = EpisodeStore(tmp_path / "demos.zarr")
    assert len(store) == 2
    for i, seed in enumerate(stats["seeds"]):
        meta = store.meta(i)
        assert meta.success is True and meta.success_labeled_by == "env" and meta.policy_id == "expert"
        assert meta.split == "train" and meta.seed == seed and meta.instruction.startswith(("put", "place"))
        ep = store.episode(i)
        assert ep["action"].shape[1] == 7 and len(ep["action"]) == meta.extra["steps"]
        assert ep["image_scene"].shape[1:] == (64, 64, 3)
        np.testing.assert_array_equal(ep["action"], ep["policy_action"])
        assert ep["action"][:, 6].min() == -1.0 and ep["action"][0, 6] == 1.0  # it grasped


def test_dart_demos_execute_noisy_actions_and_label_the_clean_ones(env, tmp_path):
    """DART: ``action`` is what was executed (clean + noise on the six motion dims), ``policy_action``
    the expert's own action at the state reached; the expert recovers, so episodes still succeed."""
    from simbridge.data.store import EpisodeStore
    from simbridge.training.envs.demos import write_expert_demos
    from simbridge.training.sft import load_demos

    stats = write_expert_demos(tmp_path / "dart.zarr", episodes=2, seed=0, env=env, split="train",
                               execution_noise_std=0.01, progress=False)  # fmt: skip
    assert stats["written"] == 2
    store = EpisodeStore(tmp_path / "dart.zarr")
    for i in range(len(store)):
        ep = store.episode(i)
        noise = ep["action"] - ep["policy_action"]
        np.testing.assert_array_equal(noise[:, 6], 0.0)  # the gripper command is not perturbed
        assert 0.006 < float(noise[:, :6].std()) < 0.012, noise[:, :6].std()
    clean = load_demos(tmp_path / "dart.zarr", 64, action_label="policy_action")
    executed = load_demos(tmp_path / "dart.zarr", 64)
    np.testing.assert_array_equal(clean.actions, np.concatenate([store.episode(i)["policy_action"] for i in range(2)]))
    assert not np.array_equal(clean.actions, executed.actions)
    with pytest.raises(ValueError, match="execution_noise_std"):
        write_expert_demos(tmp_path / "bad.zarr", episodes=1, env=env, execution_noise_std=-1, progress=False)


def test_unobserved_steps_skip_rendering_but_not_the_physics():
    """``step(observe=False)`` (mid-chunk steps) returns None, moves the robot exactly as an
    observed step does, and still renders the episode's final observation."""
    env = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="rgb", camera_size=(64, 64),
                   wrist_camera=True, max_episode_steps=10)  # fmt: skip
    try:
        obs, _ = env.reset(seed=4)
        expert = make_expert(env)
        expert.reset()
        actions = []
        for _ in range(10):  # the expert's actions, replayed below
            actions.append(expert.predict(obs)[0])
            obs, *_ = env.step(actions[-1])

        def replay(observe_every: int) -> list:
            env.reset(seed=4)
            return [env.step(a, observe=t % observe_every == observe_every - 1) for t, a in enumerate(actions)]

        every_step, chunked = replay(1), replay(4)  # chunks of 4: only what a policy would read
        for t, ((ref, *_), (obs, *_)) in enumerate(zip(every_step, chunked, strict=True)):
            if t % 4 == 3 or t == len(actions) - 1:  # the episode's last observation is always rendered
                assert isinstance(obs, Observation), t
                obs.validate(env.contract.observation)
                np.testing.assert_array_equal(obs.ee_pose, ref.ee_pose)
                for cam in ("scene", "wrist"):
                    np.testing.assert_array_equal(obs.images[cam], ref.images[cam])
                    assert obs.images[cam].std() > 5  # really rendered, not a black frame
            else:
                assert obs is None, t
        _, _, terminated, truncated, info = chunked[-1]
        assert truncated and not terminated and info["elapsed_steps"] == 10  # step 10 was unobserved
    finally:
        env.close()
