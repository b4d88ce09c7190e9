"""A data-parallel actor (actor.parallel=ddp|fsdp2, two processes on gloo) updates as one process does.

Each test runs the production ActorWorker in two spawned processes that meet on 127.0.0.1 and
compares its losses, metrics and parameters with one process on the whole batch. The minibatch
(5 rows) does not split evenly over the processes, and micro-batches of 2 rows add gradient
accumulation. The Ray test runs the runner itself with two actor workers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from simbridge.data.config import ConfigError, load_config
from simbridge.training.rl.actor_worker import ActorWorker
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.distributed import DataParallel, free_port
from simbridge.training.rl.placement import resource_plan, use_visible_gpus
from simbridge.training.rl.toy import TOY_CONTRACT

T, N = 3, 4  # policy steps x envs: 12 training rows
UPDATES = 2  # PPO: the first is critic warm-up (the policy's gradients dropped), the second a full one


def toy_config(algo: str = "ppo", parallel: str = "none", workers: int = 1, micro: int | None = None,
               **sections: dict) -> RLConfig:  # fmt: skip
    data = {
        "env": {"backend": "toy", "envs_per_worker": N, "pipeline_stage_num": 1},
        "policy": {"backend": "toy", "kwargs": {"hidden": 16}},
        "algorithm": {"name": algo, "group_size": 2, "critic_warmup_iterations": 1 if algo == "ppo" else 0},
        "actor": {"lr": 1e-2, "value_lr": 1e-2, "minibatch_size": 5, "update_epochs": 2, "max_grad_norm": 0.5,
                  "parallel": parallel, "num_workers": workers, "micro_batch_size": micro},
    }  # fmt: skip
    for key, values in sections.items():
        data.setdefault(key, {}).update(values)
    return load_config(RLConfig, data=data)


def fixed_batch(cfg: RLConfig) -> RolloutBatch:
    """T x N steps with the fresh policy's log-probs and values (so the ratio starts at 1)."""
    rng = np.random.default_rng(0)
    policy = ActorWorker(cfg, TOY_CONTRACT).policy
    obs = {"proprio": rng.normal(size=(T, N, 8)).astype(np.float32)}
    tokens = rng.integers(0, policy.bins, size=(T, N, 7))
    with torch.no_grad():
        ev = policy.evaluate({"proprio": torch.from_numpy(obs["proprio"].reshape(T * N, 8))},
                             torch.from_numpy(tokens.reshape(T * N, 7)))  # fmt: skip
    return RolloutBatch(
        obs=obs, tokens=tokens, logprobs=ev.logprobs.numpy().reshape(T, N), values=ev.values.numpy().reshape(T, N),
        rewards=rng.normal(size=(T, N)).astype(np.float32), dones=np.zeros((T, N), bool),
        valid=np.ones((T, N), bool), last_values=np.zeros(N, np.float32), group_ids=np.arange(N) // 2,
        dropped=np.zeros(N, bool),
    )  # fmt: skip


def run_updates(worker: ActorWorker, batch: RolloutBatch, checkpoint_dir: str | None = None) -> dict:
    metrics = [worker.update(batch) for _ in range(UPDATES)]
    after_updates = worker.parallel.full_state_dict()
    # A checkpoint round trip (weights and optimizer state) before one more update.
    if checkpoint_dir is not None:
        path = worker.save(checkpoint_dir, UPDATES, {}, {})
        worker.load(path if worker.rank == 0 else f"{checkpoint_dir}/checkpoints/iter_{UPDATES:06d}")
        metrics.append(worker.update(batch))
    weights = worker.get_weights()
    return {
        "metrics": metrics,
        "state": worker.parallel.full_state_dict(),
        "payload": weights and weights.tensors,
        "after_updates": after_updates,
    }


#: (actor.parallel, algorithm) run by the same two processes in turn (one spawn: its start-up dominates).
CASES = [("ddp", "ppo"), ("ddp", "grpo"), ("fsdp2", "ppo"), ("fsdp2", "grpo")]


def _rank_main(rank: int, port: int, batches: dict, out: str, checkpoint_root: str) -> None:
    torch.set_num_threads(1)
    results = {}
    for parallel, algorithm in CASES:
        worker = ActorWorker(toy_config(algorithm, parallel, workers=2, micro=2), TOY_CONTRACT, rank=rank)
        worker.join("127.0.0.1", port)
        results[parallel, algorithm] = run_updates(
            worker, batches[algorithm], f"{checkpoint_root}/{parallel}_{algorithm}"
        )
    if rank == 0:
        torch.save(results, out)
    worker.parallel.close()


def assert_same(one: dict, many: dict, where: str = "", atol: float = 1e-5) -> None:
    for i, (a, b) in enumerate(zip(one["metrics"], many["metrics"], strict=True)):
        assert a.keys() == b.keys(), where
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=atol), f"{where}: update {i + 1}: {key}"
    for part in ("state", "payload"):
        assert one[part].keys() == many[part].keys(), where
        for name, value in one[part].items():
            torch.testing.assert_close(
                many[part][name], value, atol=atol, rtol=0, msg=f"{where}: {part} {name}"
            )


@pytest.mark.slow
def test_two_gloo_processes_update_as_one_process(tmp_path):
    from simbridge.training.rl.factories import load_rl_policy

    batches = {algorithm: fixed_batch(toy_config(algorithm)) for algorithm in ("ppo", "grpo")}
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank_main, args=(free_port(), batches, str(out), str(tmp_path)), nprocs=2)
    results = torch.load(out, weights_only=False)
    for parallel, algorithm in CASES:
        single_cfg = toy_config(algorithm)
        one = run_updates(
            ActorWorker(single_cfg, TOY_CONTRACT), batches[algorithm], str(tmp_path / f"one_{algorithm}")
        )
        many = results[parallel, algorithm]
        assert len(many["metrics"]) == UPDATES + 1
        assert_same(one, many, where=f"{parallel} {algorithm}")
        before = ActorWorker(single_cfg, TOY_CONTRACT).policy.state_dict()
        assert not torch.equal(before["trunk.0.weight"], many["state"]["trunk.0.weight"]), (
            "the policy trained"
        )
        # rank 0 wrote a whole (unsharded) checkpoint that loads as a plain policy, with the trained weights
        saved = load_rl_policy(single_cfg.policy, str(tmp_path / f"{parallel}_{algorithm}" / "checkpoints" /
                                                      f"iter_{UPDATES:06d}")).state_dict()  # fmt: skip
        torch.testing.assert_close(saved["trunk.0.weight"], one["after_updates"]["trunk.0.weight"], atol=1e-5,
                                   rtol=0)  # fmt: skip


def test_micro_batches_accumulate_to_the_whole_minibatch_update():
    cfg = toy_config("ppo")
    batch = fixed_batch(cfg)
    whole = run_updates(ActorWorker(cfg, TOY_CONTRACT), batch)
    accumulated = run_updates(ActorWorker(toy_config("ppo", micro=2), TOY_CONTRACT), batch)
    assert_same(whole, accumulated)


def test_every_process_gets_as_many_micro_batches_and_the_weights_sum_to_one():
    shares = []
    for rank in range(2):
        dp = DataParallel(torch.nn.Linear(1, 1))
        dp.rank, dp.world_size = rank, 2
        shares.append(dp.micro_batches(5, 2))
    assert [len(s) for s in shares] == [2, 2]  # rows 0-2 -> [0, 1], [2]; rows 3-4 -> [3], [4]
    assert sorted(int(r) for s in shares for rows, w in s if w for r in rows) == [0, 1, 2, 3, 4]
    assert sum(w for s in shares for _, w in s) == pytest.approx(1.0)
    dp = DataParallel(torch.nn.Linear(1, 1))
    dp.rank, dp.world_size = 1, 2
    (rows, weight), = dp.micro_batches(1, None)  # fmt: skip
    assert weight == 0.0 and len(rows) == 1  # nothing left: a zero-weight row keeps the collectives paired


def test_parallel_options_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"actor\.parallel.*ddp or fsdp2"):
        toy_config(workers=2)
    with pytest.raises(ConfigError, match=r"actor\.parallel"):
        toy_config(parallel="zero3")
    with pytest.raises(ConfigError, match=r"actor\.micro_batch_size"):
        toy_config(micro=0)
    with pytest.raises(ConfigError, match=r"actor\.gpus_per_worker.*whole GPUs"):
        toy_config(parallel="ddp", workers=2, actor={"gpus_per_worker": 0.5})
    with pytest.raises(ConfigError, match=r"actor\.num_workers.*cluster\.placement=disaggregated"):
        toy_config(parallel="ddp", workers=2, actor={"gpus_per_worker": 1})
    gpus = toy_config(
        parallel="ddp", workers=2, actor={"gpus_per_worker": 1}, cluster={"placement": "disaggregated"}
    )
    plan = resource_plan(gpus)
    assert plan.actor_bundles == [2, 3] and plan.total_gpus == 2  # one bundle and one GPU per actor process
    with pytest.raises(ConfigError, match=r"actor\.num_workers=2 with 2 GPU"):
        use_visible_gpus(toy_config(parallel="fsdp2", workers=2), visible=2)


def test_the_memory_plan_counts_fsdp2_shards_and_the_micro_batch():
    from simbridge.training.memory_plan import plan_rl

    base = {
        "env": {"backend": "toy"},
        "policy": {"family": "openvla"},
        "cluster": {"placement": "disaggregated"},
    }
    one = plan_rl(load_config(RLConfig, data=base)).groups[0]
    sharded = {**base, "actor": {"num_workers": 2, "parallel": "fsdp2", "micro_batch_size": 8}}
    two = plan_rl(load_config(RLConfig, data=sharded)).groups[0]
    assert (two.params, two.grads, two.optimizer) == (one.params // 2, one.grads // 2, one.optimizer // 2)
    assert one.activations == 8 * two.activations  # 8 rows of the 64-row minibatch at a time


@pytest.mark.slow
@pytest.mark.integration
def test_the_ray_actor_group_with_two_ddp_workers_updates_as_one_process(tmp_path, tmp_path_factory):
    import ray

    from simbridge.training.rl.factories import load_rl_policy
    from simbridge.training.rl.placement import create_worker_groups

    batch = fixed_batch(toy_config("ppo"))
    one = ActorWorker(toy_config("ppo"), TOY_CONTRACT)
    expected = [one.update(batch) for _ in range(UPDATES)]
    cfg = toy_config("ppo", "ddp", workers=2, micro=2, cluster={"num_cpus": 2, "num_gpus": 0})
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    try:
        groups = create_worker_groups(
            cfg, TOY_CONTRACT, episodic=False, run_dir=str(tmp_path)
        )  # as the runner
        try:
            metrics = [groups.actors.update(batch) for _ in range(UPDATES)]
            payload = ray.get(groups.actors.get_weights())
            path = groups.actors.save(str(tmp_path), UPDATES, {}, {})
        finally:
            groups.shutdown()
    finally:
        ray.shutdown()
    for a, b in zip(expected, metrics, strict=True):
        assert b["policy_loss"] == pytest.approx(a["policy_loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], abs=1e-5)
    saved = load_rl_policy(cfg.policy, path).state_dict()
    for name, value in one.policy.named_parameters():
        torch.testing.assert_close(payload.tensors[name], value.detach(), atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(saved[name], value.detach(), atol=1e-5, rtol=0, msg=name)
