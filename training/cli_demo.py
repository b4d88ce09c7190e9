"""``simbridge demo``: the main job on the embedded default (see :mod:`simbridge.training.demo`).

    simbridge demo                                    # what `make demo` runs: launch/configs/demo.yaml
    simbridge demo demos=20 episodes_per_condition=1  # any DemoConfig key, or its flag (--demos 20)
    simbridge demo --run-dir runs/demo/<stamp> --from-stage export   # continue a run

Options are :class:`DemoCommand`: the demo's :class:`~simbridge.training.demo.DemoConfig` plus which
run to continue and from which stage; ``--config FILE`` (default ``launch/configs/demo.yaml``), one
flag per field, ``key=value``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import config
from simbridge.training.demo import REPO, STAGES, DemoConfig, run_demo

DEFAULT_CONFIG = REPO / "launch" / "configs" / "demo.yaml"


@config
class DemoCommand(DemoConfig):
    """A demo run: its :class:`DemoConfig`, and where to continue an earlier run."""

    #: Continue this demo run directory (runs/demo/<stamp>) instead of starting a new one.
    run_dir: Path | None = None
    #: First stage to run; a later one needs --run-dir (the run whose earlier stages it continues).
    from_stage: Literal["demos", "sft", "ppo", "export", "twin", "report"] = "demos"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.from_stage != STAGES[0] and self.run_dir is None:
            raise ValueError(f"from_stage: --from-stage {self.from_stage} needs --run-dir (the run to continue)")


CONFIG = DemoCommand


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoCommand, default_config=DEFAULT_CONFIG)


def run(args: argparse.Namespace) -> int:
    cmd = config_from_args(args, DemoCommand)
    # The run directory records the demo's own config, not how this command line continued it.
    demo = DemoConfig(**{f.name: getattr(cmd, f.name) for f in dataclasses.fields(DemoConfig)})
    run_demo(demo, cmd.run_dir, cmd.from_stage)
    return 0
