"""``simbridge``: the one command line of the project.

Each verb lives in its own module, ``simbridge.<layer>.cli_<verb>``, which defines
``add_arguments(parser)`` and ``run(args) -> int``. This dispatcher only knows the verbs'
names, so ``simbridge --help`` is instant and a verb imports only its own layer (``deploy``
never pulls in torch). It lives in ``simbridge.data`` because that is the base layer every
other layer already depends on.

Exit codes: 0 success, 1 the verb failed, 2 bad command-line arguments or configuration,
3 the verb is not available in this installation. A verb's :class:`~simbridge.data.config.ConfigError`
(exit 2) and :class:`~simbridge.data.spec.ContractError` (exit 1; this includes
``BundleError``: a refused policy bundle) print their message, not a traceback: it already
names the field or file and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Verb:
    module: str
    summary: str
    issue: int  # the tracker issue that builds it, named when it is missing


VERBS: dict[str, Verb] = {
    "train": Verb("simbridge.training.cli_train", "train a policy in simulation: sft | ppo | grpo", 4),
    "demos": Verb("simbridge.training.cli_demos", "record scripted-expert demonstrations in simulation (for SFT)", 4),
    "eval": Verb("simbridge.training.cli_eval", "evaluate a policy (checkpoint, bundle or expert) on a suite", 3),
    "export": Verb("simbridge.deploy.cli_export", "export a checkpoint to a verified ONNX policy bundle", 6),
    "deploy": Verb("simbridge.deploy.cli_deploy", "run the policy on the robot or its simulated twin (ROS 2 nodes)", 7),
    "collect": Verb("simbridge.data.cli_collect", "collect teleop demonstrations or interventions", 8),
    "calibrate": Verb("simbridge.calibration.cli_calibrate", "camera intrinsics, hand-eye, verify, board", 9),
    "data": Verb("simbridge.data.cli_data", "inspect and convert episode stores: info | validate | ...", 8),
    "report": Verb("simbridge.data.cli_report", "compare SFT vs RL policies across generalization splits", 10),
    "demo": Verb("simbridge.training.cli_demo", "the main job on the embedded default (sim robot, tiny model)", 10),
}


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(v) for v in VERBS)
    verbs = "\n".join(f"  {name:<{width}}  {v.summary}" for name, v in VERBS.items())
    parser = argparse.ArgumentParser(
        prog="simbridge",
        description="SimBridge: train VLA policies with RL in simulation, deploy them on a Franka.",
        epilog=f"verbs:\n{verbs}\n\nRun 'simbridge <verb> --help' for a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("verb", nargs="?", metavar="<verb>", help="one of: " + ", ".join(VERBS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] == "--version":
        from simbridge.data.runs import software_version

        print(software_version())
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    verb = VERBS.get(name)
    if verb is None:
        close = [v for v in VERBS if v.startswith(name[:2])]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        top.print_usage(sys.stderr)
        print(f"simbridge: error: unknown verb {name!r}{hint}; choose from {', '.join(VERBS)}", file=sys.stderr)
        return EXIT_USAGE
    if importlib.util.find_spec(verb.module) is None:
        print(
            f"simbridge {name}: not built yet in this version (tracked in issue #{verb.issue}: {verb.summary}).",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    module = importlib.import_module(verb.module)
    parser = argparse.ArgumentParser(prog=f"simbridge {name}", description=verb.summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)  # exits 2 with a usage message on bad arguments
    from simbridge.data.config import ConfigError
    from simbridge.data.spec import ContractError

    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"simbridge {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ContractError as exc:  # e.g. a bundle refused as corrupted, unsigned or incompatible
        print(f"simbridge {name}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"simbridge {name}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The message on one line (a path or a quoted value may carry a newline)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
