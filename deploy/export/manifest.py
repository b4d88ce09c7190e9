"""The manifest a bundle's exporter writes: every number the graph applies and every rule the
runtime follows, for people and other runtimes (the schema is :mod:`simbridge.deploy.manifest`, its
checks :mod:`simbridge.deploy.manifest_validation`).

Nothing here is restated: image normalization comes from the model's public constants
(``ENCODER_NORMALIZATION``), the resize and the LM input layout from the checkpoint's config
(``image_interpolation``, ``sequence_layout``), the instruction rules from the checkpoint
tokenizer's attributes (``strip_whitespace``, ``strip_chars``, ``lowercase``, ``prefix_ids`` ...),
action statistics from its ``ActionStats``. Sections built here: ``model`` (:func:`model_section`),
``instruction`` (:func:`write_tokenizer`), the rest (:func:`build_manifest`). The pipeline adds
``source`` and, once the parity check passed, ``parity``; the bundle writer ``files`` and
``bundle_id``.

No torch import here (the policy object is passed in); ``simbridge.training`` lazily.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from simbridge.data.spec import ACTION_DIM, PROPRIO_DIM
from simbridge.deploy.export.options import GRAPH_OUTPUTS, ExportError


def model_section(
    policy: Any, path: Path, input_names: list[str], decoding: str, exporter: str
) -> dict[str, Any]:
    """The manifest's ``model``: the graph file, its decoding, inputs and outputs."""
    shapes = {
        "tokens": ["batch", policy.config.num_action_tokens],
        "actions": ["batch", policy.config.chunk_size, ACTION_DIM],
        "logprob": ["batch"],
        "value": ["batch"],
    }
    dtypes = {"tokens": "int64", "actions": "float32", "logprob": "float32", "value": "float32"}
    inputs: dict[str, dict[str, Any]] = {}
    for cam in policy.contract.observation.cameras:
        inputs[f"image_{cam.name}"] = {
            "source": f"image:{cam.name}", "dtype": "uint8", "shape": ["batch", cam.height, cam.width, 3]
        }  # fmt: skip
    if "proprio" in input_names:
        inputs["proprio"] = {"source": "proprio", "dtype": "float32", "shape": ["batch", PROPRIO_DIM]}
    inputs["input_ids"] = {"source": "input_ids", "dtype": "int64", "shape": ["batch", "text"]}
    inputs["attention_mask"] = {"source": "attention_mask", "dtype": "int64", "shape": ["batch", "text"]}
    return {
        "file": path.name,
        "decoding": decoding,
        "opset": graph_opset(path),
        "exporter": exporter,
        "inputs": inputs,
        "outputs": {k: {"dtype": dtypes[k], "shape": shapes[k]} for k in GRAPH_OUTPUTS},
        "greedy": True,
        "kv_cache": "in-graph (unrolled)" if decoding != "parallel" else False,
    }


def graph_opset(path: Path) -> int:
    """The ONNX (default domain) opset the written graph uses."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_tokenizer(policy: Any, path: Path) -> dict[str, Any]:
    """Copy the instruction tokenizer to ``path``; return the manifest's ``instruction`` section."""
    tok = policy.tokenizer
    if tok is None:
        raise ExportError("the checkpoint has no instruction tokenizer (instruction_tokenizer.json)")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(tok.save(tmp), path)
    return {  # the rules the checkpoint's tokenizer follows, read from it (never restated here)
        "tokenizer": path.name,
        "template": tok.prompt_template,
        "strip_whitespace": bool(tok.strip_whitespace),
        "strip_chars": tok.strip_chars,
        "lowercase": bool(tok.lowercase),
        "prefix_ids": [int(i) for i in tok.prefix_ids],
        "suffix_ids": [int(i) for i in tok.suffix_ids],
        "add_special_tokens": bool(tok.add_special_tokens),
        "max_length": int(tok.max_length),
        "pad_token_id": int(tok.pad_id),
        "padding_side": tok.padding_side,
        "pad_to_max_length": bool(tok.pad_to_max_length),
    }


def build_manifest(
    policy: Any, info: dict[str, Any], model: dict[str, Any], instruction: dict[str, Any]
) -> dict[str, Any]:
    """Everything but ``source``, ``parity``, ``files`` and ``bundle_id`` (filled by the caller)."""
    from simbridge.training.models import modeling
    from simbridge.training.models.action_tokenizer import NORMALIZATION_KIND

    cfg, contract, stats = policy.config, policy.contract, policy.action_stats
    size = int(cfg.image_size)
    interpolation = getattr(cfg, "image_interpolation", modeling.RESIZE_INTERPOLATION)
    configs = {"siglip": cfg.siglip_config, "dinov2": cfg.dinov2_config}
    normalize = [
        {"encoder": name, "mean": list(mean), "std": list(std)}
        for name, (mean, std) in modeling.ENCODER_NORMALIZATION.items()
        if configs.get(name) is not None
    ]
    cameras = [
        {
            "name": c.name, "height": c.height, "width": c.width, "dtype": "uint8", "layout": "HWC",
            "channel_order": "RGB", "resize": [size, size], "interpolation": interpolation,
            "scale": 1.0 / 255.0, "mean": normalize[0]["mean"], "std": normalize[0]["std"], "normalize": normalize,
            "applied_in": "graph",
        }
        for c in contract.observation.cameras
    ]  # fmt: skip
    uses_proprio = "proprio" in model["inputs"]
    proprio = {
        "enabled": uses_proprio,
        "dim": PROPRIO_DIM,
        "names": ["x", "y", "z", "qw", "qx", "qy", "qz", "gripper_width"],
        "mean": None if stats.proprio_mean is None else [float(v) for v in stats.proprio_mean],
        "std": None if stats.proprio_std is None else [float(v) for v in stats.proprio_std],
        "clip": [-1.0, 1.0] if getattr(stats, "proprio_clip", False) else None,
        "applied_in": "graph",
    }
    action = {
        "dim": ACTION_DIM,
        "names": contract.to_dict()["action"]["names"],
        "chunk_size": int(cfg.chunk_size),
        "control_rate_hz": float(contract.action.control_rate_hz),
        "num_bins": int(cfg.num_action_bins),
        "output": "regression"
        if getattr(cfg, "use_regression_head", False) and model["decoding"] == "parallel"
        else "bins",
        "normalization": {
            "kind": f"{NORMALIZATION_KIND}; bins -> bin_values (null: centres of uniform bins)",
            "bin_values": None
            if cfg.action_bin_values is None
            else [float(v) for v in cfg.action_bin_values],
            "action_token_offset": int(policy.action_token_begin),
            **{
                k: v
                for k, v in stats.to_dict().items()
                if k in ("q01", "q99", "normalize_mask", "num_samples")
            },
            "applied_in": "graph",
        },
        "greedy": "full vocabulary, ids outside the bins clipped to the nearest bin"
        if getattr(cfg, "greedy_full_vocab", False)
        else "action bins only",
        "low": [float(v) for v in contract.action.low],
        "high": [float(v) for v in contract.action.high],
    }
    return {
        "family": cfg.family,
        "preset": cfg.preset,
        "contract": contract.to_dict(),
        "observation": {"cameras": cameras, "proprio": proprio},
        "instruction": instruction,
        "action": action,
        "model": model | {"sequence_layout": getattr(cfg, "sequence_layout", "image-first")},
    }
