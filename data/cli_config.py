"""One command-line pattern for every ``simbridge`` verb: its options are a typed config dataclass.

A verb writes its options once, as a :func:`~simbridge.data.config.config` dataclass whose fields
carry ``#:`` comments (or attribute docstrings), and derives its command line from it, as
LeRobot's draccus CLIs do::

    def add_arguments(parser):
        add_config_arguments(parser, ExportConfig, positional=("checkpoint",), aliases={"output": "-o"})

    def run(args):
        cfg = config_from_args(args, ExportConfig)

The command line then has

* ``--config FILE`` (repeatable): YAML files of the same dataclass, merged in order;
* one ``--<field>`` flag per field, nested fields dotted (``--chunking.execute-steps 1``), with the
  field's type, choices and default, and its ``#:`` comment as help. Dashes and underscores are the
  same (``--max-steps`` = ``--max_steps``); booleans are ``--x`` / ``--no-x``; lists take one or
  more values (``--trusted-keys a.pub b.pub``, or the flag repeated); a nested section also takes
  a YAML file of its own (``--board board.yaml``);
* ``key.sub=value`` positionals for any key, also those without a flag (dicts). When the verb has
  positional fields (``simbridge export <checkpoint>``), ``key=value`` is an override only when
  ``key`` is one of the config's fields; other words fill the positional fields in order.

Precedence: dataclass defaults < ``--config`` files < section files < flags and positional fields
< ``key=value``. Everything is validated once: an unknown key, a wrong type or a bad value raises
:class:`~simbridge.data.config.ConfigError` naming the key, which ``simbridge`` reports on one line
with exit code 2 (see :mod:`simbridge.data.cli`). The fields, their types, defaults and ``#:``
documentation come from :mod:`simbridge.data.config_fields`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from simbridge.data.config import ConfigError, load_config, read_yaml_composed
from simbridge.data.config_fields import ConfigField, config_fields, unwrap_optional

T = TypeVar("T")

# Namespace names of what this module adds; the prefix keeps them apart from a verb's own arguments.
_FLAG, _SECTION = "cfg.flag:", "cfg.section:"
_FILES, _ARGS, _DEFAULT_FILES, _POSITIONAL = "cfg.files", "cfg.args", "cfg.default_files", "cfg.positional"
_OVERRIDE = re.compile(r"^([A-Za-z_][\w-]*)(\.[A-Za-z_][\w-]*)*=")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    schema: type,
    *,
    positional: Sequence[str] = (),
    aliases: Mapping[str, str | Sequence[str]] | None = None,
    default_config: str | Path | None = None,
) -> None:
    """Add ``--config``, one flag per field of ``schema`` and the ``key=value`` positionals.

    ``positional``: top-level fields also given as plain words, in order (a list field takes the
    rest). ``aliases``: field path -> extra option strings (old spellings, ``-o``); an alias that
    equals a section's file flag replaces it. ``default_config``: read when no ``--config`` is given."""
    alias_map = {k: [v] if isinstance(v, str) else list(v) for k, v in (aliases or {}).items()}
    taken = {s for names in alias_map.values() for s in names}
    fields = config_fields(schema)
    unknown = set(alias_map) - {f.path for f in fields}
    if unknown:
        raise ValueError(f"aliases for fields {schema.__name__} does not have: {sorted(unknown)}")
    default_text = f" (default: {default_config})" if default_config else ""
    parser.add_argument(
        "--config", dest=_FILES, action="append", metavar="FILE",
        help=f"YAML file of these options (repeatable, later files win){default_text}; "
        "flags and key=value override it",
    )  # fmt: skip
    by_name = {f.path: f for f in fields}
    words = [w.upper() for w in positional]
    parser.add_argument(
        _ARGS, nargs="*", metavar=" ".join([*words, "KEY=VALUE"]),
        help="; ".join([*(f"{w}: {_escape(_plain(by_name[p].doc)).rstrip('.') or p}"
                          for w, p in zip(words, positional, strict=True)),
                        "KEY=VALUE: set any option by its dotted key (e.g. a.b=1); wins over the flags"]),
    )  # fmt: skip
    parser.set_defaults(**{_DEFAULT_FILES: [str(default_config)] if default_config else [],
                           _POSITIONAL: tuple(positional)})  # fmt: skip
    group = parser.add_argument_group(
        f"options ({schema.__name__}; also as --config keys and key=value)",
        "precedence: defaults < --config FILE < flags < key=value",
    )
    for f in fields:
        flag, hidden = "--" + f.path.replace("_", "-"), "--" + f.path
        # The field's aliases, then its own flag unless another field took that spelling as an alias.
        names = [*alias_map.get(f.path, []), *([flag] if flag not in taken else [])]
        spare = [hidden] if hidden not in (flag, *taken) else []  # --max_steps: works, not listed twice
        if f.section:
            doc = _escape(_plain(f.doc) or f"a YAML file of the {f.path} section")
            for option_strings, help_text in ((names, doc), (spare, argparse.SUPPRESS)):
                if option_strings:
                    group.add_argument(*option_strings, dest=_SECTION + f.path, metavar="FILE", help=help_text)
            continue
        kwargs = _flag_kwargs(f)
        for option_strings, help_text in ((names, _help(f)), (spare, argparse.SUPPRESS)):
            if option_strings:
                group.add_argument(*option_strings, dest=_FLAG + f.path, default=argparse.SUPPRESS, help=help_text,
                                   **kwargs)


def field_dest(path: str) -> str:
    """The namespace attribute of the flag of ``path`` (for a verb's own extra spelling of it)."""
    return _FLAG + path


def config_from_args(
    args: argparse.Namespace,
    schema: type[T],
    extra_overrides: Sequence[str] = (),
    early_overrides: Sequence[str] = (),
) -> T:
    """The validated ``schema`` instance: defaults < --config files < ``early_overrides`` (what the
    command itself implies, e.g. ``train grpo``: algorithm.name=grpo) < section files < flags and
    positional fields < ``key=value`` positionals < ``extra_overrides`` (a verb's old ``--set``)."""
    ns = vars(args)
    files = ns.get(_FILES) or ns.get(_DEFAULT_FILES) or []
    data: dict[str, Any] = {}
    _apply_overrides(data, schema, early_overrides)
    for name, value in ns.items():
        if name.startswith(_SECTION) and value is not None:
            _put(data, name.removeprefix(_SECTION), _read_section(name.removeprefix(_SECTION), value))
    for name, value in ns.items():
        if name.startswith(_FLAG):
            _put(data, name.removeprefix(_FLAG), list(value) if isinstance(value, tuple) else value)
    overrides, words = _split(list(ns.get(_ARGS) or []), schema, ns.get(_POSITIONAL, ()))
    _fill_positional(data, schema, ns.get(_POSITIONAL, ()), words)
    _apply_overrides(data, schema, [*overrides, *extra_overrides])
    where = " + ".join([*map(str, files), "command line"])
    return load_config(schema, files, data=data, where=f"({where})")


def parse_verb_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args`` that also takes ``key=value`` words after flags (``export ckpt -o x a=1``):
    argparse fills a ``*`` positional only once, so later words come back unrecognized."""
    args, extra = parser.parse_known_args(list(argv))
    stray = [a for a in extra if a.startswith("-")]
    if stray or (extra and not isinstance(getattr(args, _ARGS, None), list)):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        getattr(args, _ARGS).extend(extra)
    return args


# --- flags --------------------------------------------------------------------------------------------


def _flag_kwargs(f: ConfigField) -> dict[str, Any]:
    tp, origin = f.type, typing.get_origin(f.type)
    args = typing.get_args(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        kinds = {type(a) for a in args}
        return {"choices": list(args), "type": kinds.pop() if len(kinds) == 1 else str}
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        if origin is tuple and args[-1] is not Ellipsis:
            element = args[0] if len(set(args)) == 1 else _yaml_value
            return {"nargs": len(args), "type": _scalar(element), "metavar": _metavar(element)}
        return {"nargs": "+", "action": "extend", "type": _scalar(args[0]), "metavar": _metavar(args[0])}
    return {"type": _scalar(tp), "metavar": _metavar(tp)}


def _scalar(tp: Any) -> Any:
    tp, _ = unwrap_optional(tp)
    if tp in (int, float, str):
        return tp
    return str if tp is Path else _yaml_value


def _metavar(tp: Any) -> str:
    tp, _ = unwrap_optional(tp)
    return {int: "INT", float: "FLOAT", str: "STR", Path: "PATH"}.get(tp, "YAML")


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not a YAML value: {exc}") from None


_yaml_value.__name__ = "YAML"  # argparse names the type in "invalid YAML value"


def _help(f: ConfigField) -> str:
    if f.default is dataclasses.MISSING:
        suffix = "required"
    elif f.default is None or f.default == "" or f.default == []:
        suffix = ""
    else:
        suffix = f"default: {_show(f.default)}"
    doc = _plain(f.doc)
    text = (doc.rstrip(".") + f" ({suffix})" if doc else suffix) if suffix else doc
    return _escape(text) or " "  # a blank help still lists the flag


def _plain(doc: str) -> str:
    return doc.replace("``", "")  # reST literals read as plain text in a terminal


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    return str(value)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


# --- merging ------------------------------------------------------------------------------------------


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = {**node[last], **value}
    else:
        node[last] = value


def _apply_overrides(data: dict[str, Any], schema: type, items: Sequence[str]) -> None:
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        _put(data, key, _coerce(schema, key, value))


def _read_section(path: str, file: str) -> dict[str, Any]:
    flag = "--" + path.replace("_", "-")
    if not Path(file).expanduser().is_file():
        raise ConfigError(f"{flag} {file}: no such file (a YAML file of the {path} section)")
    return read_yaml_composed(file)


def _split(items: list[str], schema: type, positional: Sequence[str]) -> tuple[list[str], list[str]]:
    """(key=value overrides, plain words for the positional fields)."""
    names = {f.name for f in dataclasses.fields(schema)}
    overrides, words = [], []
    for item in items:
        match = _OVERRIDE.match(item)
        if match and (not positional or match.group(1).replace("-", "_") in names):
            overrides.append(item)
        elif positional:
            words.append(item)
        elif "=" in item:  # e.g. a.b c=1: not a key
            raise ConfigError(f"override {item!r}: the key must be a dotted name, e.g. optim.lr=1e-4")
        else:
            raise ConfigError(f"unexpected argument {item!r}: give options as --flags or key=value")
    return overrides, words


def _fill_positional(data: dict[str, Any], schema: type, positional: Sequence[str], words: list[str]) -> None:
    hints = typing.get_type_hints(schema)
    rest = list(words)
    for name in positional:
        if not rest:
            return
        tp, _ = unwrap_optional(hints[name])
        if typing.get_origin(tp) in (list, tuple, Sequence):
            _put(data, name, rest)
            return
        _put(data, name, rest.pop(0))
    if rest:
        keyed = next((w for w in rest if _OVERRIDE.match(w)), None)
        if keyed is not None:  # a key=value whose key is no field: name it, as for any unknown key
            allowed = ", ".join(f.name for f in dataclasses.fields(schema))
            raise ConfigError(f"unknown key '{keyed.partition('=')[0]}'; allowed keys: {allowed}")
        raise ConfigError(f"unexpected argument(s) {rest}: this command takes {', '.join(positional)} "
                          "and key=value overrides")


def _coerce(schema: type, key: str, text: str) -> Any:
    """The override's value: kept as written for string fields (``camera=0`` stays '0'), else parsed as
    YAML (numbers, booleans, lists, null). An unknown key is left to the validation, which names it
    with the allowed keys (and which knows a class's renamed keys: see simbridge.training.renamed_keys)."""
    cls: Any = schema
    tp: Any = Any
    optional = False
    for part in key.split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            tp, optional = Any, False  # a dict's key, a list's item or an unknown key: as YAML says
            break
        tp, optional = unwrap_optional(hints[part])
        cls = tp
    if optional and text in ("null", "~"):
        return None
    literal = typing.get_args(tp) if typing.get_origin(tp) is Literal else ()
    if tp in (str, Path) or (literal and all(isinstance(a, str) for a in literal)):
        return text
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"key '{key}': {text!r} is not a YAML value ({exc.__class__.__name__})") from None


__all__ = [
    "add_config_arguments",
    "config_from_args",
    "field_dest",
    "parse_verb_args",
]
