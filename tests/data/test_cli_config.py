"""simbridge.data.cli_config: a config dataclass as a command line (flags, --config FILE, key=value)."""

from __future__ import annotations

import argparse
from dataclasses import field
from pathlib import Path
from typing import Literal

import pytest

from simbridge.data.cli import VerbParser
from simbridge.data.cli_config import add_config_arguments, config_from_args, parse_verb_args
from simbridge.data.config import ConfigError, config
from simbridge.data.config_fields import config_fields, field_docs


@config
class Inner:
    #: Learning rate
    #: (two comment lines).
    lr: float = 1e-3
    kind: Literal["adam", "sgd"] = "adam"
    sizes: tuple[int, int] = (4, 8)


@config
class Job:
    """A test job."""

    #: Steps to run.
    steps: int = 10
    name: str = "job"
    """Name of the run (an attribute docstring)."""
    verbose: bool = False  #: Print more.
    tags: list[str] = field(default_factory=list)
    camera: str = ""
    limit: float | None = None
    optim: Inner = field(default_factory=lambda: Inner(lr=0.5))
    extra: dict = field(default_factory=dict)


@config(kw_only=True)
class Positional:
    #: The input file.
    src: str
    #: More inputs.
    rest: list[str] = field(default_factory=list)
    level: int = 1


def parser_for(schema: type, **kw) -> argparse.ArgumentParser:
    parser = VerbParser(prog="simbridge test")
    add_config_arguments(parser, schema, **kw)
    return parser


def parse(schema: type, *argv: str, **kw):
    return config_from_args(parse_verb_args(parser_for(schema, **kw), argv), schema)


def test_field_docs_from_comments_trailing_comments_and_docstrings() -> None:
    assert field_docs(Job) == {"steps": "Steps to run.", "name": "Name of the run (an attribute docstring).",
                               "verbose": "Print more."}
    assert field_docs(Inner)["lr"] == "Learning rate (two comment lines)."
    paths = [f.path for f in config_fields(Job)]
    assert paths[-5:] == ["optim", "optim.lr", "optim.kind", "optim.sizes", "extra"]
    # Defaults of a nested section come from the enclosing default instance.
    assert next(f for f in config_fields(Job) if f.path == "optim.lr").default == 0.5


def test_defaults_flags_and_types() -> None:
    assert parse(Job) == Job()
    cfg = parse(Job, "--steps", "3", "--verbose", "--tags", "a", "b", "--optim.kind", "sgd", "--optim.sizes", "2", "3",
                "--limit", "1.5", "--extra", "{backend: x}")
    assert (cfg.steps, cfg.verbose, cfg.tags, cfg.optim.kind, cfg.optim.sizes, cfg.limit) == (
        3, True, ["a", "b"], "sgd", (2, 3), 1.5)
    assert cfg.extra == {"backend": "x"}
    # Underscores and dashes are the same; --no-x turns a boolean off; a list flag may repeat.
    cfg = parse(Job, "--optim.sizes", "1", "1", "--no-verbose", "--tags", "a", "--tags", "b")
    assert cfg.verbose is False and cfg.tags == ["a", "b"]


def test_precedence_file_then_flags_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("steps: 5\nname: base\noptim: {lr: 0.1}\n")
    (tmp_path / "job.yaml").write_text("defaults: [base]\nname: file\ncamera: cam\n")
    cfg = parse(Job, "--config", str(tmp_path / "job.yaml"))
    assert (cfg.steps, cfg.name, cfg.optim.lr, cfg.camera) == (5, "file", 0.1, "cam")
    cfg = parse(Job, "--config", str(tmp_path / "job.yaml"), "--name", "flag", "--steps", "6", "steps=7")
    assert (cfg.steps, cfg.name) == (7, "flag")  # key=value beats the flag, the flag beats the file
    cfg = parse(Job, "steps=8", "--config", str(tmp_path / "job.yaml"), "--steps", "6")
    assert cfg.steps == 8  # wherever it stands on the line
    # What the command implies sits above the files, below flags; an old --set spelling wins over all.
    args = parse_verb_args(parser_for(Job), ["--config", str(tmp_path / "job.yaml"), "--steps", "6"])
    cfg = config_from_args(args, Job, early_overrides=["steps=1", "name=early"], extra_overrides=["camera=set"])
    assert (cfg.steps, cfg.name, cfg.camera) == (6, "early", "set")
    # A later --config file beats an earlier one.
    (tmp_path / "more.yaml").write_text("name: more\n")
    assert parse(Job, "--config", str(tmp_path / "job.yaml"), "--config", str(tmp_path / "more.yaml")).name == "more"


def test_overrides_keep_strings_and_parse_the_rest() -> None:
    cfg = parse(Job, "camera=0", "name=007", "limit=null", "tags=[a, b]", "optim.lr=1e-4", "extra.backend=pynput")
    assert (cfg.camera, cfg.name, cfg.limit, cfg.tags) == ("0", "007", None, ["a", "b"])
    assert cfg.optim.lr == 1e-4 and cfg.extra == {"backend": "pynput"}


def test_section_file_then_its_flags(tmp_path: Path) -> None:
    (tmp_path / "optim.yaml").write_text("lr: 0.25\nkind: sgd\n")
    cfg = parse(Job, "--optim", str(tmp_path / "optim.yaml"), "--optim.kind", "adam")
    assert (cfg.optim.lr, cfg.optim.kind) == (0.25, "adam")
    with pytest.raises(ConfigError, match=r"--optim nope.yaml: no such file"):
        parse(Job, "--optim", "nope.yaml")


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["stepz=3"], "unknown key 'stepz'"),
        (["optim.lrr=3"], "unknown key 'optim.lrr'"),
        (["steps=many"], "key 'steps': bad value 'many'"),
        (["optim.kind=rmsprop"], "key 'optim.kind'"),
        (["steps"], "unexpected argument 'steps'"),
    ],
)
def test_bad_key_or_type_is_one_line_naming_the_key(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(Job, *argv)
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--steps", "many"], "argument --steps: invalid int value: 'many'"),
     (["--optim.kind", "rms"], "argument --optim.kind: invalid choice"),
     (["--stepz", "3"], "unrecognized arguments: --stepz")],
)
def test_bad_flag_exits_2_with_one_line(argv: list[str], flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(Job, *argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and flag in err and err.count("\n") == 1 and err.startswith("simbridge test: error:")


def test_positional_fields_and_overrides() -> None:
    words = {"positional": ("src", "rest")}
    cfg = parse(Positional, "a.txt", "b", "c", "level=3", **words)
    assert (cfg.src, cfg.rest, cfg.level) == ("a.txt", ["b", "c"], 3)
    # LABEL=path words are positional values unless the label is a field; words after flags count too.
    cfg = parse(Positional, "a.txt", "--level", "2", "sft=runs/x", "level=4", **words)
    assert (cfg.rest, cfg.level) == (["sft=runs/x"], 4)
    with pytest.raises(ConfigError, match="missing required key 'src'"):
        parse(Positional, **words)
    with pytest.raises(ConfigError, match=r"unexpected argument\(s\) \['b'\]"):
        parse(Positional, "a", "b", positional=("src",))
    with pytest.raises(ConfigError, match="unknown key 'levle'"):
        parse(Positional, "a", "levle=2", positional=("src",))


def test_aliases_and_default_config(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("steps: 42\n")
    parser = parser_for(Job, aliases={"steps": ["-n", "--num-steps"]}, default_config=tmp_path / "d.yaml")
    assert config_from_args(parse_verb_args(parser, []), Job).steps == 42
    assert config_from_args(parse_verb_args(parser, ["-n", "3"]), Job).steps == 3
    assert config_from_args(parse_verb_args(parser, ["--num-steps", "4"]), Job).steps == 4
    (tmp_path / "other.yaml").write_text("name: other\n")  # --config replaces the default file
    assert config_from_args(parse_verb_args(parser, ["--config", str(tmp_path / "other.yaml")]), Job).steps == 10
    with pytest.raises(ValueError, match="nope"):
        parser_for(Job, aliases={"nope": "-x"})


def test_help_lists_every_field_with_its_doc(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_verb_args(parser_for(Job), ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--config FILE", "--steps INT", "--name STR", "--verbose, --no-verbose", "--tags STR [STR ...]",
                 "--optim FILE", "--optim.lr FLOAT", "--optim.kind {adam,sgd}", "--optim.sizes INT INT", "--extra YAML"):
        assert flag in text, flag
    assert "Steps to run (default: 10)" in text and "Learning rate (two comment lines) (default: 0.5)" in text
    assert "--optim_lr" not in text  # the underscore spelling works but is not listed twice
