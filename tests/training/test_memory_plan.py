"""The memory planner (``simbridge train ... --plan``, issue #24): exact parameter memory, refusal."""

from __future__ import annotations

import pytest

from simbridge.data.config import load_config
from simbridge.data.spec import ActionSpec, ObservationSpec, PolicyContract
from simbridge.training.memory_plan import MemoryShortfall, plan_rl, plan_sft
from simbridge.training.models import build_policy
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.toy import TOY_CONTRACT
from simbridge.training.sft import SFTConfig


def test_parameter_memory_is_the_exact_count_for_the_tiny_preset():
    cfg = load_config(SFTConfig, overrides=["model.preset=tiny", "model.use_proprio=false"])
    plan = plan_sft(cfg)
    contract = PolicyContract(observation=ObservationSpec(), action=ActionSpec(), chunk_size=cfg.model.chunk_size)
    real = build_policy("openvla-oft", "tiny", contract=contract, use_proprio=False)
    exact = sum(p.numel() for p in real.parameters())
    assert plan.num_parameters == exact
    (trainer,) = plan.groups
    assert trainer.params == 4 * exact and trainer.grads == 4 * exact and trainer.optimizer == 8 * exact


def test_rl_plan_counts_lora_and_places_actor_and_rollout():
    data = {"env": {"backend": "toy"}, "policy": {"family": "openvla", "kwargs": {"lora_rank": 4}},
            "cluster": {"placement": "disaggregated", "gpu_memory_gb": 80}}  # fmt: skip
    plan = plan_rl(load_config(RLConfig, data=data))
    real = build_policy("openvla", "tiny", contract=TOY_CONTRACT, lora_rank=4)
    assert plan.num_parameters == sum(p.numel() for p in real.parameters())
    assert plan.num_trainable == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert plan.gpus == [["actor"], ["rollout"]]
    actor, rollout = plan.groups
    assert rollout.kv_cache > 0 and rollout.grads == 0 and actor.optimizer == 8 * plan.num_trainable
    assert actor.activations_checkpointed < actor.activations_plain
    plan.check()  # 80 GB holds a tiny model


def test_planner_refuses_what_cannot_fit_naming_the_shortfall_and_options():
    cfg = load_config(SFTConfig, overrides=["model.preset=small", "optim.batch_size=64", "gpu_memory_gb=1"])
    plan = plan_sft(cfg)
    need = plan.groups[0].total
    with pytest.raises(MemoryShortfall, match=r"trainer needs .* GB on one GPU, which has 1\.000 GB: short by") as e:
        plan.check()
    message = str(e.value)
    assert f"{(need - 2**30) / 2**30:.3f} GB" in message
    for option in ("model.lora_rank", "model.gradient_checkpointing=true", "model.precision=bf16", "optim.batch_size"):
        assert option in message


def test_cli_plan_prints_and_exits_2_when_it_cannot_fit(capsys):
    from simbridge.data.cli import main

    assert main(["train", "sft", "--plan", "model.preset=tiny", "gpu_memory_gb=40"]) == 0
    out = capsys.readouterr().out
    assert "trainer" in out and "optimizer" in out and "fits" in out
    code = main(["train", "grpo", "--plan", "env.backend=toy", "policy.preset=small", "cluster.gpu_memory_gb=0.1",
                 "algorithm.group_size=2"])  # fmt: skip
    assert code == 2
    assert "short by" in capsys.readouterr().err
