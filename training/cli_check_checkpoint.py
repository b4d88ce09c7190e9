"""``simbridge check-checkpoint <dir>``: a converted OpenVLA / OpenVLA-OFT checkpoint next to its own files.

Run it on the real weights you downloaded (``huggingface-cli download openvla/openvla-7b
--local-dir /models/openvla-7b``) before trusting any result computed with them::

    simbridge check-checkpoint /models/openvla-7b --unnorm-key bridge_orig
    simbridge check-checkpoint /models/oft-libero-spatial --unnorm-key libero_spatial_no_noops \\
        --num-images 2 --chunk-size 8 --image agentview.png --image wrist.png

It converts the checkpoint as ``load_pretrained_policy`` does and prints the prompt's token ids,
the LM input layout, each image tensor's statistics and the first predicted action, each next to
what the checkpoint's processor, model card and ``predict_action`` imply (computed from the
checkpoint's files by :mod:`simbridge.training.models.conformance`, not by the policy). Exit
status 0: everything matches; 1: a mismatch (or a checkpoint the converter refuses, with why).
The 7B model is converted in float32: expect ~45 GB of RAM.

Options are :class:`CheckCheckpointConfig`: ``--config FILE``, one flag per field
(``simbridge check-checkpoint --help``) and ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import config
from simbridge.training.models.conformance import DOCUMENTED_TASK


@config
class CheckCheckpointConfig:
    """``simbridge check-checkpoint``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: Checkpoint directory (config.json, model*.safetensors, ...); also the first plain argument.
    checkpoint: Path | None = None
    #: The dataset statistics to unnormalize with (a norm_stats key; needed when there are several).
    unnorm_key: str | None = None
    #: Policy family (default: openvla-oft when OFT's head / proprio files are present, else openvla).
    family: Literal["openvla", "openvla-oft"] | None = None
    #: OpenVLA-OFT: images per observation (not stored in the checkpoint; LIBERO: 2).
    num_images: int | None = None
    #: OpenVLA-OFT: actions per chunk (not stored in the checkpoint; LIBERO: 8).
    chunk_size: int | None = None
    #: Task instruction (default: a LIBERO task whose Llama-2 token ids are documented).
    instruction: str = DOCUMENTED_TASK
    #: RGB image files, one per camera in order (default: a synthetic image at the model's size).
    images: list[Path] = field(default_factory=list)
    #: OpenVLA-OFT: the raw 8-D robot state, in the checkpoint's own convention.
    proprio: list[float] | None = None
    #: Print the report as JSON.
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            raise ValueError("checkpoint: give the checkpoint directory")
        if self.proprio is not None and len(self.proprio) != 8:
            raise ValueError("proprio: 8 numbers (the robot state the checkpoint was trained with)")


CONFIG = CheckCheckpointConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, CheckCheckpointConfig, positional=("checkpoint",),
                         aliases={"images": "--image", "as_json": "--json"})  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from simbridge.training.models.conformance import check_checkpoint, format_report
    from simbridge.training.models.loaders import CheckpointFormatError

    cfg = config_from_args(args, CheckCheckpointConfig)
    assert cfg.checkpoint is not None  # checked by CheckCheckpointConfig
    load = {"family": cfg.family, "num_images": cfg.num_images, "chunk_size": cfg.chunk_size}
    try:
        images = [_read_image(p) for p in cfg.images] or None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation chatter
            report = check_checkpoint(cfg.checkpoint, instruction=cfg.instruction, images=images,
                                      proprio=None if cfg.proprio is None else np.asarray(cfg.proprio),
                                      unnorm_key=cfg.unnorm_key, **load)  # fmt: skip
    except (CheckpointFormatError, OSError) as exc:
        print(f"simbridge check-checkpoint: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if cfg.as_json else format_report(report))
    return 0 if report.ok else 1


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
