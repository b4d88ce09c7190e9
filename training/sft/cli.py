"""``simbridge train sft``: the command line of the SFT trainer (see :mod:`simbridge.training.cli_train`)."""

from __future__ import annotations

import argparse

from simbridge.data.config import load_config
from simbridge.training.sft.config import SFTConfig
from simbridge.training.sft.loop import train_sft


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], help="YAML config (repeatable; later wins)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. optim.steps=500 data.store=x.zarr"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(SFTConfig, args.config or None, overrides=args.overrides)
    if args.print_config:
        from simbridge.data.config import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    run_path = train_sft(cfg)
    print(f"sft run: {run_path}")
    return 0
