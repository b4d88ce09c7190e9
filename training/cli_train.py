"""``simbridge train <trainer> ...``: supervised (sft) and reinforcement-learning (ppo, grpo) training.

    simbridge train sft --config launch/configs/sft_tiny.yaml optim.steps=500
    simbridge train ppo --config launch/configs/ppo_tiny.yaml --runner.iterations 10
    simbridge train grpo --config launch/configs/grpo_toy.yaml --print-config

Each trainer is a module in :data:`TRAINERS` defining ``CONFIG`` (its config dataclass),
optionally ``ALIASES`` (field path -> extra flag spellings) and ``run_config(cfg) -> int``; only
the chosen one is imported (the RL runner pulls in Ray). Its options are ``--config FILE``, one
flag per key of ``CONFIG`` and ``key=value`` overrides (:mod:`simbridge.data.cli_config`), plus
``--print-config`` to print the resolved config and exit, and ``--plan`` to print the memory plan
(:mod:`simbridge.training.memory_plan`) and exit, refusing a config that cannot fit. ``train ppo`` / ``train grpo`` set
``algorithm.name`` over the config files.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

#: trainer name -> module implementing it (add yours here).
TRAINERS: dict[str, str] = {
    "sft": "simbridge.training.sft.cli",
    "ppo": "simbridge.training.rl.runner",
    "grpo": "simbridge.training.rl.runner",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trainer", choices=sorted(TRAINERS), help="what to train: " + " | ".join(TRAINERS))
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="the trainer's own options (see: train <trainer> -h)"
    )


def trainer_module(trainer: str) -> ModuleType:
    return importlib.import_module(TRAINERS[trainer])


def add_trainer_arguments(parser: argparse.ArgumentParser, trainer: str) -> None:
    """The options of ``simbridge train <trainer>``: its config's flags and ``--print-config``."""
    from simbridge.data.cli_config import add_config_arguments

    module = trainer_module(trainer)
    add_config_arguments(parser, module.CONFIG, aliases=getattr(module, "ALIASES", None))
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--plan", action="store_true",
                        help="print the GPU memory plan per worker group (parameters, gradients, optimizer, "
                             "activations, KV cache) and exit; exit 2 when it cannot fit")  # fmt: skip


def run_trainer(trainer: str, args: argparse.Namespace) -> int:
    """Load the trainer's config from parsed ``args`` and train (or print it, with --print-config)."""
    from simbridge.data.cli_config import config_from_args
    from simbridge.data.config import to_yaml

    module = trainer_module(trainer)
    # The trainer named on the command line is the algorithm, over what the --config files say.
    implied = [f"algorithm.name={trainer}"] if trainer != "sft" else []
    cfg = config_from_args(args, module.CONFIG, early_overrides=implied)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if getattr(args, "plan", False):
        from simbridge.training.memory_plan import run_plan

        return run_plan(trainer, cfg)
    return int(module.run_config(cfg) or 0)


def run(args: argparse.Namespace) -> int:
    from simbridge.data.cli import VerbParser
    from simbridge.data.cli_config import parse_verb_args

    doc = trainer_module(args.trainer).__doc__ or ""
    # A VerbParser: a bad trainer option exits 2 with one line naming it, like every verb's.
    parser = VerbParser(prog=f"simbridge train {args.trainer}", description=doc.splitlines()[0] if doc else None)
    add_trainer_arguments(parser, args.trainer)
    return run_trainer(args.trainer, parse_verb_args(parser, args.args))
