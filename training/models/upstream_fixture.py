"""Small random checkpoints in the exact layout of published OpenVLA / OpenVLA-OFT HF exports.

For the conformance tests and for trying ``simbridge check-checkpoint`` without the 7B weights::

    write_openvla_checkpoint("/tmp/tiny-openvla")                                     # openvla/openvla-7b
    write_openvla_checkpoint("/tmp/tiny-oft", oft=True, num_images=2, proprio=True)   # OFT LIBERO layout

What is exact: file names (sharded ``model-0000k-of-0000n.safetensors`` + index, ``config.json``
with Prismatic's fields, ``preprocessor_config.json``, ``tokenizer.json``, ``dataset_statistics.json``,
OFT's ``action_head--*_checkpoint.pt`` / ``proprio_projector--*_checkpoint.pt`` with DDP's
``module.`` prefix), parameter names (timm's, LayerScale as ``scale_factor``), the timm ids and
image size (224, patch 14: 256 patches) and a Llama-2-shaped tokenizer: 32000 ids (``<unk>``,
``<s>``, ``</s>``, 256 byte-fallback tokens, ...) plus ``<PAD>`` = 32000, Llama's normalizer and
``<s>`` post-processor, and the real Llama-2 ids of OpenVLA's prompt words and of
:data:`DOCUMENTED_TASK` (so :data:`DOCUMENTED_PROMPT_IDS` hold). What is small: the widths and
depths (ViTs 64 wide, 3 blocks; Llama 64 wide, 2 layers; vocabulary rows 32064).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from simbridge.training.models.conformance import DOCUMENTED_PROMPT_IDS, DOCUMENTED_TASK  # noqa: F401  (re-exported)

#: Llama-2 pieces of those prompts and their ids ("▁" marks a leading space).
LLAMA2_PIECES = {
    "▁In": 512, ":": 29901, "▁What": 1724, "▁action": 3158, "▁should": 881, "▁the": 278, "▁robot": 19964,
    "▁take": 2125, "▁to": 304, "?": 29973, "Out": 3744, "▁": 29871, "▁pick": 5839, "▁up": 701,
    "▁black": 4628, "▁bow": 12580, "l": 29880, "▁between": 1546, "▁plate": 15284, "▁and": 322, "▁r": 364,
    "ame": 420, "kin": 9089, "▁place": 2058, "▁it": 372, "▁on": 373,
}  # fmt: skip
VOCAB, PAD_TO = 32000, 64
DIM, DEPTH, IMAGE, PATCH, LM = 64, 3, 224, 14, 64
TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
Q01 = [-0.02, -0.03, -0.01, -0.05, -0.04, -0.06, 0.0]
Q99 = [0.03, 0.02, 0.04, 0.05, 0.06, 0.04, 1.0]


def write_llama_tokenizer(path: Path) -> None:
    """``tokenizer.json`` shaped like Llama-2's (see the module docstring), with ``<PAD>`` added."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    vocab |= LLAMA2_PIECES
    taken = set(vocab.values())
    free = (i for i in range(259, VOCAB) if i not in taken)
    merges: list[tuple[str, str]] = []
    # Each multi-character piece is built left to right from its characters; no merge joins pieces.
    for piece in LLAMA2_PIECES:
        for sub in [*piece, *(piece[:k] for k in range(2, len(piece) + 1))]:
            if sub not in vocab:
                vocab[sub] = next(free)
        merges += [m for k in range(2, len(piece) + 1) if (m := (piece[: k - 1], piece[k - 1])) not in merges]
    for i in free:
        vocab[f"<tok{i}>"] = i  # the rest of the 32000 ids (the last 256 are OpenVLA's action bins)
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<PAD>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<PAD>",
        "unk_token": "<unk>", "model_max_length": 2048, "padding_side": "right", "tokenizer_class": "LlamaTokenizer",
    }))  # fmt: skip


def _vit(gen: torch.Generator, prefix: str, dino: bool) -> dict[str, torch.Tensor]:
    r = lambda *s: torch.randn(*s, generator=gen) * 0.2  # noqa: E731
    d, n, mlp = DIM, (IMAGE // PATCH) ** 2, 4 * DIM if dino else int(DIM * 3.7362)
    w = {"pos_embed": r(1, n, d), "patch_embed.proj.weight": r(d, 3, PATCH, PATCH) * 0.3,
         "patch_embed.proj.bias": r(d), "norm.weight": 1 + r(d), "norm.bias": r(d)}  # fmt: skip
    if dino:
        w |= {"cls_token": r(1, 1, d), "reg_token": r(1, 4, d)}
    else:  # SigLIP's attention-pool head (global_pool="map"): exported, unused by Prismatic
        w |= {"attn_pool.latent": r(1, 1, d), "attn_pool.q.weight": r(d, d), "attn_pool.q.bias": r(d),
              "attn_pool.kv.weight": r(2 * d, d), "attn_pool.kv.bias": r(2 * d), "attn_pool.proj.weight": r(d, d),
              "attn_pool.proj.bias": r(d), "attn_pool.norm.weight": 1 + r(d), "attn_pool.norm.bias": r(d),
              "attn_pool.mlp.fc1.weight": r(mlp, d), "attn_pool.mlp.fc1.bias": r(mlp),
              "attn_pool.mlp.fc2.weight": r(d, mlp), "attn_pool.mlp.fc2.bias": r(d)}  # fmt: skip
    for i in range(DEPTH):
        b = f"blocks.{i}."
        w |= {b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
              b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
              b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d), b + "mlp.fc1.weight": r(mlp, d),
              b + "mlp.fc1.bias": r(mlp), b + "mlp.fc2.weight": r(d, mlp), b + "mlp.fc2.bias": r(d)}  # fmt: skip
        if dino:  # timm's LayerScale.gamma, renamed by Prismatic's HF export
            w |= {b + "ls1.scale_factor": 1 + r(d), b + "ls2.scale_factor": 1 + r(d)}
    return {prefix + k: v for k, v in w.items()}


def _text_config() -> dict:
    return {"model_type": "llama", "hidden_size": LM, "intermediate_size": 2 * LM, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": VOCAB + PAD_TO, "pad_token_id": VOCAB, "torch_dtype": "float32"}  # fmt: skip


def _stats(proprio: bool) -> dict:
    stats = {"action": {"q01": Q01, "q99": Q99, "mean": [0.0] * 7, "std": [0.01] * 7, "min": Q01, "max": Q99,
                        "mask": [True] * 6 + [False]}, "num_transitions": 1000, "num_trajectories": 10}  # fmt: skip
    if proprio:
        stats["proprio"] = {"q01": [-0.3, -0.2, 0.9, 2.0, -0.5, -0.4, 0.0, -0.04],
                            "q99": [0.2, 0.3, 1.3, 3.2, 0.5, 0.4, 0.04, 0.0]}  # fmt: skip
    return stats


def write_openvla_checkpoint(path: str | Path, *, oft: bool = False, num_images: int = 1, proprio: bool = False,
                             l1_head: bool | None = None, norm_keys: tuple[str, ...] = ("bridge_orig",),
                             seed: int = 0, shards: int = 3) -> dict[str, torch.Tensor]:  # fmt: skip
    """Write the checkpoint into ``path``; return its raw (upstream-named) weights.

    ``oft``: OpenVLA-OFT extras: the L1 head (``l1_head``, default True) and the proprio projector
    (``proprio``); ``num_images`` only changes what the statistics / head expect (the export is
    the same for any number of images, as upstream).
    """
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_llama_tokenizer(path)
    gen = torch.Generator().manual_seed(seed)
    w = _vit(gen, "vision_backbone.featurizer.", dino=True) | _vit(
        gen, "vision_backbone.fused_featurizer.", False
    )
    for i, (a, b) in enumerate(
        [(2 * DIM, 8 * DIM), (8 * DIM, LM), (LM, LM)], start=1
    ):  # fc1 is 4x the vision dim
        w[f"projector.fc{i}.weight"] = torch.randn(b, a, generator=gen) / math.sqrt(a)
        w[f"projector.fc{i}.bias"] = torch.randn(b, generator=gen) * 0.02
    text = _text_config()
    with torch.random.fork_rng():  # the LM's own init draws from the global generator: leave it as it was
        lm = LlamaForCausalLM(
            LlamaConfig(**{k: v for k, v in text.items() if k not in ("model_type", "torch_dtype")})
        )
    for p in lm.parameters():  # larger than the default init: logits that differ between ids
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.08 if p.dim() > 1 else torch.ones(p.shape))
    with (
        torch.no_grad()
    ):  # as in a trained checkpoint, the action bins win the greedy argmax most of the time
        lm.lm_head.weight[VOCAB - 256 : VOCAB] *= 2.5
    w |= {f"language_model.{k}": v.clone().contiguous() for k, v in lm.state_dict().items()}
    keys = sorted(w)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {k: names[i * shards // len(keys)] for i, k in enumerate(keys)}
    for name in names:
        save_file({k: w[k].contiguous() for k in keys if weight_map[k] == name}, str(path / name),
                  metadata={"format": "pt"})  # fmt: skip
    total = sum(v.numel() * v.element_size() for v in w.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    stats = {k: _stats(proprio) for k in norm_keys}
    config = {
        "architectures": ["OpenVLAForActionPrediction"], "arch_specifier": "no-align+fused-gelu-mlp",
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "hf_llm_id": "meta-llama/Llama-2-7b-hf", "image_resize_strategy": "resize-naive", "image_sizes": [IMAGE, IMAGE],
        "llm_backbone_id": "llama2-7b-pure", "llm_max_length": 2048, "model_type": "openvla", "n_action_bins": 256,
        "norm_stats": stats, "output_projector_states": False, "pad_to_multiple_of": PAD_TO, "pad_token_id": VOCAB,
        "text_config": text, "timm_model_ids": TIMM_IDS, "timm_override_act_layers": [None, None],
        "torch_dtype": "float32", "transformers_version": "4.40.1", "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    means, stds = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
    processor = {
        "image_processor_type": "PrismaticImageProcessor", "processor_class": "PrismaticProcessor",
        "image_resize_strategy": "resize-naive", "input_sizes": [[3, IMAGE, IMAGE]] * 2,
        "interpolations": ["bicubic", "bicubic"], "means": means, "stds": stds, "use_fused_vision_backbone": True,
        "tvf_crop_params": [{"output_size": [IMAGE, IMAGE]}] * 2, "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": m, "std": s} for m, s in zip(means, stds, strict=True)],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None, "size": [IMAGE, IMAGE]}] * 2,
    }  # fmt: skip
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    if oft:
        (path / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
        if l1_head is None or l1_head:
            head = _l1_head(gen)
            w |= {f"action_head.{k}": v for k, v in head.items()}
            torch.save(
                {f"module.{k}": v for k, v in head.items()}, path / "action_head--150000_checkpoint.pt"
            )
        if proprio:
            pp = {"fc1.weight": torch.randn(LM, 8, generator=gen) * 0.3, "fc1.bias": torch.zeros(LM),
                  "fc2.weight": torch.randn(LM, LM, generator=gen) * 0.1, "fc2.bias": torch.zeros(LM)}  # fmt: skip
            w |= {f"proprio_projector.{k}": v for k, v in pp.items()}
            torch.save(
                {f"module.{k}": v for k, v in pp.items()}, path / "proprio_projector--150000_checkpoint.pt"
            )
    return w


def _l1_head(gen: torch.Generator, action_dim: int = 7) -> dict[str, torch.Tensor]:
    """OpenVLA-OFT's L1RegressionActionHead state (``model.`` = its MLPResNet, 2 residual blocks)."""
    r = lambda *s: torch.randn(*s, generator=gen) / math.sqrt(s[-1])  # noqa: E731
    i = LM * action_dim
    head = {"model.layer_norm1.weight": 1 + 0.1 * r(i), "model.layer_norm1.bias": 0.1 * r(i),
            "model.fc1.weight": r(LM, i), "model.fc1.bias": 0.1 * r(LM), "model.layer_norm2.weight": 1 + 0.1 * r(LM),
            "model.layer_norm2.bias": 0.1 * r(LM), "model.fc2.weight": r(action_dim, LM),
            "model.fc2.bias": 0.1 * r(action_dim)}  # fmt: skip
    for b in range(2):
        head |= {f"model.mlp_resnet_blocks.{b}.ffn.0.weight": 1 + 0.1 * r(LM),
                 f"model.mlp_resnet_blocks.{b}.ffn.0.bias": 0.1 * r(LM),
                 f"model.mlp_resnet_blocks.{b}.ffn.1.weight": r(LM, LM),
                 f"model.mlp_resnet_blocks.{b}.ffn.1.bias": 0.1 * r(LM)}  # fmt: skip
    return head
