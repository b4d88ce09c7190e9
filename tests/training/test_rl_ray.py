"""RL worker groups on a real local Ray instance (one per module) with the ToyReach task.

Pipelined vs sequential rollouts, an end-to-end PPO run that learns, resume, the resource
check and a crashed env worker. ToyReach/ToyPolicy (simbridge.training.rl.toy) speak the
same interfaces as the ManiSkill envs and the VLA policies and cost milliseconds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import ray

from simbridge.data.config import load_config
from simbridge.data.runs import read_metrics
from simbridge.training.checkpoint import list_checkpoints
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.placement import ResourceShortfall, create_worker_groups
from simbridge.training.rl.rollout import RolloutCollector
from simbridge.training.rl.runner import train
from simbridge.training.rl.toy import TOY_CONTRACT

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", autouse=True)
def ray_instance(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


def toy_config(tmp_path, **sections) -> RLConfig:
    data = {
        "env": {"backend": "toy", "spec": {"max_episode_steps": 20}, "envs_per_worker": 8, "pipeline_stage_num": 2},
        "policy": {"backend": "toy"},
        "actor": {"lr": 3e-3, "minibatch_size": 128, "update_epochs": 2},
        "reward": {"dense_coef": 1.0},
        "runner": {"iterations": 2, "rollout_steps": 16, "root": str(tmp_path / "runs"), "name": "toy",
                   "progress": False, "checkpoint_every": 1},
    }
    for key, values in sections.items():
        data.setdefault(key, {}).update(values)
    return load_config(RLConfig, data=data)


def _collect(cfg: RLConfig, iterations: int = 2):
    groups = create_worker_groups(cfg, TOY_CONTRACT, episodic=False)
    try:
        collector = RolloutCollector(cfg, groups.env_workers, groups.rollout, episodic=False, uses_critic=True)
        version = ray.get(groups.rollout.set_weights.remote(groups.actor.get_weights.remote()))
        return [collector.collect(it, version) for it in range(iterations)], collector.pipelined
    finally:
        groups.shutdown()


def test_pipelined_and_sequential_rollouts_give_identical_trajectories(tmp_path):
    env = {"num_workers": 2, "cpus_per_worker": 0.5, "envs_per_worker": 4, "pipeline_stage_num": 2}
    piped, is_piped = _collect(toy_config(tmp_path, env=env, cluster={"placement": "hybrid"}))
    seq, is_seq_piped = _collect(toy_config(tmp_path, env=env, cluster={"placement": "collocated"}))
    assert is_piped and not is_seq_piped
    for (a, sa), (b, sb) in zip(piped, seq, strict=True):
        assert a.rewards.shape == (16, 8)
        for name in ("tokens", "logprobs", "values", "rewards", "dones", "valid", "last_values"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        np.testing.assert_array_equal(a.obs["proprio"], b.obs["proprio"])
        assert sa.episodes == sb.episodes  # env ids, seeds, returns, lengths, successes
        assert sa.env_steps == sb.env_steps == 16 * 8
    assert piped[1][0].dones.any(), "episodes end (truncated at 20 steps) in the second iteration"
    # the trajectories are not trivially equal: envs differ and sampling is stochastic
    assert not np.array_equal(piped[0][0].tokens[:, 0], piped[0][0].tokens[:, 1])


def test_ppo_end_to_end_improves_return(tmp_path):
    cfg = toy_config(tmp_path, runner={"iterations": 14, "checkpoint_every": 100}, env={"envs_per_worker": 16})
    run_dir = train(cfg)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, 15))
    returns = [r["episode_return"] for r in records if "episode_return" in r]
    success = [r["success_rate"] for r in records if "success_rate" in r]
    early, late = np.mean(returns[:3]), np.mean(returns[-3:])
    assert late > early + 1.5, f"return did not improve: {returns}"
    assert np.mean(success[-3:]) > np.mean(success[:3]) + 0.2, f"success did not improve: {success}"
    last = records[-1]
    for key in ("env_steps_per_s", "time/env", "time/inference", "time/update", "time/sync", "approx_kl",
                "clip_fraction", "value_loss"):
        assert key in last and np.isfinite(last[key]), key
    assert (run_dir / "checkpoints" / "iter_000014" / "simbridge_checkpoint.json").is_file()  # final checkpoint
    assert list((run_dir / "tb").iterdir()), "TensorBoard events written"


def test_resume_continues_from_the_checkpoint_iteration(tmp_path):
    first = train(toy_config(tmp_path, runner={"iterations": 2}))
    announced = (first / "checkpoints" / "announce.jsonl").read_text().splitlines()
    assert len(announced) == 2
    resumed = train(toy_config(tmp_path, runner={"iterations": 4, "resume": str(first), "keep_checkpoints": 1}))
    assert resumed == first
    records = read_metrics(first)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # the weights version continues from the checkpoint's optimizer/training state
    assert [r["weights_version"] for r in records] == [0, 1, 2, 3]
    assert (first / "checkpoints" / "iter_000004").is_dir()
    assert len((first / "checkpoints" / "announce.jsonl").read_text().splitlines()) == 4
    # runner.keep_checkpoints=1: the newest and the one with the best training success rate remain
    success = {r["step"]: r["success_rate"] for r in records if math.isfinite(r.get("success_rate", math.nan))}
    kept = {4} | ({max(sorted(success), key=lambda s: success[s])} if success else set())  # first of equals
    assert [p.name for p in list_checkpoints(first)] == [f"iter_{s:06d}" for s in sorted(kept)]


def test_time_budget_stops_with_a_checkpoint_that_resumes(tmp_path):
    # A budget shorter than Ray's start-up: the run stops after its first iteration, saving it
    # although checkpoint_every is 5, and resuming it without a budget finishes the run.
    run = train(toy_config(tmp_path, runner={"iterations": 10, "checkpoint_every": 5, "time_budget_min": 1e-4}))
    assert [r["step"] for r in read_metrics(run)] == [1]
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*")) == ["iter_000001"]
    train(toy_config(tmp_path, runner={"iterations": 3, "checkpoint_every": 5, "resume": str(run)}))
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert (run / "checkpoints" / "iter_000003").is_dir()


def test_resource_shortfall_fails_before_starting(tmp_path):
    cfg = toy_config(tmp_path, cluster={"placement": "disaggregated"})  # 1 env + rollout + actor = 3 CPU
    with pytest.raises(ResourceShortfall, match=r"3 CPU needed but the Ray cluster has 2 \(short by 1\)"):
        train(cfg)
    assert not (tmp_path / "runs").exists(), "no run directory for a run that never started"
    live = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
    assert not live, f"nothing may stay reserved: {live}"


def test_crashed_env_worker_is_restarted_and_its_episodes_dropped(tmp_path):
    marker = tmp_path / "crashed"
    cfg = toy_config(
        tmp_path,
        env={"envs_per_worker": 2, "pipeline_stage_num": 2, "spec": {"max_episode_steps": 10},
             "kwargs": {"crash_after_steps": 4, "crash_marker": str(marker)}},
        runner={"rollout_steps": 10},
    )
    groups = create_worker_groups(cfg, TOY_CONTRACT, episodic=False)
    try:
        pid_before = ray.get(groups.env_workers[0].pid.remote())
        collector = RolloutCollector(cfg, groups.env_workers, groups.rollout, episodic=False, uses_critic=True)
        version = ray.get(groups.rollout.set_weights.remote(groups.actor.get_weights.remote()))
        batch, stats = collector.collect(0, version)
        pid_after = ray.get(groups.env_workers[0].pid.remote())
        batch2, stats2 = collector.collect(1, version)  # the run goes on
    finally:
        groups.shutdown()
    assert marker.read_text() == str(pid_before) and pid_after != pid_before  # a real process death + restart
    # one process death, counted once although both of its stages failed
    assert stats.crashes == 1 and stats.dropped_episodes == 2
    # the crash happened during step 3 (stage 0): steps 0..3 of both stages' episodes are not trained on
    assert not batch.valid[:4].any() and batch.dones[3].all()
    assert batch.valid[4:].all()
    # dropped episodes are not counted: any finished episode started after the restart
    assert all(e.length <= 6 for e in stats.episodes)
    assert stats2.crashes == 0 and batch2.valid.all()


def test_grpo_runs_one_episode_per_env_per_iteration_in_same_state_groups(tmp_path):
    cfg = toy_config(tmp_path, algorithm={"name": "grpo", "group_size": 4}, reward={"dense_coef": 0.0},
                     env={"spec": {"max_episode_steps": 12}}, runner={"iterations": 2, "checkpoint_every": 100})
    run_dir = train(cfg)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    episodes = [json.loads(line) for line in (run_dir / "rollout_episodes.jsonl").read_text().splitlines()]
    for it in (1, 2):
        seeds = {e["env"]: e["seed"] for e in episodes if e["iteration"] == it}
        assert sorted(seeds) == list(range(8))
        assert len({seeds[i] for i in range(4)}) == 1 and len({seeds[i] for i in range(4, 8)}) == 1
        assert seeds[0] != seeds[4]  # groups start from different states
    for r in records:
        assert r["episodes"] == 8  # every env ran exactly one (whole) episode
        assert 0.0 <= r["groups_kept_fraction"] <= 1.0
        assert r["env_steps"] <= 8 * 12


def test_fixed_initial_states_cycle_through_the_configured_seeds(tmp_path):
    """``env.num_initial_states=3``: every training episode starts from seed 5, 6 or 7 (LIBERO-style
    fixed initial states), and all three are used."""
    cfg = toy_config(tmp_path, env={"seed": 5, "num_initial_states": 3, "spec": {"max_episode_steps": 4}})
    [(_, stats)], _ = _collect(cfg, iterations=1)
    seeds = [e.seed for e in stats.episodes]
    assert len(seeds) >= 8 and set(seeds) == {5, 6, 7}, seeds
    with pytest.raises(Exception, match="num_initial_states"):
        toy_config(tmp_path, env={"num_initial_states": -1})
