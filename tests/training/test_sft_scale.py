"""SFT at scale (issue #24): LoRA on ``model.init_from``, bf16 autocast and gradient checkpointing
in a real run; the config refuses bad LoRA options."""

from __future__ import annotations

import pytest
import torch
from test_sft import write_demo_store

from simbridge.data.config import ConfigError, load_config
from simbridge.training.checkpoint import list_checkpoints, load_checkpoint, load_training_state
from simbridge.training.models.adapters import trainable_names
from simbridge.training.sft import SFTConfig, build_for_demos, load_demos, train_sft

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_demo_store(tmp_path_factory.mktemp("demos") / "demos.zarr")


def test_lora_on_init_from_trains_only_adapters_in_bf16_with_checkpointing(store, tmp_path):
    demos = load_demos(store, image_size=64)
    saved = build_for_demos(load_config(SFTConfig, overrides=["model.use_proprio=false"]), demos)
    saved.save_pretrained(tmp_path / "pretrained")
    overrides = [f"data.store={store}", f"root={tmp_path}", "optim.steps=4", "optim.batch_size=4",
                 "optim.warmup_steps=1", "log_every=2", "val_every=4", "checkpoint_every=4",
                 "eval.enabled=false", "progress=false", "threads=1", "model.use_proprio=false",
                 f"model.init_from={tmp_path / 'pretrained'}", "model.lora_rank=4",
                 "model.lora_targets=[q_proj,v_proj]", "model.lora_trainable=[value_head,action_queries]",
                 "model.precision=bf16", "model.gradient_checkpointing=true", "optim.lr=1e-2"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides))
    policy = load_checkpoint(list_checkpoints(run)[-1])
    names = trainable_names(policy)
    assert names and all("lora_" in n or n.split(".")[0] in ("value_head", "action_queries") for n in names)
    assert policy.config.lora_rank == 4 and policy.config.lora_targets == ["q_proj", "v_proj"]
    # The optimizer held the trainable tensors only (state for those that got gradients: SFT's loss
    # does not reach the value head).
    state = load_training_state(list_checkpoints(run)[-1])["optimizer"]
    assert len(state["param_groups"][0]["params"]) == len(names) and 0 < len(state["state"]) <= len(names)
    # Frozen weights are the init_from weights; the adapters moved; merging keeps the outputs.
    before = saved.state_dict()
    for name, value in policy.state_dict().items():
        if "lora_" in name or name.split(".")[0] in ("value_head", "action_queries"):
            continue
        assert torch.equal(value, before[name.replace(".base_layer", "")]), name
    assert any(v.abs().sum() > 0 for k, v in policy.state_dict().items() if "lora_B" in k)


def test_sft_lora_config_errors():
    with pytest.raises(ConfigError, match="lora_rank"):
        load_config(SFTConfig, overrides=["model.lora_rank=-2"])
    with pytest.raises(ConfigError, match="precision"):
        load_config(SFTConfig, overrides=["model.precision=fp16"])
