"""Typed, validated configuration: YAML files composed into dataclasses.

Every configurable thing in SimBridge is a dataclass decorated with :func:`config`. A run's
configuration is built from

1. the dataclass defaults,
2. one or more YAML files (a file may list others under ``defaults:``; those are merged
   first, in order, paths relative to the file, like Hydra's defaults list), and
3. ``key.sub=value`` overrides from the command line (OmegaConf dotlist syntax),

then validated once, at load time, by pydantic against the dataclass: a wrong key, type or
value raises :class:`ConfigError` naming the key, the bad value and what is allowed.

    >>> @config
    ... class Optim:
    ...     lr: float = 1e-4
    ...     kind: Literal["adam", "sgd"] = "adam"
    >>> load_config(Optim, overrides=["lr=3e-4"])
    Optim(lr=0.0003, kind='adam')
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")

_PYDANTIC_CONFIG = ConfigDict(extra="forbid", validate_default=True)


class ConfigError(ValueError):
    """A configuration could not be loaded; the message says which key and how to fix it."""


def config(cls: type[T] | None = None, **dataclass_kwargs: Any):
    """Decorator: a dataclass that rejects unknown keys and validates types at load time.

    Use ``__post_init__`` for value checks: raise ``ValueError("<field>: <what is allowed>")``;
    the loader reports it as ``key '<path>.<field>': bad value ...: <what is allowed>``.
    """

    def wrap(c: type[T]) -> type[T]:
        dc = dataclasses.dataclass(**dataclass_kwargs)(c)
        dc.__pydantic_config__ = _PYDANTIC_CONFIG  # type: ignore[attr-defined]
        return dc

    return wrap(cls) if cls is not None else wrap


def read_yaml_composed(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict:
    """Read ``path``; files under its ``defaults:`` list are merged first (recursively)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file (see launch/configs/)")
    if path in _stack:
        chain = " -> ".join(str(p.name) for p in (*_stack, path))
        raise ConfigError(f"config defaults form a cycle: {chain}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values at the top level, got {type(raw).__name__}")
    defaults = raw.pop("defaults", []) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    merged = OmegaConf.create({})
    for entry in defaults:
        if not isinstance(entry, str):
            raise ConfigError(f"{path}: entries of 'defaults' must be relative file paths, got {entry!r}")
        child = path.parent / (entry if entry.endswith((".yaml", ".yml")) else entry + ".yaml")
        merged = OmegaConf.merge(merged, read_yaml_composed(child, (*_stack, path)))
    merged = OmegaConf.merge(merged, OmegaConf.create(raw))
    return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]


def load_config(
    schema: type[T],
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> T:
    """Build a validated ``schema`` instance from YAML file(s), a mapping and overrides.

    ``where`` names the source in error messages (default: the files, or ``<defaults>``)."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    where = where or ", ".join(str(p) for p in paths) or "<defaults>"
    try:
        merged = OmegaConf.create({})
        for p in paths:
            merged = OmegaConf.merge(merged, read_yaml_composed(p))
        if data:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(data)))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override(s) {bad} must look like key.sub=value")
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        plain = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config {where}: {exc}") from exc
    return validate_config(schema, plain, where)


def validate_config(schema: type[T], values: Any, where: str = "<config>") -> T:
    """Validate a plain mapping against ``schema``; raise :class:`ConfigError` on problems."""
    try:
        return TypeAdapter(schema).validate_python(values)
    except ValidationError as exc:
        raise ConfigError(_explain(schema, exc, where)) from None


def to_dict(cfg: Any) -> dict:
    """A config dataclass as a plain (YAML-serialisable) dict."""
    return _plain(dataclasses.asdict(cfg))


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _explain(schema: type, exc: ValidationError, where: str) -> str:
    # One problem is one line (a command line's error); several are listed one per line.
    problems = [_problem(schema, err) for err in exc.errors()]
    head = f"invalid config {where} for {schema.__name__}"
    if len(problems) == 1:
        return f"{head}: {problems[0]}"
    return "\n".join([f"{head} ({len(problems)} problem(s)):", *(f"  - {p}" for p in problems)])


def _problem(schema: type, err: Any) -> str:
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper())]
    key = ".".join(loc) or "<top level>"
    value = err.get("input")
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed_keys(schema, loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    msg = err["msg"].removeprefix("Value error, ")
    field_name, _, rest = msg.partition(": ")
    # A __post_init__ message "<field>: <what is allowed>" is about that field, also when it was not given.
    if rest and isinstance(value, Mapping) and (field_name in value or field_name in _allowed_keys(schema, loc)):
        key = f"{key}.{field_name}" if loc else field_name
        if field_name not in value:
            return f"key '{key}': {rest}"
        value, msg = value[field_name], rest
    return f"key '{key}': bad value {value!r}: {msg}"


def _allowed_keys(schema: type, loc: list[str]) -> list[str]:
    cls: Any = schema
    for part in loc:
        if not dataclasses.is_dataclass(cls):
            return []
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return []
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return []
