"""``simbridge export``: turn a training checkpoint into a verified ONNX policy bundle.

    simbridge export runs/sft/<stamp>/checkpoints/iter_000100 -o bundles/sft-100
    simbridge export --watch runs/ppo/<stamp> -o exports/ppo     # follows the trainer
    simbridge export --gen-key keys/exporter                     # keys/exporter (0600) + keys/exporter.pub
    simbridge export <checkpoint> -o bundles/sft-100 --sign keys/exporter
    simbridge export <checkpoint> -o bundles/sft-100-int8 --quantize int8 --optimize extended

Watch mode reads ``<run-dir>/checkpoints/announce.jsonl`` (one line per checkpoint the trainer
saved), exports each new checkpoint to ``<export-dir>/<checkpoint-name>/`` and moves the
``<export-dir>/latest`` pointer that the robot side follows. It runs until interrupted, or
until ``--max-exports`` bundles were written or ``--timeout`` seconds passed.

Options are :class:`ExportConfig`: ``--config FILE``, one flag per field (``simbridge export --help``)
and ``key=value`` overrides (``simbridge export <checkpoint> -o <bundle> opset=18``).

Every export runs the parity check (torch vs ONNX Runtime); a bundle that fails it is not
written and the command exits 1. Observations for the check come from ``--parity-store``
(an episode store, e.g. recorded on the robot) or are generated from the contract.

``--sign KEY`` writes ``manifest.sig``, an ed25519 signature of the manifest (which holds every
file's sha256). A robot configured with trusted public keys (``trusted_keys``) runs only
bundles signed by one of them; see ``simbridge.deploy.signing``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import config


@config
class ExportConfig:
    """``simbridge export``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: Checkpoint directory to export (``iter_XXXXXX``); also the first plain argument.
    checkpoint: Path | None = None
    #: Bundle directory to write (watch mode: the export directory, with its ``latest`` pointer).
    output: Path | None = None
    #: Watch mode: a run directory (``runs/<name>/<stamp>``); export every checkpoint it announces.
    watch: Path | None = None
    #: Replace an existing bundle at --output.
    force: bool = False
    #: Sign the bundle(s) with this ed25519 private key (PEM): writes manifest.sig.
    sign: Path | None = None
    #: Write a new signing key to this path (mode 0600) and its public key to PATH.pub, then exit.
    gen_key: Path | None = None
    #: Episode store (.zarr) whose observations the parity check uses (default: generated from the contract).
    parity_store: Path | None = None
    #: Observations in the parity check (it runs a batch: at least 2).
    parity_samples: int = 8
    #: Largest absolute difference of continuous outputs allowed between torch and ONNX Runtime.
    tolerance: float = 1e-4
    #: ONNX opset.
    opset: int = 17
    #: torch.onnx exporter: auto = tracing (fast), then torch.export if tracing fails.
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    #: Speed lever: int8 = dynamic quantization (weights int8, MatMul), gated by parity on decoded actions.
    quantize: Literal["none", "int8"] = "none"
    #: int8: regexes of nodes left fp32 (default: lm_head, patch embedding, keypoint/vision stems, proprio projector; int8_exclude=[]: none but the image resize).
    int8_exclude: list[str] | None = None
    #: int8: weight scales per output channel (--no-int8-per-channel: one per tensor).
    int8_per_channel: bool = True
    #: Speed lever: write the model optimized offline by onnxruntime (CPU provider only; re-export for CUDA).
    optimize: Literal["none", "basic", "extended"] = "none"
    #: Graph optimization level the runtime's session applies (recorded in the manifest).
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    #: Lossy levers: max |torch - bundle| of a decoded action, as a fraction of its range (default 0.05).
    action_tolerance: float | None = None
    #: Intra-op threads recorded for the runtime (default: onnxruntime's choice).
    intra_op_threads: int | None = None
    #: Watch mode: seconds between polls of announce.jsonl.
    poll: float = 1.0
    #: Watch mode: stop after this many seconds (default: until interrupted).
    timeout: float | None = None
    #: Watch mode: stop after this many bundles.
    max_exports: int | None = None

    def __post_init__(self) -> None:
        if self.gen_key is not None:
            if self.checkpoint is not None or self.watch is not None:
                raise ValueError("gen_key: --gen-key only writes a key pair; run the export separately with --sign")
            return
        if (self.checkpoint is None) == (self.watch is None):
            raise ValueError("checkpoint: give either a checkpoint directory or --watch <run-dir> (not both)")
        if self.output is None:
            raise ValueError("output: -o/--output is required: the bundle directory (watch mode: the export directory)")
        if self.parity_samples < 2:
            raise ValueError("parity_samples: at least 2 (the parity check runs a batch)")
        if not self.tolerance > 0 or not self.poll > 0:
            raise ValueError("tolerance: --tolerance and --poll must be positive")


CONFIG = ExportConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ExportConfig, positional=("checkpoint",), aliases={"output": "-o"})


def run(args: argparse.Namespace) -> int:
    from simbridge.deploy.bundle import BundleError
    from simbridge.deploy.export import ExportError, ExportOptions, export_checkpoint, watch

    cfg = config_from_args(args, ExportConfig)
    if cfg.gen_key is not None:
        return _gen_key(cfg.gen_key)
    assert cfg.output is not None  # checked by ExportConfig
    options = ExportOptions(
        parity_samples=cfg.parity_samples,
        tolerance=cfg.tolerance,
        opset=cfg.opset,
        parity_store=cfg.parity_store,
        exporter=cfg.exporter,
        signing_key=cfg.sign,
        quantize=cfg.quantize,
        int8_exclude=None if cfg.int8_exclude is None else tuple(cfg.int8_exclude),
        int8_per_channel=cfg.int8_per_channel,
        optimize=cfg.optimize,
        graph_optimization=cfg.graph_optimization,
        action_tolerance=cfg.action_tolerance,
        intra_op_threads=cfg.intra_op_threads,
    )
    try:
        if cfg.watch is not None:
            exported = watch(
                cfg.watch,
                cfg.output,
                options=options,
                poll_s=cfg.poll,
                timeout_s=cfg.timeout,
                max_exports=cfg.max_exports,
            )
            print(f"simbridge export: {len(exported)} bundle(s) written to {cfg.output}")
            return 0
        assert cfg.checkpoint is not None
        result = export_checkpoint(cfg.checkpoint, cfg.output, options=options, overwrite=cfg.force)
    except (ExportError, BundleError, FileNotFoundError) as exc:
        print(f"simbridge export: {exc}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _gen_key(path: Path) -> int:
    from simbridge.deploy.bundle import BundleError
    from simbridge.deploy.signing import generate_key_pair, key_fingerprint, load_public_key

    try:
        private, public = generate_key_pair(path)
    except (BundleError, OSError) as exc:
        print(f"simbridge export: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {private} (mode 0600; keep it on the export machine, never on the robot)")
    print(f"public key:  {public} (fingerprint {key_fingerprint(load_public_key(public))})")
    print(f"sign:        simbridge export <checkpoint> -o <bundle> --sign {private}")
    print(f"robot:       add {public} to the policy's trusted_keys")
    return 0
