"""``simbridge report``: compare policies (SFT vs RL) across generalization conditions.

    simbridge report sft=runs/eval/sft/<stamp> ppo=runs/eval/ppo/<stamp> -o reports/mini
    simbridge report episodes/hardware.zarr --name 3f2a9c=sft --name 81bd07=ppo -o reports/robot
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simbridge.data.report import ReportError, to_markdown, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="+", metavar="[LABEL=]PATH",
        help="simbridge eval run directories and/or zarr episode stores; LABEL renames the policy",
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("runs/report"), help="output directory")
    parser.add_argument("--baseline", help="policy the others are compared to (default: the one named *sft*)")
    parser.add_argument(
        "--name", action="append", default=[], metavar="POLICY_ID=LABEL",
        help="display label for a policy id found in an episode store (repeatable); unblinds hardware runs",
    )


def run(args: argparse.Namespace) -> int:
    names = {}
    for item in args.name:
        pid, sep, label = item.partition("=")
        if not sep or not pid or not label:
            raise SystemExit(f"simbridge report: error: --name expects POLICY_ID=LABEL, got {item!r}")
        names[pid] = label
    try:
        report = write_report(args.sources, args.out, baseline=args.baseline, policy_names=names)
    except ReportError as exc:
        print(f"simbridge report: {exc}")
        return 1
    print(to_markdown(report))
    print(f"wrote {args.out / 'report.md'}, {args.out / 'report.json'} and {args.out / 'report.png'}")
    return 0
