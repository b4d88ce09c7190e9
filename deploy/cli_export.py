"""``simbridge export``: turn a training checkpoint into a verified ONNX policy bundle.

    simbridge export runs/sft/<stamp>/checkpoints/iter_000100 -o bundles/sft-100
    simbridge export --watch runs/ppo/<stamp> -o exports/ppo     # follows the trainer
    simbridge export --gen-key keys/exporter                     # keys/exporter (0600) + keys/exporter.pub
    simbridge export <checkpoint> -o bundles/sft-100 --sign keys/exporter

Watch mode reads ``<run-dir>/checkpoints/announce.jsonl`` (one line per checkpoint the trainer
saved), exports each new checkpoint to ``<export-dir>/<checkpoint-name>/`` and moves the
``<export-dir>/latest`` pointer that the robot side follows. It runs until interrupted, or
until ``--max-exports`` bundles were written or ``--timeout`` seconds passed.

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", nargs="?", type=Path, help="checkpoint directory to export (iter_XXXXXX)"
    )
    parser.add_argument("-o", "--output", type=Path, help="bundle directory (watch mode: export dir)")
    parser.add_argument(
        "--watch", type=Path, metavar="RUN_DIR", help="export every checkpoint the run announces"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    parser.add_argument(
        "--sign", type=Path, metavar="KEY", help="sign the bundle(s) with this ed25519 private key (PEM)"
    )
    parser.add_argument(
        "--gen-key",
        type=Path,
        metavar="PATH",
        help="write a new signing key to PATH (mode 0600) and its public key to PATH.pub, then exit",
    )
    parser.add_argument(
        "--parity-store", type=Path, help="episode store (.zarr) whose observations the parity check uses"
    )
    parser.add_argument(
        "--parity-samples", type=int, default=8, help="observations in the parity check (default 8)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max abs difference of continuous outputs"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--exporter",
        choices=("auto", "torchscript", "dynamo"),
        default="auto",
        help="torch.onnx exporter: auto = tracing (fast), then torch.export if tracing fails",
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, help="watch: seconds between polls of announce.jsonl"
    )
    parser.add_argument("--timeout", type=float, help="watch: stop after this many seconds")
    parser.add_argument("--max-exports", type=int, help="watch: stop after this many bundles")


def run(args: argparse.Namespace) -> int:
    from simbridge.data.config import ConfigError
    from simbridge.deploy.bundle import BundleError
    from simbridge.deploy.export import ExportError, ExportOptions, export_checkpoint, watch

    if args.gen_key is not None:
        if args.checkpoint is not None or args.watch is not None:
            raise ConfigError("--gen-key only writes a key pair; run the export separately with --sign")
        return _gen_key(args.gen_key)
    if (args.checkpoint is None) == (args.watch is None):
        raise ConfigError("give either a checkpoint directory or --watch <run-dir> (not both)")
    if args.output is None:
        raise ConfigError("-o/--output is required: the bundle directory (watch mode: the export directory)")
    if args.parity_samples < 2:
        raise ConfigError("--parity-samples: at least 2 (the parity check runs a batch)")
    options = ExportOptions(
        parity_samples=args.parity_samples,
        tolerance=args.tolerance,
        opset=args.opset,
        parity_store=args.parity_store,
        exporter=args.exporter,
        signing_key=args.sign,
    )
    try:
        if args.watch is not None:
            exported = watch(
                args.watch,
                args.output,
                options=options,
                poll_s=args.poll,
                timeout_s=args.timeout,
                max_exports=args.max_exports,
            )
            print(f"simbridge export: {len(exported)} bundle(s) written to {args.output}")
            return 0
        result = export_checkpoint(args.checkpoint, args.output, options=options, overwrite=args.force)
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
