"""The task and the contract wrapper on (num_envs, ...) batches (issue #25).

ManiSkill refuses ``num_envs > 1`` on the CPU backend, so here: the batched code with one env
reproduces the pre-#25 trajectories bit for bit (``data/envs_reference_pre25.npz``), per-env
episode state is checked with a vector of CPU envs (one per process) that reset at different
times, and the per-env rows of the action mapping keep the env order (property tests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simbridge.training.envs import EnvUnavailable, make_batched_env, make_vector_env
from simbridge.training.envs.wrapper import ContractEnv, target_step

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from record_envs_reference import CASES, actions, record  # noqa: E402

MOVE_SPLIT = "execution_moved_object"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "envs_reference_pre25.npz"))


def test_contract_env_reproduces_the_pre25_trajectories_exactly(reference):
    out = record()  # state trajectories (plain, moved object, colour jitter) and rgb frames
    assert sorted(out) == sorted(reference)
    for key, want in reference.items():
        np.testing.assert_array_equal(np.asarray(out[key]), want, err_msg=key)


def test_batched_env_with_one_env_is_the_single_env_wrapper(reference):
    env = make_batched_env(1, sim_backend="physx_cpu", obs_mode="state", camera_size=(32, 32))
    try:
        for split, seed in CASES[:2]:
            obs, infos = env.reset(seeds=[seed], options={"split": split})
            ee, moved = [obs[0].ee_pose], [infos[0]["object_moved"]]
            for a in actions(seed):
                obs, rew, term, trunc, infos = env.step(a[None])
                assert rew.shape == term.shape == trunc.shape == (1,)
                ee.append(obs[0].ee_pose)
                moved.append(infos[0]["object_moved"])
                np.testing.assert_array_equal(infos[0]["state"], reference[f"{split}/state"][len(ee) - 1])
            np.testing.assert_array_equal(np.array(ee), reference[f"{split}/ee"])
            np.testing.assert_array_equal(np.array(moved), reference[f"{split}/moved"])
    finally:
        env.close()


def test_the_cpu_backend_cannot_batch_more_than_one_env():
    with pytest.raises(EnvUnavailable, match="make_vector_env"):
        make_batched_env(2, sim_backend="physx_cpu", obs_mode="state")


def test_sub_scenes_share_render_materials_unless_each_gets_its_own():
    """ManiSkill builds every sub-scene's entity from the same visual records: one material."""
    import sapien

    from simbridge.training.envs import make_env
    from simbridge.training.envs.task_scene import own_materials_per_sub_scene

    env = make_env("PutOnTarget-v1", obs_mode="state", camera_size=(32, 32))
    try:
        scene = env.unwrapped_ms.scene

        def two_entities(builder):
            mat = sapien.render.RenderMaterial(base_color=[0.8, 0.8, 0.8, 1.0])
            builder.add_box_visual(half_size=[0.01] * 3, material=mat)
            comps = [builder.build_entity().find_component_by_type(sapien.render.RenderBodyComponent)
                     for _ in range(2)]  # fmt: skip
            if comps[0] is None:
                pytest.skip("no renderer")
            first, second = (c.render_shapes[0].material for c in comps)
            first.base_color = [1.0, 0.0, 0.0, 1.0]
            return list(second.base_color)

        assert two_entities(scene.create_actor_builder()) == [1.0, 0.0, 0.0, 1.0]  # shared
        own = two_entities(own_materials_per_sub_scene(scene.create_actor_builder()))
        assert own == pytest.approx([0.8, 0.8, 0.8, 1.0])  # its own copy
    finally:
        env.close()


def test_move_trigger_fires_per_env_at_its_own_step():
    hold = np.zeros((2, 7), np.float32)
    hold[:, 6] = 1.0  # open gripper, no motion: the object is never grasped
    with make_vector_env(2, split=MOVE_SPLIT, obs_mode="state", camera_size=(32, 32), max_episode_steps=40) as venv:
        _, infos = venv.reset(seeds=[5, 5])
        moved = []
        for step in range(12):
            if step == 3:  # env 1 starts a new episode three steps later than env 0
                _, (info1,) = venv.reset(seeds=[5], env_idx=[1])
                assert info1["elapsed_steps"] == 0 and not info1["object_moved"]
            _, _, _, _, infos = venv.step(hold)
            moved.append([i["object_moved"] for i in infos])
            assert [i["elapsed_steps"] for i in infos] == [step + 1, step + 1 if step < 3 else step - 2]
    moved = np.array(moved)
    # The split moves the object on each env's own 7th step (before it, elapsed_steps == 6).
    np.testing.assert_array_equal(moved[:, 0], np.arange(1, 13) >= 7)
    np.testing.assert_array_equal(moved[:, 1], np.concatenate([np.arange(1, 4) >= 7, np.arange(1, 10) >= 7]))


# --- properties: the per-env rows keep the env order ---------------------------------------------
def _rows(n: int, seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    tcp = np.concatenate([rng.uniform(0.3, 0.6, (n, 3)), q / np.linalg.norm(q, axis=1, keepdims=True)], axis=1)
    return SimpleNamespace(
        _last_tcp=tcp, _target_p=tcp[:, :3] + rng.uniform(-0.05, 0.05, (n, 3)), _target_q=tcp[:, 3:].copy(),
        max_target_lead_m=0.06, _tcp_poses_base=lambda: tcp,
    )  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    resets=st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=4),
)
def test_action_rows_keep_the_env_order_through_partial_resets(n, seed, resets):
    env = _rows(n, seed)
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(n)
    mirror = SimpleNamespace(**vars(env))  # the same envs, stored in permuted order
    mirror._last_tcp, mirror._target_p, mirror._target_q = env._last_tcp[perm], env._target_p[perm], env._target_q[perm]
    for mask in resets:
        a = (rng.uniform(-1, 1, (n, 7)) * [0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 1]).astype(np.float32)
        before = env._target_p.copy(), env._target_q.copy()
        out = ContractEnv._controller_actions(env, a)
        np.testing.assert_array_equal(ContractEnv._controller_actions(mirror, a[perm]), out[perm])
        for i in range(n):  # row i is env i's own single-env step
            p, _, ctrl = target_step(before[0][i], before[1][i], env._last_tcp[i], a[i], 0.06)
            np.testing.assert_array_equal(out[i], ctrl)
            np.testing.assert_array_equal(env._target_p[i], p)
        reset = np.flatnonzero(mask[:n])  # partial reset: those targets go back to their TCP
        env._target_p[reset], env._target_q[reset] = env._last_tcp[reset, :3], env._last_tcp[reset, 3:]
        inv = np.argsort(perm)
        mirror._target_p[inv[reset]], mirror._target_q[inv[reset]] = env._target_p[reset], env._target_q[reset]


@pytest.fixture(scope="module")
def venv3():
    with make_vector_env(3, split="train", obs_mode="state", camera_size=(32, 32), seed=0, max_episode_steps=50) as v:
        yield v


@settings(max_examples=5, deadline=None)
@given(plan=st.lists(st.tuples(st.sampled_from([-1.0, 1.0]), st.lists(st.booleans(), min_size=3, max_size=3)),
                     min_size=1, max_size=3))  # fmt: skip
def test_vector_observations_keep_the_env_order_through_partial_resets(venv3, plan):
    seeds = [100, 200, 300]
    obs, infos = venv3.reset(seeds=seeds)
    for sign, mask in plan:
        a = np.zeros((3, 7), np.float32)
        a[:, 6] = 1.0
        a[:, 2] = sign * 0.02 * np.array([1.0, -1.0, 1.0])  # env 1 moves against envs 0 and 2
        new_obs, _, _, _, infos = venv3.step(a)
        for i in range(3):
            assert infos[i]["seed"] == seeds[i]
            dz = new_obs[i].ee_pose[2] - obs[i].ee_pose[2]
            assert np.sign(dz) == np.sign(a[i, 2]) or abs(dz) < 2e-3  # blocked by the table at most
        idx = [i for i in range(3) if mask[i]]
        if idx:
            for i in idx:
                seeds[i] += 7
            reset_obs, reset_infos = venv3.reset(seeds=[seeds[i] for i in idx], env_idx=idx)
            assert [r["seed"] for r in reset_infos] == [seeds[i] for i in idx]
            for k, i in enumerate(idx):
                new_obs[i] = reset_obs[k]
        obs = new_obs
