"""Load policies from local directories: SimBridge checkpoints and real OpenVLA / OpenVLA-OFT ones.

    policy = load_pretrained_policy("runs/sft_tiny/<stamp>/checkpoints/iter_001500")  # SimBridge
    policy = load_pretrained_policy("/models/openvla-7b", unnorm_key="bridge_orig")     # OpenVLA
    policy = load_pretrained_policy("/models/oft-libero-spatial", unnorm_key="libero_spatial_no_noops",
                                    num_images=2, chunk_size=8)                         # OpenVLA-OFT
    policy.save_pretrained("runs/converted/openvla-7b")   # now a SimBridge checkpoint

Nothing is downloaded: download the checkpoint yourself (``huggingface-cli download
openvla/openvla-7b --local-dir /models/openvla-7b``) and pass the directory. ``simbridge
check-checkpoint <dir>`` then shows what the conversion gives next to what the checkpoint's own
files define.

**OpenVLA format** (``config.json`` with ``"model_type": "openvla"``, Prismatic's HF export; what
its files define is written down in :mod:`.prismatic`): the timm ViTs are converted to
``Dinov2WithRegistersModel`` / ``SiglipVisionModel`` (fused ``qkv`` split, LayerScale
``scale_factor`` -> ``lambda1``, exact GELU), the projector and Llama-2 kept. The converted policy
is Prismatic's sequence (``<s>``, patches, prompt), PIL-bicubic image resize, OpenVLA's prompt
with lowercasing only and ``▁`` (29871) appended, no truncation, greedy decoding over the whole
vocabulary with OpenVLA's bin mapping, and the statistics of ``unnorm_key`` (from
``dataset_statistics.json`` when the directory has one, as fine-tunes do, else ``config.json``).

**OpenVLA-OFT** (the same export plus ``action_head--*checkpoint.pt`` and/or
``proprio_projector--*checkpoint.pt``; ``family="openvla-oft"`` for one without them): OFT's
parallel decoding (zero action embeddings + ``</s>``, bidirectional attention, states read one
position early), its L1 MLP-ResNet head, its proprio projector after the patches of
``num_images`` images, q01/q99 proprio normalization. ``num_images`` and ``chunk_size`` are not
stored in the checkpoint (LIBERO: 2 and 8) and must be given. Diffusion heads, FiLM and
non-7-D actions (ALOHA) are refused by name, as are letterbox / crop preprocessing and vision
backbones other than DINOv2 / SigLIP.

Tested on small checkpoints written in the exact upstream layout by the tests
(``tests/training/test_models_conformance.py``), not on the 7B weights.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from simbridge.data.spec import PROPRIO_DIM, CameraSpec, ObservationSpec, PolicyContract
from simbridge.training.models import prismatic as pz
from simbridge.training.models.configuration import VLAConfig
from simbridge.training.models.modeling import VLAPolicy
from simbridge.training.models.openvla_files import (
    CheckpointFormatError,
    check_processor,
    load_component,
    load_weights,
    oft_files,
    read_stats,
    read_tokenizer,
)
from simbridge.training.models.prismatic import OPENVLA_PROMPT, openvla_bin_values
from simbridge.training.models.text_tokenizer import TOKENIZER_FILE, InstructionTokenizer


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
    **oft: Any,
) -> VLAPolicy:
    """A policy from a local SimBridge checkpoint / run directory or an OpenVLA(-OFT) checkpoint
    (``oft``: ``num_images``, ``chunk_size`` of :func:`convert_openvla`)."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists():
        from simbridge.training.checkpoint import resolve_checkpoint

        p = resolve_checkpoint(p)
    if detect_format(p) == "simbridge":
        return VLAPolicy.from_pretrained(p)
    return convert_openvla(p, family=family, unnorm_key=unnorm_key, contract=contract, **oft)


def convert_openvla(
    path: str | Path,
    family: str | None = None,
    unnorm_key: str | None = None,
    contract: PolicyContract | None = None,
    num_images: int | None = None,
    chunk_size: int | None = None,
) -> VLAPolicy:
    """Convert a local OpenVLA / OpenVLA-OFT checkpoint into a :class:`VLAPolicy` (see the module doc)."""
    from simbridge.training.models.registry import POLICIES

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    extra = oft_files(path)
    family = family or ("openvla-oft" if extra else "openvla")
    if family == "openvla" and extra:
        raise CheckpointFormatError(
            f"{path} is an OpenVLA-OFT checkpoint ({sorted(f.name for f in extra.values())}); "
            "load it with family='openvla-oft'"
        )
    oft = family == "openvla-oft"
    if oft and (num_images is None or chunk_size is None):
        raise CheckpointFormatError(
            "OpenVLA-OFT checkpoints do not record their number of images or chunk size: "
            "pass num_images=... and chunk_size=... (LIBERO: 2 and 8)"
        )
    timm_ids = list(raw.get("timm_model_ids") or [])
    fused = bool(raw.get("use_fused_vision_backbone", len(timm_ids) > 1))
    kinds = [pz.encoder_kind(t) for t in timm_ids[: 2 if fused else 1]]
    if not kinds or None in kinds or any(raw.get("timm_override_act_layers") or []):
        raise CheckpointFormatError(
            f"{path}: vision backbone {timm_ids} (activation overrides "
            f"{raw.get('timm_override_act_layers')}) is not supported; DINOv2 / SigLIP only"
        )
    image_size = int((raw.get("image_sizes") or [224])[0])
    check_processor(path, raw, kinds, image_size)  # type: ignore[arg-type]
    text_config = pz.LLAMA_4_40_DEFAULTS | dict(raw.get("text_config") or {})
    if text_config.get("model_type", "llama") != "llama":
        raise CheckpointFormatError(
            f"{path}: language model {text_config['model_type']!r}: only Llama-2 is supported"
        )
    text_config |= {"model_type": "llama", "tie_word_embeddings": False}
    tok, specials = read_tokenizer(path)
    num_bins = int(raw.get("n_action_bins", 256))
    # predict_action's vocab_size: the bins are the last ids before the padding rows of the LM.
    vocab = int(text_config["vocab_size"]) - int(raw.get("pad_to_multiple_of", 0))

    w = load_weights(path)
    prefixes = ["vision_backbone.featurizer.", "vision_backbone.fused_featurizer."][: len(kinds)]
    if missing := [
        p + "blocks.0.ls1.scale_factor"
        for p, k in zip(prefixes, kinds, strict=True)
        if k == "dinov2" and p + "blocks.0.ls1.scale_factor" not in w
    ]:
        raise CheckpointFormatError(
            f"{path}: no {missing[0]} (Prismatic's HF export names timm's LayerScale "
            "'scale_factor'); this is not an OpenVLA HF export"
        )
    proj = [w[f"projector.fc{i}.weight"].shape[0] for i in (1, 2, 3) if f"projector.fc{i}.weight" in w]
    if len(proj) != (3 if fused else 2):
        raise CheckpointFormatError(
            f"projector has {len(proj)} layers; expected {3 if fused else 2} for this backbone"
        )

    head = load_component(extra["action_head"]) if "action_head" in extra else None
    proprio = load_component(extra["proprio_projector"]) if "proprio_projector" in extra else None
    if head is not None and not all(k.startswith("model.") for k in head):
        raise CheckpointFormatError(
            f"{extra['action_head'].name}: not an L1-regression head (keys {sorted(head)[:3]})"
        )
    if proprio is not None and proprio["fc1.weight"].shape[1] != PROPRIO_DIM:
        raise CheckpointFormatError(
            f"{extra['proprio_projector'].name}: {proprio['fc1.weight'].shape[1]}-D proprio; "
            f"SimBridge feeds {PROPRIO_DIM}"
        )
    unnorm_key, stats = read_stats(path, raw, unnorm_key, proprio is not None)
    names = (
        ["scene", "wrist"]
        if num_images == 2
        else ["scene", *(f"wrist{i}" for i in range(1, (num_images or 1)))]
    )
    contract = contract or PolicyContract(
        observation=ObservationSpec(
            cameras=tuple(CameraSpec(n, image_size, image_size) for n in names),
            use_proprio=proprio is not None,
        ),
        chunk_size=chunk_size or 1,
    )
    want = (num_images, chunk_size) if oft else (1, contract.chunk_size)  # OpenVLA: one image
    if (len(contract.observation.cameras), contract.chunk_size) != want:
        raise CheckpointFormatError(
            f"the contract has {len(contract.observation.cameras)} cameras and chunk {contract.chunk_size}; "
            f"this {family} checkpoint takes {want[0]} image(s)" + (f" and chunk {chunk_size}" if oft else "")
        )
    values: dict[str, Any] = {
        "family": family,
        "preset": "openvla-7b" if text_config["hidden_size"] >= 4096 else "openvla-converted",
        "image_size": image_size,
        "vision_feature_layer": -2,
        "vision_order": kinds,
        "projector_dims": proj,
        "text_config": text_config,
        "camera_names": list(contract.observation.camera_names),
        "use_proprio": proprio is not None,
        "proprio_dim": PROPRIO_DIM,
        "chunk_size": contract.chunk_size,
        "num_action_bins": num_bins,
        "text_vocab_size": vocab,
        "action_token_offset": vocab - num_bins,
        "action_bin_values": openvla_bin_values(num_bins),
        "prompt_template": OPENVLA_PROMPT,
        "prompt_suffix_ids": [pz.LLAMA2_EMPTY_TOKEN_ID],
        "special_tokens": specials,
        "prompt_normalization": dict(pz.OPENVLA_NORMALIZATION),
        "max_text_tokens": int(raw.get("llm_max_length", 2048)),
        "sequence_layout": "prismatic",
        "image_interpolation": "bicubic-pil",
        "greedy_full_vocab": True,
        "contract": contract.to_dict(),
    }
    if oft:
        values |= {
            "parallel_decoder": "openvla-oft",
            "action_stop_token_id": pz.LLAMA2_EOS_ID,
            "use_regression_head": head is not None,
            "regression_head_kind": "mlp-resnet",
        }
    for kind, p, timm_id in zip(kinds, prefixes, timm_ids, strict=False):
        values[f"{kind}_config"] = pz.encoder_config(kind, w, p, timm_id, image_size)  # type: ignore[arg-type]
    policy = POLICIES[family](VLAConfig(**values))

    state: dict[str, torch.Tensor] = {}
    for kind, p in zip(kinds, prefixes, strict=True):
        conv = pz.convert_dinov2 if kind == "dinov2" else pz.convert_siglip
        state |= {f"{kind}.{k}": v for k, v in conv(w, p).items()}
    for i, _ in enumerate(proj):
        state |= {f"projector.{2 * i}.{t}": w[f"projector.fc{i + 1}.{t}"] for t in ("weight", "bias")}
    state |= {k: v for k, v in w.items() if k.startswith("language_model.")}
    state |= {f"regression_head.{k.removeprefix('model.')}": v for k, v in (head or {}).items()}
    state |= {
        f"proprio_proj.{0 if k.startswith('fc1') else 2}.{k.split('.')[-1]}": v
        for k, v in (proprio or {}).items()
    }
    _load_state(policy, state, path)
    with torch.no_grad():
        policy.camera_embed.weight.zero_()  # Prismatic has no camera embedding: add nothing
        if oft:
            policy.action_queries.weight.zero_()  # OFT zeroes the action tokens' embeddings
    policy.tokenizer = InstructionTokenizer(
        tok,
        max_length=values["max_text_tokens"],
        prompt_template=OPENVLA_PROMPT,
        special_tokens=specials,
        suffix_ids=[pz.LLAMA2_EMPTY_TOKEN_ID],
        normalization=pz.OPENVLA_NORMALIZATION,
    )
    policy.action_stats = stats
    if proprio is not None:
        warnings.warn(
            "this OpenVLA-OFT checkpoint reads the robot state in its training data's convention (LIBERO: "
            "end-effector position, axis-angle, 2 gripper joints); Observation.proprio() is "
            "[x y z qw qx qy qz gripper_width]: pass proprio in the checkpoint's convention",
            stacklevel=2,
        )
    return policy.eval()


def _load_state(policy: VLAPolicy, state: dict[str, torch.Tensor], path: Path) -> None:
    result = policy.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointFormatError(
            f"{path}: weights that do not fit the converted model: {result.unexpected_keys[:5]}"
        )
    allowed = ("value_head.", "camera_embed.", "action_queries.", "dinov2.embeddings.mask_token")
    missing = [k for k in result.missing_keys if not k.startswith(allowed)]
    if missing:
        raise CheckpointFormatError(
            f"{path}: the checkpoint lacks weights for {missing[:5]} ({len(missing)} in all)"
        )


__all__ = [
    "TOKENIZER_FILE",
    "CheckpointFormatError",
    "convert_openvla",
    "detect_format",
    "load_pretrained_policy",
    "load_weights",
    "oft_files",
    "openvla_bin_values",
]
