"""Renamed config keys: an old spelling still loads, moved to its new place with a FutureWarning.

A config dataclass declares its renames with :func:`renamed_keys`; the loader
(:func:`simbridge.data.config.load_config`, through pydantic) moves them before validation, so old
YAML files and ``key=value`` overrides keep working while the resolved ``config.yaml`` a run
writes holds only the new keys::

    @config
    class SFTConfig:
        root: str = "runs"
        _renamed = renamed_keys({"run_root": "root"})

A key given in both spellings takes the old spelling's value, and the warning says so: the old
key is then almost always the more specific one, a ``key=value`` override (or a file's own
``defaults:`` child) on top of a shipped config that already uses the new key.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import model_validator

#: old key -> new dotted path (relative to the class), or (new path, converter of the old value)
Moves = Mapping[str, "str | tuple[str, Callable[[Any], Any]]"]


def move_renamed(data: Any, moves: Moves, where: str = "") -> Any:
    """A copy of the mapping ``data`` with the old keys of ``moves`` moved to their new paths.

    ``where`` prefixes the key names in messages (e.g. ``"env."`` for a nested section).
    """
    if not isinstance(data, Mapping) or not any(old in data for old in moves):
        return data
    data = dict(data)
    for old, target in moves.items():
        if old not in data:
            continue
        new, convert = (target, None) if isinstance(target, str) else target
        value = data.pop(old)
        if convert is not None:
            value = convert(value)
        *parents, leaf = new.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if child is not None and not isinstance(child, Mapping):
                raise ValueError(f"{part}: a section of keys (it holds '{leaf}'), got {child!r}")
            node[part] = dict(child or {})
            node = node[part]
        note = f" (its value {value!r} replaces {node[leaf]!r})" if leaf in node and node[leaf] != value else ""
        warnings.warn(f"config key '{where}{old}' is deprecated; it is now '{where}{new}'{note}", FutureWarning,
                      stacklevel=2)  # fmt: skip
        node[leaf] = value
    return data


def renamed_keys(moves: Moves, where: str = "") -> Any:
    """A class attribute that makes the config loader accept the old keys of ``moves``."""

    def move(cls: type, data: Any) -> Any:
        return move_renamed(data, moves, where)

    return model_validator(mode="before")(classmethod(move))


def square(size: Any) -> Any:
    """Converter for an old single-number ``camera_size`` (a square image) to ``[height, width]``."""
    return [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
