"""``simbridge demo``: the main job on the embedded default (see :mod:`simbridge.training.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from simbridge.training.demo import STAGES, load_demo_config, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="launch/configs/demo.yaml", help="demo config YAML")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. demos=20")
    parser.add_argument("--run-dir", type=Path, default=None, help="continue this demo run directory")
    parser.add_argument("--from-stage", choices=STAGES, default="demos", help="first stage to run (with --run-dir)")


def run(args: argparse.Namespace) -> int:
    if args.from_stage != "demos" and args.run_dir is None:
        raise SystemExit("simbridge demo: error: --from-stage needs --run-dir (the run to continue)")
    cfg = load_demo_config(args.config, args.overrides)
    run_demo(cfg, args.run_dir, args.from_stage)
    return 0
