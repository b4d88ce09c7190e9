"""``simbridge train <trainer> ...``: supervised (sft) and reinforcement-learning (ppo, grpo) training.

    simbridge train sft --config launch/configs/sft_tiny.yaml optim.steps=500
    simbridge train ppo --config launch/configs/ppo_tiny.yaml

Each trainer is a module in :data:`TRAINERS` defining ``add_arguments(parser)`` and
``run(args) -> int``; only the chosen one is imported (the RL runner pulls in Ray).
"""

from __future__ import annotations

import argparse
import importlib

#: trainer name -> module implementing it (add yours here).
TRAINERS: dict[str, str] = {
    "sft": "simbridge.training.sft",
    "ppo": "simbridge.training.rl.runner",
    "grpo": "simbridge.training.rl.runner",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trainer", choices=sorted(TRAINERS), help="what to train: " + " | ".join(TRAINERS))
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="the trainer's own options (see: train <trainer> -h)"
    )


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(TRAINERS[args.trainer])
    parser = argparse.ArgumentParser(
        prog=f"simbridge train {args.trainer}", description=module.__doc__.splitlines()[0]
    )
    module.add_arguments(parser)
    sub = parser.parse_args(args.args)  # exits 2 with a usage message on bad arguments
    sub.algorithm = args.trainer
    sub.trainer = args.trainer
    return int(module.run(sub) or 0)
