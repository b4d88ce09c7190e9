"""``simbridge train sft``: supervised fine-tuning (behaviour cloning) of a policy on demonstrations.

The trainer's options are :class:`~simbridge.training.sft.config.SFTConfig` (:data:`CONFIG`):
``--config FILE``, one flag per key and ``key=value`` overrides, parsed by
:mod:`simbridge.training.cli_train`, which then calls :func:`run_config`.
"""

from __future__ import annotations

import argparse

from simbridge.training.sft.config import SFTConfig

CONFIG = SFTConfig


def run_config(cfg: SFTConfig) -> int:
    """Train as configured; prints the run directory."""
    from simbridge.training.sft.loop import train_sft

    run_path = train_sft(cfg)
    print(f"sft run: {run_path}")
    return 0


# The package's public names for this command line (simbridge.training.sft.add_arguments / run):
# the same options and behaviour as `simbridge train sft`, which owns them.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from simbridge.training.cli_train import add_trainer_arguments

    add_trainer_arguments(parser, "sft")


def run(args: argparse.Namespace) -> int:
    from simbridge.training.cli_train import run_trainer

    return run_trainer("sft", args)
