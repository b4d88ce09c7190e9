"""ROS 2 parameter files (``launch/robot.yaml``, ``launch/sim.yaml``) read without ROS.

The same YAML files feed ``ros2 launch`` (launch_ros passes them to each node) and
``simbridge deploy`` (which builds all nodes in one process): :func:`node_parameters` merges the
``/**`` wildcard section with the node's own section exactly as rcl does, then applies
``key=value`` overrides (values parsed as YAML, so ``seed=3`` is an int and ``enabled=false`` a bool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from simbridge.data.config import ConfigError

#: Where the shipped parameter files live (repository checkout / editable install).
LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def read_parameter_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{node_name: {param: value}}`` from a ROS 2 parameter file; ConfigError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"parameter file {path} does not exist; use launch/robot.yaml or launch/sim.yaml as a template"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    out: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            raise ConfigError(
                f"{path}: section {node!r} must contain 'ros__parameters:' (ROS 2 parameter file format)"
            )
        params = section["ros__parameters"] or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{path}: {node}.ros__parameters must be a mapping")
        out[str(node).lstrip("/") or "**"] = dict(params)
    return out


def node_parameters(
    path: str | Path, node: str, overrides: Mapping[str, Any] | Sequence[str] = ()
) -> dict[str, Any]:
    """Parameters of ``node``: wildcard ``/**`` first, then the node's section, then ``overrides``."""
    sections = read_parameter_file(path)
    params = {**sections.get("**", {}), **sections.get(node, {})}
    if isinstance(overrides, Mapping):
        params.update(overrides)
    else:
        params.update(parse_overrides(overrides))
    return params


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def nodes_in(path: str | Path) -> list[str]:
    return [n for n in read_parameter_file(path) if n != "**"]
