"""Real-scale training paths of a policy: bf16 autocast, gradient checkpointing, LoRA on a loaded
checkpoint, optimizer state for trainable parameters only (issue #24)."""

from __future__ import annotations

import copy

import pytest
import torch
from test_models import make_obs

from simbridge.data.spec import PolicyContract
from simbridge.training.models import VLAPolicy, build_policy
from simbridge.training.models.adapters import LoRAOptions, apply_lora, count_parameters, trainable_names
from simbridge.training.models.precision import (
    configure_training,
    precision_of,
    set_gradient_checkpointing,
    set_precision,
    trainable_adamw,
)

torch.set_num_threads(1)
FAMILIES = ["openvla", "openvla-oft"]


def _policy(family: str, **overrides) -> VLAPolicy:
    return build_policy(family, "tiny", contract=PolicyContract(chunk_size=2), seed=0, **overrides).train()


def _step(policy: VLAPolicy, batch, tokens):
    """Teacher-forced log-probs and values of ``tokens``, and the gradients of a loss on both."""
    policy.zero_grad(set_to_none=True)
    ev = policy.evaluate(batch, tokens)
    (ev.logprobs.mean() + ev.values.pow(2).mean()).backward()
    return ev, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def inputs():
    probe = _policy("openvla-oft")
    batch = probe.prepare([make_obs(i) for i in range(3)])
    tokens = torch.randint(0, 256, (3, probe.num_action_tokens), generator=torch.Generator().manual_seed(0))
    return batch, tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_autocast_agrees_with_fp32_and_keeps_fp32_master_weights(family, inputs):
    batch, tokens = inputs
    fp32 = _policy(family)
    ev32, g32 = _step(fp32, batch, tokens)
    bf16 = configure_training(copy.deepcopy(fp32), precision="bf16")
    assert precision_of(bf16) == "bf16" and precision_of(fp32) == "fp32"
    ev16, g16 = _step(bf16, batch, tokens)
    # Weights, gradients and the outputs stay float32 (the matmuls ran in bf16).
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert all(g.dtype == torch.float32 for g in g16.values()) and ev16.logprobs.dtype == torch.float32
    # Stated tolerance: per-token log-probs within 0.02 nats (bf16 has 8 mantissa bits; measured ~6e-3
    # on log-probs near -5.5), values within 1e-2, the gradient within 3 % of its norm (measured ~0.9 %).
    torch.testing.assert_close(ev16.token_logprobs, ev32.token_logprobs, atol=0.02, rtol=0)
    torch.testing.assert_close(ev16.values, ev32.values, atol=1e-2, rtol=0)
    assert set(g16) == set(g32)
    a = torch.cat([g32[n].flatten() for n in g32])
    b = torch.cat([g16[n].flatten() for n in g32])
    assert (a - b).norm() / a.norm() < 0.03
    # Switching back to fp32 gives the fp32 computation exactly.
    set_precision(bf16, "fp32")
    torch.testing.assert_close(_step(bf16, batch, tokens)[0].logprobs, ev32.logprobs, atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(family, inputs):
    batch, tokens = inputs
    plain = _policy(family)
    checkpointed = copy.deepcopy(plain)
    assert set(set_gradient_checkpointing(checkpointed, True)) == {"language_model", "siglip"}

    def saved_bytes(policy):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ev, grads = _step(policy, batch, tokens)
        return ev, grads, total[0]

    ev0, g0, kept0 = saved_bytes(plain)
    ev1, g1, kept1 = saved_bytes(checkpointed)
    assert set(g0) == set(g1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(ev1.logprobs, ev0.logprobs, atol=1e-5, rtol=0)
    assert kept1 < 0.5 * kept0  # the layers' activations are recomputed, not kept


def test_optimizer_state_only_for_trainable_parameters():
    policy = _policy("openvla-oft", lora_rank=4)
    optim = trainable_adamw(policy, lr=1e-3, weight_decay=0.0)
    held = {id(p) for g in optim.param_groups for p in g["params"]}
    assert held == {id(p) for p in policy.parameters() if p.requires_grad}
    total, trainable = count_parameters(policy)
    assert 0 < trainable < total


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_a_saved_checkpoint_trains_only_adapters_and_merges_exactly(family, inputs, tmp_path):
    batch, tokens = inputs
    base = _policy(family)
    base.save_pretrained(tmp_path / "base")
    loaded = VLAPolicy.from_pretrained(tmp_path / "base").train()
    options = LoRAOptions(rank=4, targets=("q_proj", "v_proj"), trainable=("value_head",))
    apply_lora(loaded, options)
    names = trainable_names(loaded)
    assert names and all("lora_" in n or n.startswith("value_head.") for n in names)
    assert any(n.startswith("value_head.") for n in names)
    assert {n.split(".")[-3] for n in names if "lora_" in n} == {"lora_A", "lora_B"}
    assert all(("q_proj" in n or "v_proj" in n) for n in names if "lora_" in n)
    frozen = {n: p.detach().clone() for n, p in loaded.named_parameters() if not p.requires_grad}
    optim = trainable_adamw(loaded, lr=1e-2, weight_decay=0.0)
    for _ in range(3):
        _step(loaded, batch, tokens)
        optim.step()
    for n, p in loaded.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} is frozen but changed"
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)
    # Saved with its adapters, it reloads with them and the same trainable set.
    loaded.save_pretrained(tmp_path / "lora")
    again = VLAPolicy.from_pretrained(tmp_path / "lora")
    assert trainable_names(again) == names
    loaded.eval()
    with torch.no_grad():
        before = loaded.evaluate(batch, tokens)
        torch.testing.assert_close(again.evaluate(batch, tokens).logprobs, before.logprobs, atol=1e-5, rtol=0)
        assert loaded.merge_lora() > 0
        after = loaded.evaluate(batch, tokens)
    torch.testing.assert_close(after.token_logprobs, before.token_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(after.values, before.values, atol=1e-5, rtol=0)


def test_lora_options_are_checked():
    policy = _policy("openvla-oft")
    with pytest.raises(ValueError, match="lora_trainable"):
        apply_lora(policy, LoRAOptions(rank=2, trainable=("no_such_head",)))
    with pytest.raises(ValueError, match="lora_targets"):
        apply_lora(policy, LoRAOptions(rank=2, targets=("nope",)))
    with pytest.raises(ValueError, match="lora_rank"):
        LoRAOptions(rank=-1)
    lora = _policy("openvla-oft", lora_rank=4)
    with pytest.raises(ValueError, match="already has LoRA adapters of rank 4"):
        apply_lora(lora, LoRAOptions(rank=8))
    opts = LoRAOptions.from_kwargs({"lora_rank": 2, "lora_targets": "q_proj, v_proj", "lora_trainable": ""})
    assert opts.targets == ("q_proj", "v_proj") and opts.trainable == ()
