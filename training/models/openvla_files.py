"""The files of a local OpenVLA / OpenVLA-OFT checkpoint directory, read and checked for conversion.

:func:`~simbridge.training.models.loaders.convert_openvla` reads through these: the safetensors
weights (sharded or not), OFT's component files (``action_head--*checkpoint.pt``,
``proprio_projector--*checkpoint.pt``), the image processor (``preprocessor_config.json``), the
dataset statistics of ``unnorm_key`` and the Llama-2 tokenizer. Each refuses what the conversion
does not reproduce (diffusion heads, FiLM, letterbox or other resizes, non-7-D actions, another
tokenizer) with a :class:`CheckpointFormatError` naming it. What the files mean is written down
in :mod:`.prismatic`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import ACTION_DIM, PROPRIO_DIM
from simbridge.training.models import prismatic as pz
from simbridge.training.models.action_tokenizer import ActionStats
from simbridge.training.models.images import ENCODER_NORMALIZATION

#: Extra files of OpenVLA-OFT checkpoints (name patterns of ``find_checkpoint_file``).
OFT_FILES = ("action_head", "proprio_projector", "noisy_action_projector", "vision_backbone")


class CheckpointFormatError(ValueError):
    """A directory is not a policy checkpoint this loader understands; the message says why."""


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights (the shards ``model.safetensors.index.json`` names, when present)."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files or not all(f.is_file() for f in files):
        raise CheckpointFormatError(
            f"{path}: safetensors weights missing (only safetensors exports are supported)"
        )
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights


def oft_files(path: Path) -> dict[str, Path]:
    """OpenVLA-OFT component files by kind; refuses the variants this package does not convert."""
    found: dict[str, Path] = {}
    for kind in OFT_FILES:
        hits = sorted(f for f in path.iterdir() if f.name.startswith(f"{kind}--") and "checkpoint" in f.name)
        if len(hits) > 1:
            raise CheckpointFormatError(f"{path}: several {kind} files {[h.name for h in hits]}; keep one")
        if hits:
            found[kind] = hits[0]
    if "noisy_action_projector" in found:
        raise CheckpointFormatError(
            f"{path}: an OpenVLA-OFT diffusion head ({found['noisy_action_projector'].name}) "
            "is not supported; use an L1-regression or discrete OFT checkpoint"
        )
    if "vision_backbone" in found:
        raise CheckpointFormatError(
            f"{path}: a FiLM vision backbone ({found['vision_backbone'].name}) "
            "is not supported (OpenVLA-OFT+ / ALOHA variant)"
        )
    return found


def load_component(file: Path) -> dict[str, torch.Tensor]:
    """An OFT component's weights (``torch.load``), without the ``module.`` prefix of DDP training."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP training adds "module."


def check_processor(path: Path, raw: dict[str, Any], kinds: list[str], image_size: int) -> None:
    """Refuse preprocessing this package does not reproduce (letterbox, crops, other resizes)."""
    proc_file = path / "preprocessor_config.json"
    proc = json.loads(proc_file.read_text()) if proc_file.is_file() else {}
    strategy = proc.get("image_resize_strategy", raw.get("image_resize_strategy", "letterbox"))
    if strategy != "resize-naive":
        raise CheckpointFormatError(
            f"{path}: image_resize_strategy {strategy!r} is not supported (only "
            "'resize-naive', OpenVLA's: straight resize to the model's size)"
        )
    for i, kind in enumerate(kinds):
        interp = (proc.get("interpolations") or ["bicubic"] * len(kinds))[i]
        size = (proc.get("input_sizes") or [[3, image_size, image_size]] * len(kinds))[i]
        mean, std = ENCODER_NORMALIZATION[kind]
        got_mean, got_std = (
            (proc.get("means") or [mean] * len(kinds))[i],
            (proc.get("stds") or [std] * len(kinds))[i],
        )
        if interp != "bicubic" or list(size)[-2:] != [image_size, image_size]:
            raise CheckpointFormatError(
                f"{proc_file}: backbone {i} ({kind}) resizes {interp!r} to {size}; "
                f"supported: 'bicubic' to {image_size}"
            )
        if not (np.allclose(got_mean, mean, atol=1e-6) and np.allclose(got_std, std, atol=1e-6)):
            raise CheckpointFormatError(
                f"{proc_file}: backbone {i} ({kind}) normalizes with mean {got_mean} "
                f"std {got_std}; this package's {kind} uses {mean} / {std}"
            )


def read_stats(
    path: Path, raw: dict[str, Any], unnorm_key: str | None, proprio: bool
) -> tuple[str | None, ActionStats]:
    """(the statistics' key, the action statistics of ``unnorm_key``; with ``proprio``, OFT's proprio
    normalization too). ``dataset_statistics.json`` wins over ``config.json``'s ``norm_stats``."""
    stats_file = path / "dataset_statistics.json"  # fine-tunes write theirs here (it wins, as upstream)
    stats_all = json.loads(stats_file.read_text()) if stats_file.is_file() else raw.get("norm_stats") or {}
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
        return None, ActionStats.from_action_spec()
    a = stats_all[unnorm_key]["action"]
    if len(a["q01"]) != ACTION_DIM:
        raise CheckpointFormatError(
            f"{unnorm_key!r}: {len(a['q01'])}-D actions (e.g. ALOHA's 14) are not supported; "
            f"SimBridge policies act in {ACTION_DIM}-D"
        )
    kw: dict[str, Any] = {}
    if proprio:  # OFT: 2 (p - q01) / (q99 - q01) - 1, clipped, as the affine mean / std + clip
        s = stats_all[unnorm_key]["proprio"]
        q01, q99 = np.asarray(s["q01"], np.float64), np.asarray(s["q99"], np.float64)
        if len(q01) != PROPRIO_DIM:
            raise CheckpointFormatError(
                f"{unnorm_key!r}: {len(q01)}-D proprio; SimBridge feeds {PROPRIO_DIM}"
            )
        m = np.asarray(s.get("mask", [True] * len(q01)), bool)
        kw = {
            "proprio_mean": np.where(m, (q01 + q99) / 2, 0.0),
            "proprio_std": np.where(m, (q99 - q01) / 2, 1.0),
            "proprio_clip": True,
        }
    # predict_action: mask defaults to all True (every dimension unnormalized).
    return unnorm_key, ActionStats(
        q01=a["q01"], q99=a["q99"], normalize_mask=a.get("mask", [True] * ACTION_DIM), **kw
    )


def read_tokenizer(path: Path) -> tuple[Any, list[str]]:
    """(the Llama-2 tokenizer of ``tokenizer.json``, the special tokens OpenVLA's prompt uses)."""
    from tokenizers import Tokenizer

    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointFormatError(
            f"{tokenizer_file} is missing: the OpenVLA checkpoint needs its Llama tokenizer"
        )
    tok = Tokenizer.from_file(str(tokenizer_file))
    if tok.id_to_token(pz.LLAMA2_EMPTY_TOKEN_ID) != "▁" or tok.token_to_id("<s>") != 1:
        raise CheckpointFormatError(
            f"{tokenizer_file} is not Llama-2's (id 29871 must be '▁', <s> id 1), "
            "which OpenVLA's prompt handling assumes"
        )
    pad = "<PAD>" if tok.token_to_id("<PAD>") is not None else "<pad>"
    return tok, [pad, "<s>", "</s>", "<unk>"]
