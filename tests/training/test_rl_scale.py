"""RL at scale (issue #24): LoRA on ``init_checkpoint``, trainable-only weight sync, absolute paths
and the workers' run-directory probe, GPUs used when ``cluster.num_gpus`` is unset."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from simbridge.data.config import ConfigError, load_config
from simbridge.training.models import build_policy
from simbridge.training.models.adapters import trainable_names
from simbridge.training.rl.actor_worker import ActorWorker
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.paths import RunDirUnreachable, absolute_paths, check_run_dir
from simbridge.training.rl.placement import use_visible_gpus
from simbridge.training.rl.toy import TOY_CONTRACT
from simbridge.training.rl.weight_sync import WeightPayload, WeightSyncError, make_payload
from simbridge.training.rl.workers import EnvWorker, RolloutWorker

torch.set_num_threads(1)


def vla_config(tmp_path, **policy) -> RLConfig:
    data = {
        "env": {"backend": "toy", "envs_per_worker": 2, "pipeline_stage_num": 1},
        "policy": {"backend": "vla", "preset": "tiny", **policy},
        "actor": {"precision": "bf16", "gradient_checkpointing": True},
        "runner": {"root": str(tmp_path / "runs"), "progress": False},
    }
    return load_config(RLConfig, data=data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from simbridge.training.checkpoint import save_checkpoint

    policy = build_policy("openvla-oft", "tiny", contract=TOY_CONTRACT, seed=3)
    return save_checkpoint(policy, tmp_path_factory.mktemp("sft"), 1)


def _perturb_trainable(policy) -> None:
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)


def test_lora_on_init_checkpoint_syncs_only_the_trainable_tensors(checkpoint, tmp_path):
    kwargs = {"lora_rank": 4, "lora_targets": "q_proj,v_proj", "lora_trainable": "value_head"}
    cfg = vla_config(tmp_path, init_checkpoint=str(checkpoint), kwargs=kwargs)
    actor = ActorWorker(cfg, TOY_CONTRACT, run_dir=str(tmp_path))
    rollout = RolloutWorker(cfg, TOY_CONTRACT, run_dir=str(tmp_path))
    names = trainable_names(actor.policy)
    assert names and all("lora_" in n or n.startswith("value_head.") for n in names)
    held = {id(p) for g in actor.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in actor.policy.parameters() if p.requires_grad}
    _perturb_trainable(actor.policy)  # as an update would
    actor.version = 3
    payload = actor.get_weights()
    assert isinstance(payload, WeightPayload) and payload.version == 3
    assert sorted(payload.tensors) == sorted(names)  # the payload: trainable tensors only
    full = sum(t.numel() * t.element_size() for t in actor.policy.state_dict().values())
    assert payload.nbytes * 10 < full
    assert rollout.set_weights(payload) == 3
    ours, theirs = rollout.policy.state_dict(), actor.policy.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key  # the rollout copy equals the actor
    with pytest.raises(WeightSyncError, match="older than the held version 3"):
        rollout.set_weights(make_payload(actor.policy, 2))


def test_sync_refuses_a_rollout_built_from_other_frozen_weights(checkpoint, tmp_path):
    from simbridge.training.checkpoint import save_checkpoint

    kwargs = {"lora_rank": 2}
    actor = ActorWorker(vla_config(tmp_path, init_checkpoint=str(checkpoint), kwargs=kwargs), TOY_CONTRACT)
    another = save_checkpoint(build_policy("openvla-oft", "tiny", contract=TOY_CONTRACT, seed=4), tmp_path, 1)
    other = RolloutWorker(vla_config(tmp_path, init_checkpoint=str(another), kwargs=kwargs), TOY_CONTRACT)
    with pytest.raises(WeightSyncError, match="frozen weights differ"):
        other.set_weights(actor.get_weights())
    fresh = RolloutWorker(vla_config(tmp_path, kwargs=kwargs), TOY_CONTRACT)  # a fresh model trains its projector
    with pytest.raises(WeightSyncError, match=r"missing \['camera_embed.weight'"):
        fresh.set_weights(actor.get_weights())


def test_rl_lora_kwargs_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match="lora_rank"):
        vla_config(tmp_path, kwargs={"lora_rank": -1})
    with pytest.raises(ConfigError, match="precision"):
        load_config(RLConfig, data={"actor": {"precision": "fp8"}})


def test_paths_are_made_absolute_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(RLConfig, data={"runner": {"root": "runs", "resume": "runs/x"},
                                      "policy": {"init_checkpoint": "ckpt/iter_000001"}})  # fmt: skip
    out = absolute_paths(cfg)
    assert out.runner.root == str(tmp_path / "runs") and out.runner.resume == str(tmp_path / "runs/x")
    assert out.policy.init_checkpoint == str(tmp_path / "ckpt/iter_000001")


def test_a_worker_that_cannot_see_the_run_directory_fails_at_start_with_a_clear_message(tmp_path):
    check_run_dir(tmp_path, "actor worker")  # writable: passes and leaves nothing behind
    assert not list(tmp_path.iterdir())
    cfg = load_config(RLConfig, data={"env": {"backend": "toy", "envs_per_worker": 1, "pipeline_stage_num": 1}})
    missing = str(tmp_path / "on-another-node" / "run")
    with pytest.raises(RunDirUnreachable, match=r"env worker 0 on host .* cannot write and read the run "
                                                r"directory .*on-another-node/run: FileNotFoundError.*shared"):  # fmt: skip
        EnvWorker(cfg, 0, episodic=False, run_dir=missing)
    with pytest.raises(RunDirUnreachable, match="relative path"):
        check_run_dir("runs/x", "rollout worker")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunDirUnreachable, match="PermissionError"):
            check_run_dir(locked, "actor worker")


@pytest.mark.integration
def test_ray_workers_probe_the_run_directory_and_log_sync_bytes(tmp_path, tmp_path_factory):
    import ray

    from simbridge.data.runs import read_metrics
    from simbridge.training.rl.placement import create_worker_groups
    from simbridge.training.rl.runner import train

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        data = {"env": {"backend": "toy", "envs_per_worker": 2, "pipeline_stage_num": 1},
                "policy": {"backend": "toy"}, "cluster": {"num_gpus": 0},
                "runner": {"iterations": 2, "rollout_steps": 4, "root": str(tmp_path / "runs"), "progress": False}}  # fmt: skip
        cfg = load_config(RLConfig, data=data)
        with pytest.raises(RunDirUnreachable, match=r"worker .*cannot write and read the run directory /nonexistent"):
            create_worker_groups(cfg, TOY_CONTRACT, episodic=False, run_dir="/nonexistent/run")
        run = train(cfg)
        records = read_metrics(run)
        assert all(r["sync/bytes"] > 0 and r["time/sync"] >= 0 for r in records)
    finally:
        ray.shutdown()


def test_visible_gpus_are_used_when_num_gpus_is_unset(caplog):
    # No GPU here: the function is tested with the count torch.cuda.device_count() would give.
    unset = load_config(RLConfig, data={})
    assert unset.cluster.num_gpus is None
    cpu = use_visible_gpus(unset, 0)
    assert cpu.cluster.num_gpus == 0 and cpu.rollout.gpus_per_worker == cpu.actor.gpus_per_worker == 0
    with caplog.at_level(logging.INFO):
        gpu = use_visible_gpus(unset, 2)
    assert gpu.cluster.num_gpus == 2 and gpu.rollout.gpus_per_worker == 1.0 and "2 GPU(s) visible" in caplog.text
    split = use_visible_gpus(load_config(RLConfig, data={"cluster": {"placement": "disaggregated"}}), 1)
    assert split.rollout.gpus_per_worker == split.actor.gpus_per_worker == 0.5
    explicit = load_config(RLConfig, data={"cluster": {"num_gpus": 0}})
    assert use_visible_gpus(explicit, 4) is explicit  # an explicit 0 keeps the CPU
