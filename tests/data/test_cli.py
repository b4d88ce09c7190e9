"""The `simbridge` command line: help, unknown verbs, bad arguments, missing verbs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simbridge.data import cli


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simbridge.data.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_verb():
    out = run_cli("--help")
    assert out.returncode == 0
    for verb in ("train", "demos", "eval", "export", "deploy", "collect", "calibrate", "data", "report"):
        assert f"  {verb}" in out.stdout


def test_no_arguments_prints_help_and_exits_2():
    out = run_cli()
    assert out.returncode == 2 and "verbs:" in out.stdout


def test_unknown_verb_exits_2_with_suggestion():
    out = run_cli("trian")
    assert out.returncode == 2
    assert "unknown verb 'trian'" in out.stderr and "train" in out.stderr


def test_every_registered_verb_has_help(capsys):
    for name in cli.VERBS:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0, name


@pytest.mark.parametrize(
    "args",
    [
        ["data", "--no-such-flag"],
        ["train", "sft", "--no-such-flag"],
        ["export", "--no-such-flag"],
        ["eval", "--episodes", "many"],
        ["demos", "--episodes", "2"],  # --out is required
        ["report"],
    ],
)
def test_bad_verb_arguments_exit_2(args):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert f"simbridge {args[0]}" in out.stderr and "error:" in out.stderr


def test_train_without_trainer_names_the_choices():
    out = run_cli("train")
    assert out.returncode == 2 and "sft" in out.stderr and "ppo" in out.stderr
