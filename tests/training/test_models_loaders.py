"""Loading OpenVLA-format checkpoints (Prismatic HF export layout) built here at toy size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

from simbridge.data.spec import Observation
from simbridge.training.models import OpenVLAOFTPolicy, OpenVLAPolicy, VLAPolicy
from simbridge.training.models.loaders import (
    CheckpointFormatError,
    load_pretrained_policy,
    openvla_bin_values,
)
from simbridge.training.models.text_tokenizer import template_corpus

torch.set_num_threads(1)
D, DEPTH, IMG, PATCH = 48, 2, 28, 14
Q01, Q99 = [-0.02] * 6 + [0.0], [0.03] * 6 + [1.0]


def _vit(gen, prefix: str, dino: bool) -> dict[str, torch.Tensor]:
    r = lambda *s: torch.randn(*s, generator=gen) * 0.2  # noqa: E731
    n = (IMG // PATCH) ** 2
    w = {f"{prefix}pos_embed": r(1, n, D), f"{prefix}patch_embed.proj.weight": r(D, 3, PATCH, PATCH),
         f"{prefix}patch_embed.proj.bias": r(D), f"{prefix}norm.weight": 1 + r(D), f"{prefix}norm.bias": r(D)}  # fmt: skip
    if dino:
        w |= {f"{prefix}cls_token": r(1, 1, D), f"{prefix}reg_token": r(1, 4, D)}
    else:
        w[f"{prefix}attn_pool.latent"] = r(1, 1, D)  # SigLIP's pooling head: unused, dropped
    for i in range(DEPTH):
        b = f"{prefix}blocks.{i}."
        w |= {b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
              b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
              b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(4 * D, D),
              b + "mlp.fc1.bias": r(4 * D), b + "mlp.fc2.weight": r(D, 4 * D), b + "mlp.fc2.bias": r(D)}  # fmt: skip
        if dino:
            w |= {b + "ls1.gamma": 1 + r(D), b + "ls2.gamma": 1 + r(D)}
    return w


def _reference_vit(w, prefix: str, x: torch.Tensor, dino: bool, heads: int = 3) -> torch.Tensor:
    """timm's ViT forward up to the penultimate block (Prismatic's features), written out by hand."""
    x = F.conv2d(x, w[prefix + "patch_embed.proj.weight"], w[prefix + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + w[prefix + "pos_embed"]
    if dino:
        b = x.shape[0]
        x = torch.cat(
            [w[prefix + "cls_token"].expand(b, -1, -1), w[prefix + "reg_token"].expand(b, -1, -1), x], 1
        )
    act = (lambda t: F.gelu(t)) if dino else (lambda t: F.gelu(t, approximate="tanh"))
    for i in range(DEPTH - 1):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (D,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).chunk(3, -1)
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, D // heads).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(D // heads), -1) @ split(v)
        h = F.linear(att.transpose(1, 2).reshape(x.shape), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        x = x + (h * w[p + "ls1.gamma"] if dino else h)
        h = F.layer_norm(x, (D,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        h = F.linear(act(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"],
                     w[p + "mlp.fc2.bias"])  # fmt: skip
        x = x + (h * w[p + "ls2.gamma"] if dino else h)
    return x[:, 5:] if dino else x


def write_openvla_checkpoint(path, norm_keys=("bridge_orig",)) -> dict[str, torch.Tensor]:
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(
        [
            *template_corpus(),
            "in: what action should the robot take to",
            "out:",
            *(f"item{i} zone{i * 7}" for i in range(300)),
        ],
        trainer,
    )
    tok.add_special_tokens(["<PAD>"])
    tok.save(str(path / "tokenizer.json"))
    base = tok.get_vocab_size(with_added_tokens=False)
    vocab = 64 * math.ceil((base + 1) / 64)
    text = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 256}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    w = _vit(gen, "vision_backbone.featurizer.", dino=True) | _vit(
        gen, "vision_backbone.fused_featurizer.", dino=False
    )
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"}, tie_word_embeddings=False)
    )
    w |= {f"language_model.{k}": v.clone() for k, v in lm.state_dict().items()}
    for i, (a, b) in enumerate([(2 * D, 8 * D), (8 * D, 64), (64, 64)], start=1):
        w[f"projector.fc{i}.weight"] = torch.randn(b, a, generator=gen) * 0.05
        w[f"projector.fc{i}.bias"] = torch.zeros(b)
    save_file({k: v.contiguous() for k, v in w.items()}, str(path / "model.safetensors"))
    stats = {k: {"action": {"q01": Q01, "q99": Q99, "mask": [True] * 6 + [False]}} for k in norm_keys}
    config = {"model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
              "timm_model_ids": ["vit_tiny_patch14_reg4_dinov2.lvd142m", "vit_tiny_patch14_siglip_224"],
              "image_sizes": [IMG, IMG], "use_fused_vision_backbone": True, "n_action_bins": 256,
              "norm_stats": stats, "text_config": text}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    return w


def _obs(i: int) -> Observation:
    rng = np.random.default_rng(i)
    return Observation(images={"scene": rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8)},
                       ee_pose=np.array([0.4, 0, 0.2, 1, 0, 0, 0], np.float32), gripper_width=0.04,
                       joint_positions=np.zeros(7, np.float32), instruction="Put the carrot on the plate.")  # fmt: skip


def test_openvla_checkpoint_converts_with_matching_vision_features(tmp_path):
    w = write_openvla_checkpoint(tmp_path / "openvla")
    policy = load_pretrained_policy(tmp_path / "openvla")
    assert isinstance(policy, OpenVLAPolicy) and policy.config.vision_order == ["dinov2", "siglip"]
    batch = policy.prepare([_obs(0), _obs(1)])
    x = batch["pixel_values"].flatten(0, 1)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        dino = _reference_vit(w, "vision_backbone.featurizer.", (x - mean) / std, dino=True)
        sig = _reference_vit(w, "vision_backbone.fused_featurizer.", (x - 0.5) / 0.5, dino=False)
        ref = torch.cat([dino, sig], -1)
        proj = policy.projector(ref)
        torch.testing.assert_close(policy.vision_tokens(batch["pixel_values"]), proj, atol=1e-4, rtol=1e-4)
    # The prompt is OpenVLA's, with its BOS and trailing token handling.
    text = policy.tokenizer.decode(batch["input_ids"][0].tolist())
    assert "take" in text and "carrot" in text and "plate" in text
    assert batch["input_ids"][0, 0] == policy.tokenizer.bos_id
    out = policy.act(batch, deterministic=True)
    begin = policy.action_token_begin
    assert begin == policy.tokenizer._tok.get_vocab_size(with_added_tokens=False) - 256
    assert torch.all((out.token_ids >= begin) & (out.token_ids < begin + 256))
    values = torch.tensor(openvla_bin_values())[out.tokens]
    torch.testing.assert_close(out.normalized_actions.flatten(1), values)
    acts = out.actions.numpy()
    assert np.all(acts[..., :6] >= np.array(Q01[:6]) - 1e-6) and np.all(
        acts[..., :6] <= np.array(Q99[:6]) + 1e-6
    )
    # Converted once, it is a SimBridge checkpoint like any other.
    policy.save_pretrained(tmp_path / "converted")
    again = VLAPolicy.from_pretrained(tmp_path / "converted")
    batch2 = again.prepare([_obs(0), _obs(1)])
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    torch.testing.assert_close(again.act(batch2, deterministic=True).actions, out.actions)
    assert load_pretrained_policy(tmp_path / "converted").config.action_token_offset == begin


def test_openvla_checkpoint_as_oft_and_bad_inputs(tmp_path):
    write_openvla_checkpoint(tmp_path / "ck", norm_keys=("bridge_orig", "fractal"))
    with pytest.raises(CheckpointFormatError, match="unnorm_key"):
        load_pretrained_policy(tmp_path / "ck")
    oft = load_pretrained_policy(tmp_path / "ck", family="openvla-oft", unnorm_key="fractal")
    assert isinstance(oft, OpenVLAOFTPolicy)
    out = oft.act(oft.prepare([_obs(0)]))
    assert out.actions.shape == (1, 1, 7)
    torch.testing.assert_close(oft.evaluate(oft.prepare([_obs(0)]), out.tokens).logprobs, out.logprobs)
    (tmp_path / "ck" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointFormatError, match=r"tokenizer\.json"):
        load_pretrained_policy(tmp_path / "ck", unnorm_key="fractal")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointFormatError, match="bert"):
        load_pretrained_policy(tmp_path / "other")
