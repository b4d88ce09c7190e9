"""``simbridge``: the one command line of the project.

Each verb lives in its own module, ``simbridge.<layer>.cli_<verb>``, which defines
``add_arguments(parser)`` and ``run(args) -> int``. Its options are a typed config dataclass,
turned into ``--config FILE``, one flag per field and ``key=value`` overrides by
:mod:`simbridge.data.cli_config`. This dispatcher only knows the verbs' names, so
``simbridge --help`` is instant and a verb imports only its own layer (``deploy`` never pulls in
torch). It lives in ``simbridge.data`` because that is the base layer every other layer already
depends on.

Exit codes: 0 success, 1 the verb failed, 2 bad command-line arguments or configuration. A usage
error and a verb's :class:`~simbridge.data.config.ConfigError` are one line,
``simbridge <verb>: error: ...`` naming the option or key (exit 2);
:class:`~simbridge.data.spec.ContractError` (exit 1; this includes ``BundleError``: a refused
policy bundle) prints its message on one line, not a traceback: it already names the field or
file and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Verb:
    module: str
    summary: str


VERBS: dict[str, Verb] = {
    "train": Verb("simbridge.training.cli_train", "train a policy in simulation: sft | ppo | grpo"),
    "demos": Verb("simbridge.training.cli_demos", "record scripted-expert demonstrations in simulation (for SFT)"),
    "eval": Verb("simbridge.training.cli_eval", "evaluate a policy (checkpoint, bundle or expert) on a suite"),
    "check-checkpoint": Verb("simbridge.training.cli_check_checkpoint", "check a converted OpenVLA / OFT checkpoint against its files"),
    "serve": Verb("simbridge.training.cli_serve", "serve a torch checkpoint over a websocket (ws://host:port policies)"),
    "export": Verb("simbridge.deploy.cli_export", "export a checkpoint to a verified ONNX policy bundle"),
    "deploy": Verb("simbridge.deploy.cli_deploy", "run the policy on the robot or its simulated twin (ROS 2 nodes)"),
    "collect": Verb("simbridge.data.cli_collect", "collect teleop demonstrations or interventions"),
    "calibrate": Verb("simbridge.calibration.cli_calibrate", "camera intrinsics, hand-eye, verify, board"),
    "data": Verb("simbridge.data.cli_data", "inspect and convert episode stores: info | validate | ..."),
    "report": Verb("simbridge.data.cli_report", "compare SFT vs RL policies across generalization splits"),
    "demo": Verb("simbridge.training.cli_demo", "the main job on the embedded default (sim robot, tiny model)"),
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
    module = importlib.import_module(verb.module)
    parser = VerbParser(prog=f"simbridge {name}", description=verb.summary)
    module.add_arguments(parser)
    from simbridge.data.cli_config import parse_verb_args
    from simbridge.data.config import ConfigError
    from simbridge.data.spec import ContractError

    args = parse_verb_args(parser, rest)  # exits 2 with one line on bad arguments
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"simbridge {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ContractError as exc:  # e.g. a bundle refused as corrupted, unsigned or incompatible
        print(f"simbridge {name}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"simbridge {name}: interrupted", file=sys.stderr)
        return 130


class VerbParser(argparse.ArgumentParser):
    """A verb's parser: a usage error is one line naming the option, not the whole usage (with one
    flag per config field the usage is long, and the error would scroll away below it)."""

    def error(self, message: str) -> typing.NoReturn:
        # What the usage line would have shown: the choices of a missing positional (train <trainer>).
        for action in self._actions:
            name = action.metavar or action.dest
            if (not action.option_strings and action.choices and isinstance(name, str) and name in message
                    and not name.startswith("{")):  # a {a,b} metavar lists them already
                message += f"; {name}: one of {', '.join(map(str, action.choices))}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(exc: BaseException | str) -> str:
    """The message on one line (a path or a quoted value may carry a newline)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
