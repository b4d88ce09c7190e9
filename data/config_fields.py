"""The fields of a config dataclass as a command line sees them, nested ones by dotted path.

:func:`config_fields` lists them depth first with their type (``None`` taken out of an
optional), default (a nested field's from its section's default instance) and documentation,
which :func:`field_docs` reads from the ``#:`` comments above a field (or after it on its line)
or the string literal below it. :mod:`simbridge.data.cli_config` builds flags and help from
these; nothing here parses a command line.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One field of a config dataclass, nested ones with their dotted path."""

    path: str
    #: The type with ``None`` taken out of an optional (``int | None`` -> int).
    type: Any
    optional: bool
    #: The default (from the enclosing default instance for nested fields); MISSING if required.
    default: Any
    doc: str
    #: A nested config dataclass (its own fields follow it in :func:`config_fields`).
    section: bool


def config_fields(schema: type, prefix: str = "", default_obj: Any = None) -> list[ConfigField]:
    """The fields of ``schema``, depth first: a nested section, then its fields."""
    hints = typing.get_type_hints(schema)
    docs = field_docs(schema)
    out: list[ConfigField] = []
    for f in dataclasses.fields(schema):
        tp, optional = unwrap_optional(hints[f.name])
        default = _default(f, default_obj)
        path = prefix + f.name
        section = dataclasses.is_dataclass(tp)
        out.append(ConfigField(path, tp, optional, default, docs.get(f.name, ""), section))
        if section:
            inner = default if dataclasses.is_dataclass(default) else None
            out += config_fields(tp, path + ".", inner)
    return out


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """Field name -> its documentation: the ``#:`` comment lines above it (or ``#:`` after it on
    the same line) or the string literal right below it; base classes' docs are inherited."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        for i, node in enumerate(body.body):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            comment: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            _, hashcolon, trailing = lines[node.lineno - 1].partition("#:")
            after = body.body[i + 1] if i + 1 < len(body.body) else None
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                comment.append(inspect.cleandoc(after.value.value))
            elif hashcolon:
                comment.append(trailing.strip())
            if comment:
                docs[node.target.id] = " ".join(" ".join(comment).split())
    return docs


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) < len(typing.get_args(tp)):
            return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def _default(f: dataclasses.Field, default_obj: Any) -> Any:
    if default_obj is not None:
        return getattr(default_obj, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


__all__ = ["ConfigField", "config_fields", "field_docs", "unwrap_optional"]
