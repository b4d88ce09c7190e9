"""Load policies from local directories: SimBridge checkpoints and real OpenVLA / OpenVLA-OFT ones.

    policy = load_pretrained_policy("runs/sft_tiny/<stamp>/checkpoints/iter_001500")  # SimBridge
    policy = load_pretrained_policy("/models/openvla-7b", unnorm_key="bridge_orig")     # OpenVLA
    policy = load_pretrained_policy("/models/openvla-7b", family="openvla-oft")         # as OFT
    policy.save_pretrained("runs/converted/openvla-7b")   # now a SimBridge checkpoint

Nothing is downloaded: download the checkpoint yourself (``huggingface-cli download
openvla/openvla-7b --local-dir /models/openvla-7b``) and pass the directory.

**OpenVLA format** (``config.json`` with ``"model_type": "openvla"``, Prismatic's HF export): the
weights are ``vision_backbone.featurizer.*`` / ``vision_backbone.fused_featurizer.*`` (timm
ViTs: DINOv2-with-registers and SigLIP), ``projector.fc1..fc3`` and ``language_model.*``
(Llama-2). They are converted to the transformers modules this package uses
(``Dinov2WithRegistersModel``, ``SiglipVisionModel``, ``LlamaForCausalLM``): fused ``qkv``
projections are split, DINOv2's patch-only position embeddings get a zero row for the CLS
token, SigLIP's attention-pool head is dropped. Features come from the second-to-last block
(as Prismatic's ``get_intermediate_layers``) in the order DINOv2, SigLIP. Actions keep
OpenVLA's token layout: bin ``b`` is vocabulary id ``32000 - 256 + b`` and decodes to
OpenVLA's bin centre ``centers[clip(255 - b, 0, 254)]``. The Llama ``tokenizer.json`` is
used with OpenVLA's prompt ``In: What action should the robot take to {instruction}?\\nOut:``
and normalization statistics come from ``config.json``'s ``norm_stats[unnorm_key]``.

``family="openvla-oft"`` puts the same backbone under the parallel decoder: action queries
start at zero (OFT feeds empty action embeddings), the bins are read by the LM head, and the
value head (and OFT's L1 head, when requested) start untrained. OpenVLA-OFT's own
``action_head--*.pt`` / ``proprio_projector--*.pt`` files are not converted.

On this machine the converter is tested on small OpenVLA-format checkpoints that the tests
build themselves (``tests/training/test_models_loaders.py``), not on the 7B weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.training.models.action_tokenizer import ActionStats
from simbridge.training.models.configuration import VLAConfig
from simbridge.training.models.modeling import VLAPolicy
from simbridge.training.models.text_tokenizer import TOKENIZER_FILE, InstructionTokenizer

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
#: timm ViT names -> attention heads (not recoverable from the weights' shapes).
_TIMM_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_so400m": 16, "vit_huge": 16,
               "vit_giant": 24}  # fmt: skip


class CheckpointFormatError(ValueError):
    """A directory is not a policy checkpoint this loader understands; the message says why."""


def detect_format(path: str | Path) -> str:
    """``simbridge`` or ``openvla`` (from config.json's model_type)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise CheckpointFormatError(f"{cfg_file} is missing: {path} is not a policy checkpoint directory")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type == VLAConfig.model_type:
        return "simbridge"
    if model_type == "openvla":
        return "openvla"
    raise CheckpointFormatError(
        f"{cfg_file}: model_type {model_type!r} is not supported; expected {VLAConfig.model_type!r} "
        "(a SimBridge checkpoint) or 'openvla' (an OpenVLA / OpenVLA-OFT HF export)"
    )


def load_pretrained_policy(
    path: str | Path,
    family: str | None = None,
    unnorm_key: str | None = None,
    contract: PolicyContract | None = None,
) -> VLAPolicy:
    """A policy from a local SimBridge checkpoint / run directory or an OpenVLA checkpoint."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists():
        from simbridge.training.checkpoint import resolve_checkpoint

        p = resolve_checkpoint(p)
    if detect_format(p) == "simbridge":
        return VLAPolicy.from_pretrained(p)
    return convert_openvla(p, family=family or "openvla", unnorm_key=unnorm_key, contract=contract)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointFormatError(
            f"{path} holds no *.safetensors weights (only safetensors exports are supported)"
        )
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights


def _heads(timm_id: str, dim: int) -> int:
    for prefix, heads in _TIMM_HEADS.items():
        if timm_id.startswith(prefix) and dim % heads == 0:
            return heads
    return max(1, dim // 64)


def _split_qkv(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(w.chunk(3, dim=0))  # type: ignore[return-value]


def _vit_blocks(weights: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in weights if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _convert_dinov2(w: dict[str, torch.Tensor], p: str, depth: int) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.cls_token": w[p + "cls_token"],
        "embeddings.register_tokens": w[p + "reg_token"],
        # timm's reg4 DINOv2 embeds positions of patches only: the CLS row is zero.
        "embeddings.position_embeddings": torch.cat(
            [torch.zeros_like(w[p + "pos_embed"][:, :1]), w[p + "pos_embed"]], 1
        ),
        "embeddings.patch_embeddings.projection.weight": w[p + "patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": w[p + "patch_embed.proj.bias"],
        "layernorm.weight": w[p + "norm.weight"],
        "layernorm.bias": w[p + "norm.bias"],
    }
    for i in range(depth):
        b, o = f"{p}blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(w[b + f"attn.qkv.{kind}"])
            out |= {o + f"attention.q_proj.{kind}": q, o + f"attention.k_proj.{kind}": k,
                    o + f"attention.v_proj.{kind}": v, o + f"attention.o_proj.{kind}": w[b + f"attn.proj.{kind}"],
                    o + f"norm1.{kind}": w[b + f"norm1.{kind}"], o + f"norm2.{kind}": w[b + f"norm2.{kind}"],
                    o + f"mlp.fc1.{kind}": w[b + f"mlp.fc1.{kind}"], o + f"mlp.fc2.{kind}": w[b + f"mlp.fc2.{kind}"]}  # fmt: skip
        out[o + "layer_scale1.lambda1"] = w[b + "ls1.gamma"]
        out[o + "layer_scale2.lambda1"] = w[b + "ls2.gamma"]
    return out


def _convert_siglip(w: dict[str, torch.Tensor], p: str, depth: int) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.position_embedding.weight": w[p + "pos_embed"][0],
        "embeddings.patch_embedding.weight": w[p + "patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": w[p + "patch_embed.proj.bias"],
        "post_layernorm.weight": w[p + "norm.weight"],
        "post_layernorm.bias": w[p + "norm.bias"],
    }
    for i in range(depth):
        b, o = f"{p}blocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(w[b + f"attn.qkv.{kind}"])
            out |= {o + f"self_attn.q_proj.{kind}": q, o + f"self_attn.k_proj.{kind}": k,
                    o + f"self_attn.v_proj.{kind}": v, o + f"self_attn.out_proj.{kind}": w[b + f"attn.proj.{kind}"],
                    o + f"layer_norm1.{kind}": w[b + f"norm1.{kind}"], o + f"layer_norm2.{kind}": w[b + f"norm2.{kind}"],
                    o + f"mlp.fc1.{kind}": w[b + f"mlp.fc1.{kind}"], o + f"mlp.fc2.{kind}": w[b + f"mlp.fc2.{kind}"]}  # fmt: skip
    return out


def _encoder_config(
    kind: str, w: dict[str, torch.Tensor], p: str, timm_id: str, image_size: int
) -> dict[str, Any]:
    dim = w[p + "pos_embed"].shape[-1]
    patch = w[p + "patch_embed.proj.weight"].shape[-1]
    depth = _vit_blocks(w, p)
    mlp = w[p + "blocks.0.mlp.fc1.weight"].shape[0]
    common = {"hidden_size": dim, "num_hidden_layers": depth, "num_attention_heads": _heads(timm_id, dim),
              "image_size": image_size, "patch_size": patch}  # fmt: skip
    if kind == "dinov2":
        return {"model_type": "dinov2_with_registers", **common, "mlp_ratio": mlp // dim,
                "num_register_tokens": w[p + "reg_token"].shape[1], "layer_norm_eps": 1e-6}  # fmt: skip
    return {"model_type": "siglip_vision_model", **common, "intermediate_size": mlp, "vision_use_head": False,
            "layer_norm_eps": 1e-6}  # fmt: skip


def openvla_bin_values(num_bins: int = 256) -> list[float]:
    """Normalized action of bin ``b`` under OpenVLA's tokenization (ids count down from the vocab end)."""
    edges = np.linspace(-1, 1, num_bins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    return [float(centers[min(max(num_bins - 1 - b, 0), num_bins - 2)]) for b in range(num_bins)]


def convert_openvla(
    path: str | Path,
    family: str = "openvla",
    unnorm_key: str | None = None,
    contract: PolicyContract | None = None,
) -> VLAPolicy:
    """Convert a local OpenVLA (Prismatic HF export) checkpoint into a :class:`VLAPolicy`."""
    from simbridge.training.models.registry import POLICIES

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    w = _load_weights(path)
    timm_ids = list(raw.get("timm_model_ids") or ["dinov2", "siglip"])
    image_size = int((raw.get("image_sizes") or [224])[0])
    prefixes = ["vision_backbone.featurizer."]
    if any(k.startswith("vision_backbone.fused_featurizer.") for k in w):
        prefixes.append("vision_backbone.fused_featurizer.")
    encoders: dict[str, tuple[str, str]] = {}
    order = []
    for i, p in enumerate(prefixes):
        kind = "dinov2" if (p + "cls_token") in w else "siglip"
        encoders[kind] = (p, timm_ids[i] if i < len(timm_ids) else kind)
        order.append(kind)

    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointFormatError(
            f"{tokenizer_file} is missing: the OpenVLA checkpoint needs its Llama tokenizer"
        )
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    base_vocab = tok.get_vocab_size(with_added_tokens=False)
    if base_vocab <= int(raw.get("n_action_bins", 256)):
        raise CheckpointFormatError(
            f"{tokenizer_file}: {base_vocab} tokens leave no room for the action bins"
        )
    pad = "<PAD>" if tok.token_to_id("<PAD>") is not None else "<pad>"
    specials = [pad, "<s>", "</s>", "<unk>"]
    suffix = [29871] if base_vocab == 32000 else []  # OpenVLA appends Llama's empty "▁" token

    stats_all = raw.get("norm_stats") or {}
    if unnorm_key is None:
        if len(stats_all) > 1:
            raise CheckpointFormatError(
                f"pass unnorm_key=...: this checkpoint has statistics for {sorted(stats_all)}"
            )
        unnorm_key = next(iter(stats_all), None)
    if unnorm_key is not None and unnorm_key not in stats_all:
        raise CheckpointFormatError(
            f"unnorm_key {unnorm_key!r} not in the checkpoint's norm_stats {sorted(stats_all)}"
        )
    if unnorm_key is None:
        stats = ActionStats.from_action_spec()
    else:
        a = stats_all[unnorm_key]["action"]
        stats = ActionStats(q01=a["q01"], q99=a["q99"], normalize_mask=a.get("mask", [True] * 6 + [False]))

    fused = len(prefixes) > 1
    proj = [w[f"projector.fc{i}.weight"].shape[0] for i in (1, 2, 3) if f"projector.fc{i}.weight" in w]
    text_config = dict(raw["text_config"])
    text_config.setdefault("model_type", "llama")
    text_config["tie_word_embeddings"] = False
    num_bins = int(raw.get("n_action_bins", 256))
    contract = contract or PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", image_size, image_size),),
                                                                      use_proprio=False))  # fmt: skip
    values: dict[str, Any] = {
        "family": family,
        "preset": "openvla-7b" if text_config.get("hidden_size", 0) >= 4096 else "openvla-converted",
        "image_size": image_size,
        "vision_feature_layer": -2,
        "vision_order": order,
        "projector_dims": proj,
        "text_config": text_config,
        "camera_names": list(contract.observation.camera_names),
        "use_proprio": False,
        "chunk_size": contract.chunk_size,
        "num_action_bins": num_bins,
        "text_vocab_size": base_vocab,
        "action_token_offset": base_vocab - num_bins,
        "action_bin_values": openvla_bin_values(num_bins),
        "prompt_template": OPENVLA_PROMPT,
        "prompt_suffix_ids": suffix,
        "special_tokens": specials,
        "max_text_tokens": 64,
        "contract": contract.to_dict(),
    }
    for kind, (p, timm_id) in encoders.items():
        values[f"{kind}_config"] = _encoder_config(kind, w, p, timm_id, image_size)
    if (not fused and len(proj) != 2) or (fused and len(proj) != 3):
        raise CheckpointFormatError(
            f"projector has {len(proj)} layers; expected {3 if fused else 2} for this backbone"
        )
    config = VLAConfig(**values)
    policy = POLICIES[family](config)

    state: dict[str, torch.Tensor] = {}
    for kind, (p, _) in encoders.items():
        conv = _convert_dinov2 if kind == "dinov2" else _convert_siglip
        state |= {f"{kind}.{k}": v for k, v in conv(w, p, _vit_blocks(w, p)).items()}
    for i, _ in enumerate(proj):
        state[f"projector.{2 * i}.weight"] = w[f"projector.fc{i + 1}.weight"]
        state[f"projector.{2 * i}.bias"] = w[f"projector.fc{i + 1}.bias"]
    state |= {k: v for k, v in w.items() if k.startswith("language_model.")}
    result = policy.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointFormatError(
            f"{path}: weights that do not fit the converted model: {result.unexpected_keys[:5]}"
        )
    allowed_missing = ("value_head.", "camera_embed.", "action_queries.", "regression_head.", "proprio_proj.",
                       "dinov2.embeddings.mask_token")  # fmt: skip
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if missing:
        raise CheckpointFormatError(
            f"{path}: the checkpoint lacks weights for {missing[:5]} ({len(missing)} in all)"
        )
    with torch.no_grad():
        policy.camera_embed.weight.zero_()  # OpenVLA has no camera embedding: add nothing
        if family == "openvla-oft":
            policy.action_queries.weight.zero_()
    policy.tokenizer = InstructionTokenizer(tok, max_length=64, prompt_template=OPENVLA_PROMPT, special_tokens=specials,
                                            suffix_ids=suffix)  # fmt: skip
    policy.action_stats = stats
    return policy.eval()


__all__ = [
    "TOKENIZER_FILE",
    "CheckpointFormatError",
    "convert_openvla",
    "detect_format",
    "load_pretrained_policy",
]
