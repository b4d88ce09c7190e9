"""``simbridge report``: compare policies (SFT vs RL) across generalization conditions.

    simbridge report sft=runs/eval/sft/<stamp> ppo=runs/eval/ppo/<stamp> -o reports/mini
    simbridge report episodes/hardware.zarr --name 3f2a9c=sft --name 81bd07=ppo -o reports/robot

Options are :class:`ReportConfig` (``--config FILE``, one flag per field, ``key=value``); the
sources are plain arguments, so a ``LABEL=PATH`` source is read as a source, not an override, unless
LABEL is one of the config's keys. Without ``-o`` the report goes to a new run directory,
``<root>/report/<stamp>``, named like every run (``root`` as in ``simbridge train`` and ``demo``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import field
from pathlib import Path

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import config
from simbridge.data.report import ReportError, to_markdown, write_report
from simbridge.data.runs import new_run_path


@config(kw_only=True)
class ReportConfig:
    #: simbridge eval run directories and/or zarr episode stores, each [LABEL=]PATH (LABEL renames the policy).
    sources: list[str]
    #: Output directory (default: a new run directory <root>/report/<stamp>).
    out: Path | None = None
    #: Where new run directories go.
    root: Path = Path("runs")
    #: Policy the others are compared to (default: the one named *sft*).
    baseline: str | None = None
    #: Display labels for policy ids found in an episode store, each POLICY_ID=LABEL; unblinds hardware runs.
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources: at least one eval run directory or episode store")
        for item in self.names:
            pid, sep, label = item.partition("=")
            if not sep or not pid or not label:
                raise ValueError(f"names: --name expects POLICY_ID=LABEL, got {item!r}")


CONFIG = ReportConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ReportConfig, positional=("sources",), aliases={"out": "-o", "names": "--name"})


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, ReportConfig)
    names = dict(item.split("=", 1) for item in cfg.names)
    out = cfg.out or new_run_path(cfg.root, "report")
    try:
        report = write_report(cfg.sources, out, baseline=cfg.baseline, policy_names=names)
    except ReportError as exc:
        print(f"simbridge report: {exc}", file=sys.stderr)
        return 1
    print(to_markdown(report))
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {out / 'report.png'}")
    return 0
