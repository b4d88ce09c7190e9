"""What a Prismatic / OpenVLA / OpenVLA-OFT checkpoint is, as its published files define it.

Facts this package relies on (from the published HF export: Prismatic's ``modeling_prismatic.py``,
``processing_prismatic.py``, ``configuration_prismatic.py``, the OpenVLA conversion script, and
OpenVLA-OFT's ``action_heads.py``, ``projectors.py``, ``openvla_utils.py``):

* **weights** (``model*.safetensors``, sharded with ``model.safetensors.index.json``): timm ViTs
  under ``vision_backbone.featurizer.`` (the first of ``timm_model_ids``, DINOv2-reg4 for
  ``dinosiglip``) and ``vision_backbone.fused_featurizer.`` (SigLIP); the LayerScale of timm's
  ``LayerScale.gamma`` is exported as ``blocks.N.ls1.scale_factor`` / ``ls2.scale_factor``
  (transformers rewrites parameter names containing ``gamma``, so the export patches it);
  ``projector.fc1..fc3`` (GELU between), ``language_model.*`` (Llama-2).
* **vision features**: ``get_intermediate_layers(n={depth - 2})``: the output of the
  second-to-last block, prefix (CLS / register) tokens dropped, no final norm; timm's ViT MLPs
  use the exact GELU (``nn.GELU``) unless ``timm_override_act_layers`` says otherwise.
* **image processor** (``preprocessor_config.json``): per backbone a PIL bicubic resize
  (``resize-naive``: straight to ``image_sizes``), ToTensor, Normalize with timm's mean/std; the
  backbones' tensors are stacked along the channels (DINOv2's 3, then SigLIP's 3).
* **prompt**: ``In: What action should the robot take to {instruction.lower()}?\\nOut:``,
  tokenized with ``<s>`` (id 1) first; ``predict_action`` appends the empty token ``▁``
  (id 29871) when the prompt does not end with it. No truncation.
* **sequence**: ``<s>``, the projected patches (OFT: of every image, then one proprio token),
  the rest of the prompt; positions 0, 1, 2, ... (no padding at inference).
* **decoding** (OpenVLA): greedy over the whole vocabulary; id ``t`` becomes the bin centre
  ``centers[clip(V - t - 1, 0, 254)]`` with ``V = text_config.vocab_size - pad_to_multiple_of``
  (32000) and ``centers`` the midpoints of ``linspace(-1, 1, 256)``; unnormalized with
  ``norm_stats[unnorm_key]["action"]``: ``0.5 (x + 1)(q99 - q01) + q01`` where ``mask`` (default: all
  True), ``x`` elsewhere.
* **OpenVLA-OFT**: after the prompt, ``7 K`` zero embeddings and ``</s>`` (id 2); bidirectional
  attention over the whole sequence (their transformers fork); the action states are the
  hidden states from the last prompt token on (``[L-1, L-1+7K)``); an L1 head
  (``action_head--*checkpoint.pt``: MLP-ResNet over each timestep's 7 states concatenated) or the
  LM's logits (discrete, as above); ``proprio_projector--*checkpoint.pt`` (fc1, GELU, fc2) on the
  state normalized with q01/q99 and clipped to [-1, 1]; ``num_images_in_input`` images (LIBERO: 2)
  whose patches follow each other. Diffusion heads (``noisy_action_projector``) and FiLM
  (``vision_backbone--*``) are other variants.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
#: OpenVLA's instruction normalization: lowercase only (no stripping of spaces or punctuation).
OPENVLA_NORMALIZATION = {"strip_whitespace": False, "strip_chars": "", "lowercase": True}
#: Llama-2 ids the published code hard-codes: the empty token ``▁`` predict_action appends, ``</s>``.
LLAMA2_EMPTY_TOKEN_ID, LLAMA2_EOS_ID = 29871, 2
#: ``LlamaConfig`` defaults of transformers 4.40.1 (the version the checkpoints were written
#: with): a config.json's ``text_config`` stores only what differs from them.
LLAMA_4_40_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
#: timm model ids Prismatic uses for each encoder kind, and the attention heads of each size.
TIMM_KINDS = {"dinov2": "dinov2", "siglip": "siglip"}
_TIMM_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_so400m": 16, "vit_huge": 16,
               "vit_giant": 24}  # fmt: skip


def encoder_kind(timm_id: str) -> str | None:
    """``dinov2`` / ``siglip`` for the timm ids this package converts, None for others (CLIP, ...)."""
    return next((kind for key, kind in TIMM_KINDS.items() if key in timm_id), None)


def timm_heads(timm_id: str, dim: int) -> int:
    for prefix, heads in _TIMM_HEADS.items():
        if timm_id.startswith(prefix) and dim % heads == 0:
            return heads
    return max(1, dim // 64)


def vit_depth(w: dict[str, torch.Tensor], prefix: str) -> int:
    blocks = {int(k[len(prefix) + 7 :].split(".")[0]) for k in w if k.startswith(prefix + "blocks.")}
    return max(blocks) + 1 if blocks else 0


def _split_qkv(w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(w.chunk(3, dim=0))


def _blocks(w: dict[str, torch.Tensor], p: str, depth: int, names: dict[str, str], o_fmt: str):
    """timm block weights -> transformers names (``names``: timm suffix -> transformers suffix)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(depth):
        b, o = f"{p}blocks.{i}.", o_fmt.format(i=i)
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(w[b + f"attn.qkv.{kind}"])
            out |= {
                o + names["q"] + f".{kind}": q,
                o + names["k"] + f".{kind}": k,
                o + names["v"] + f".{kind}": v,
            }
            for src in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[o + names[src] + f".{kind}"] = w[b + f"{src}.{kind}"]
    return out


def convert_dinov2(w: dict[str, torch.Tensor], p: str) -> dict[str, torch.Tensor]:
    """timm DINOv2-reg4 (Prismatic export names) -> ``Dinov2WithRegistersModel`` state dict."""
    depth = vit_depth(w, p)
    names = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
             "attn.proj": "attention.o_proj", "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1",
             "mlp.fc2": "mlp.fc2"}  # fmt: skip
    out = {
        "embeddings.cls_token": w[p + "cls_token"],
        "embeddings.register_tokens": w[p + "reg_token"],
        # timm's reg4 DINOv2 embeds the positions of patches only (no_embed_class): a zero CLS row.
        "embeddings.position_embeddings": torch.cat(
            [torch.zeros_like(w[p + "pos_embed"][:, :1]), w[p + "pos_embed"]], 1
        ),
        "embeddings.patch_embeddings.projection.weight": w[p + "patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": w[p + "patch_embed.proj.bias"],
        "layernorm.weight": w[p + "norm.weight"],
        "layernorm.bias": w[p + "norm.bias"],
    } | _blocks(w, p, depth, names, "encoder.layer.{i}.")
    for i in range(depth):
        for n in (1, 2):  # LayerScale, exported as scale_factor (see the module docstring)
            out[f"encoder.layer.{i}.layer_scale{n}.lambda1"] = w[f"{p}blocks.{i}.ls{n}.scale_factor"]
    return out


def convert_siglip(w: dict[str, torch.Tensor], p: str) -> dict[str, torch.Tensor]:
    """timm SigLIP (Prismatic export names) -> ``SiglipVisionModel`` state dict (pooling head dropped)."""
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "attn.proj": "self_attn.out_proj", "norm1": "layer_norm1", "norm2": "layer_norm2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # fmt: skip
    return {
        "embeddings.position_embedding.weight": w[p + "pos_embed"][0],
        "embeddings.patch_embedding.weight": w[p + "patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": w[p + "patch_embed.proj.bias"],
        "post_layernorm.weight": w[p + "norm.weight"],
        "post_layernorm.bias": w[p + "norm.bias"],
    } | _blocks(w, p, vit_depth(w, p), names, "encoder.layers.{i}.")


def encoder_config(kind: str, w: dict[str, torch.Tensor], p: str, timm_id: str, image_size: int) -> dict:
    """The transformers config of one converted timm encoder (sizes read from the weights)."""
    dim = w[p + "pos_embed"].shape[-1]
    mlp = w[p + "blocks.0.mlp.fc1.weight"].shape[0]
    common = {
        "hidden_size": dim,
        "num_hidden_layers": vit_depth(w, p),
        "num_attention_heads": timm_heads(timm_id, dim),
        "image_size": image_size,
        "patch_size": w[p + "patch_embed.proj.weight"].shape[-1],
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
    }  # timm: partial(LayerNorm, eps=1e-6) and nn.GELU
    if kind == "dinov2":
        return {"model_type": "dinov2_with_registers", **common, "mlp_ratio": mlp // dim,
                "num_register_tokens": w[p + "reg_token"].shape[1]}  # fmt: skip
    return {"model_type": "siglip_vision_model", **common, "intermediate_size": mlp, "vision_use_head": False}


def openvla_bin_values(num_bins: int = 256) -> list[float]:
    """Normalized action of bin ``b`` (vocabulary id ``V - num_bins + b``) under OpenVLA's decoding."""
    edges = np.linspace(-1, 1, num_bins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    return [float(centers[min(max(num_bins - 1 - b, 0), num_bins - 2)]) for b in range(num_bins)]


class _ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNetHead(nn.Module):
    """OpenVLA-OFT's L1 regression head, parameter names as in ``action_head--*.pt`` (``model.`` off).

    (B, K·A, H) action states -> each timestep's A states concatenated (B, K, A·H) -> LayerNorm,
    Linear, ReLU, ``num_blocks`` pre-norm residual blocks, LayerNorm, Linear -> (B, K·A) normalized
    actions (unbounded).
    """

    def __init__(self, hidden: int, action_dim: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.layer_norm1 = nn.LayerNorm(hidden * action_dim)
        self.fc1 = nn.Linear(hidden * action_dim, hidden)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(_ResBlock(hidden) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, action_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b = states.shape[0]
        x = self.relu(self.fc1(self.layer_norm1(states.reshape(b, -1, self.action_dim * states.shape[-1]))))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x)).reshape(b, -1)
