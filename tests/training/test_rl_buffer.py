"""The rollout buffer and its column <-> env-id layout, driven in-process (no Ray).

The worker classes are plain classes; ``drive`` below issues the same calls as
``RolloutCollector.collect`` in sequential mode (same per-call seeds, same crash handling), so
the buffer sees exactly what it sees in a run. The Ray-level checks (pipelined == sequential,
a real process crash) are in ``test_rl_ray.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simbridge.data.config import load_config
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.buffer import ColumnLayout, RolloutBuffer
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.records import EpisodeRecord
from simbridge.training.rl.rollout import call_seed
from simbridge.training.rl.toy import TOY_CONTRACT, ToyPolicy, ToyReachEnv
from simbridge.training.rl.workers import EnvWorker, RolloutWorker, episode_seed


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # the workers set their own thread count
    yield
    torch.set_num_threads(threads)


def toy_config(max_episode_steps: int = 3, **env) -> RLConfig:
    env = {"backend": "toy", "num_workers": 2, "envs_per_worker": 4, "pipeline_stage_num": 2,
           "spec": {"max_episode_steps": max_episode_steps}, **env}
    return load_config(RLConfig, data={"env": env, "policy": {"backend": "toy"}, "runner": {"rollout_steps": 5},
                                       "algorithm": {"group_size": 2}, "reward": {"dense_coef": 1.0}})


def drive(cfg: RLConfig, episodic: bool = False, crash: tuple[int, int, int] | None = None) -> RolloutBatch:
    """One iteration, sequential; ``crash=(t, stage, worker)``: that stage fails before step t."""
    layout = ColumnLayout.from_config(cfg.env)
    S, W, T = layout.num_stages, layout.num_workers, cfg.runner.rollout_steps
    envs = [EnvWorker(cfg, w, episodic) for w in range(W)]
    rollout = RolloutWorker(cfg, TOY_CONTRACT)
    rollout.set_weights((0, rollout.policy.state_dict()))
    buffer = RolloutBuffer(layout, T, episodic, cfg.algorithm.group_size)
    results = [[envs[w].reset_stage(s, 0) for w in range(W)] for s in range(S)]
    records: list[list] = [[None] * S for _ in range(T)]
    for t in range(T + 1):
        for s in range(S):
            for w in range(W):
                stepped = t > 0
                if crash == (t, s, w):  # what RolloutCollector._recover does
                    buffer.drop_running(t, s, w)
                    results[s][w], stepped = envs[w].reset_stage(s, 0), False
                buffer.add(t, s, w, results[s][w], stepped)
            actions, record = rollout.act(call_seed(cfg.runner.seed, 0, t, s), 0, *results[s])
            if t == T:
                buffer.set_last_values(s, record.values)
                continue
            records[t][s] = record
            results[s] = [envs[w].step_stage(s, actions, layout.row_offset(w)) for w in range(W)]
    return buffer.to_batch(records, version=0)


def initial_proprio(cfg: RLConfig, env_id: int) -> np.ndarray:
    """What the policy sees at step 0 of env ``env_id`` (its first episode's reset)."""
    seed = episode_seed(cfg.env.seed, env_id, cfg.env.num_envs, 0)
    obs, _ = ToyReachEnv(seed=cfg.env.seed + env_id).reset(seed=seed)
    return ToyPolicy().prepare([obs])["proprio"][0].numpy()


@pytest.mark.parametrize(("stages", "workers", "per_worker"), [(1, 1, 1), (2, 2, 4), (3, 2, 6), (4, 3, 8)])
def test_column_layout_is_a_bijection_that_matches_the_env_workers(stages, workers, per_worker):
    cfg = toy_config(num_workers=workers, envs_per_worker=per_worker, pipeline_stage_num=stages)
    layout = ColumnLayout.from_config(cfg.env)
    ids = layout.env_ids()
    assert sorted(ids.tolist()) == list(range(layout.num_envs))
    assert [layout.column(i) for i in ids] == list(range(layout.num_envs))
    for s in range(stages):
        stage = layout.stage_cols(s)
        for w in range(workers):
            cols = layout.cols(s, w)
            assert cols.start - stage.start == layout.row_offset(w)  # where step_stage reads its actions
            assert stage.start <= cols.start < cols.stop <= stage.stop
    # the env workers' own numbering of their stages agrees with the driver's columns
    for w in range(workers):
        worker = EnvWorker(cfg, w, episodic=False)
        for s in range(stages):
            np.testing.assert_array_equal(worker.reset_stage(s, 0).env_ids, ids[layout.cols(s, w)])


def test_each_column_holds_its_env_through_partial_resets():
    cfg = toy_config()
    batch = drive(cfg)
    ids = batch.extra["env_ids"]
    np.testing.assert_array_equal(ids, ColumnLayout.from_config(cfg.env).env_ids())
    for col, env_id in enumerate(ids):  # step 0 shows every column its own env's first reset
        np.testing.assert_array_equal(batch.obs["proprio"][0, col], initial_proprio(cfg, env_id))
    # 5 policy steps of 3-step episodes: every env was auto-reset mid-rollout, and all steps train
    assert batch.dones[2].all() and batch.valid.all()
    np.testing.assert_array_equal(batch.group_ids, ids // cfg.algorithm.group_size)


def test_a_crashed_stage_is_dropped_and_reset_in_its_own_columns():
    cfg = toy_config(max_episode_steps=4)
    layout = ColumnLayout.from_config(cfg.env)
    clean, crashed = drive(cfg), drive(cfg, crash=(3, 1, 0))
    cols = layout.cols(1, 0)
    # the running episodes (steps 0..2) are not trained on and end at step 2, with no reward
    assert not crashed.valid[:3, cols].any() and crashed.valid[3:, cols].all()
    assert crashed.dones[2, cols].all() and not crashed.rewards[2, cols].any() and clean.rewards[2, cols].all()
    # after the reset the same envs are in the same columns, back at their first initial state
    for col in range(cols.start, cols.stop):
        np.testing.assert_array_equal(crashed.obs["proprio"][3, col], initial_proprio(cfg, crashed.extra["env_ids"][col]))
    # stage 0 never saw the crash: its columns are exactly the clean run's
    s0 = layout.stage_cols(0)
    for name in ("tokens", "logprobs", "values", "rewards", "dones", "valid"):
        np.testing.assert_array_equal(getattr(crashed, name)[:, s0], getattr(clean, name)[:, s0], err_msg=name)
    assert clean.valid.all()


def test_episodic_crash_excludes_the_rest_of_the_iteration():
    cfg = toy_config(max_episode_steps=5)
    batch = drive(cfg, episodic=True, crash=(2, 0, 1))
    cols = ColumnLayout.from_config(cfg.env).cols(0, 1)
    assert not batch.valid[:, cols].any()  # GRPO: one episode per iteration, and it was lost
    others = np.ones(batch.shape[1], bool)
    others[cols] = False
    assert batch.valid[:, others].all()
    # and it leaves its group: a lost episode is not a member with return 0
    np.testing.assert_array_equal(batch.dropped, ~others)


def test_a_result_for_the_wrong_columns_is_refused():
    cfg = toy_config()
    layout = ColumnLayout.from_config(cfg.env)
    buffer = RolloutBuffer(layout, 2, episodic=False, group_size=2)
    result = EnvWorker(cfg, 1, episodic=False).reset_stage(0, 0)  # worker 1's envs 4, 5
    buffer.add(0, 0, 1, result, stepped=False)
    with pytest.raises(RuntimeError, match=r"returned envs \[4, 5\] for columns 0..1, which hold envs \[0, 1\]"):
        buffer.add(0, 0, 0, result, stepped=False)


def test_episode_records_keep_the_rollout_episodes_jsonl_keys():
    record = EpisodeRecord(env_id=3, seed=11, episode_return=1.5, length=7, success=True)
    assert record.to_dict() == {"env": 3, "seed": 11, "return": 1.5, "length": 7, "success": True}
