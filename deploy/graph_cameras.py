"""Which cameras a node graph runs: the bundles' contract first, else the launch arguments / parameter file.

A policy trained with a scene and a wrist camera needs both on the robot. :func:`graph_cameras`
reads the contract of every bundle the run loads (``bundle``, and the policies of the evaluation
protocol with its ``protocol_set`` overrides) with the bundle reader of
:mod:`simbridge.deploy.bundle` (the manifest's structure; checksums and signatures are the policy
node's and ``simbridge deploy``'s preflight's job): no torch, no onnxruntime. The robot graph then
starts one camera node per contract camera (``camera_<name>``, executable ``camera``, publishing
``/simbridge/camera/<name>/...``) at the contract's size, the twin renders the same cameras, the
logger records them, and the policy node subscribes to them (it reads the same manifest).

Without a readable bundle (none given, a ``ws://`` policy server, a path that does not exist yet)
the cameras are the ones named by ``camera_sources`` (robot) / ``cameras`` (sim), else the
parameter file's (``logger.cameras`` / ``twin.cameras``); the reason is kept for the launch log.
A bundle that cannot be read is not refused here: the policy node (and ``simbridge deploy``'s
preflight) refuses it with the reason.

Each robot camera's source (device index, video file, URL, ``realsense``) comes from
``camera_sources:="scene=0 wrist=/dev/video4"``, from ``camera:=X`` (the first camera), or from the
parameter file's ``camera_<name>`` section (``source``, or a RealSense ``serial``); a camera with
none is a one-line :class:`ConfigError` naming the camera and the argument to set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simbridge.data.config import ConfigError
from simbridge.data.spec import CameraSpec
from simbridge.deploy.ros_params import node_parameters, nodes_in

#: Prefix of a camera node's name: ``camera_scene`` runs the ``camera`` executable for camera ``scene``.
CAMERA_NODE = "camera"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def camera_node(name: str) -> str:
    """The node that publishes camera ``name`` on the robot (``camera_<name>``)."""
    return f"{CAMERA_NODE}_{name}"


def executable_of(node: str) -> str:
    """The executable behind a node name of the graphs (``camera_wrist`` -> ``camera``)."""
    return CAMERA_NODE if node.startswith(f"{CAMERA_NODE}_") else node


@dataclass(frozen=True)
class GraphCameras:
    """The cameras of a run, in order, and where they came from (said in the launch log)."""

    names: tuple[str, ...]
    #: ``name -> (height, width)`` from the contract; empty when the names came from elsewhere.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    origin: str = ""
    #: True when the names come from the contract or a launch argument, not the parameter file.
    explicit: bool = False


def parse_camera_sources(text: str) -> dict[str, str]:
    """``"scene=0 wrist=/dev/video4"`` -> ``{"scene": "0", "wrist": "/dev/video4"}`` (strings, in order)."""
    out: dict[str, str] = {}
    for item in text.split():
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise ConfigError(f"camera_sources: {item!r} must look like NAME=SOURCE, e.g. "
                              "camera_sources:=\"scene=0 wrist=/dev/video4\"")
        if name in out:
            raise ConfigError(f"camera_sources names camera {name!r} twice")
        out[_checked_name(name, "camera_sources")] = source
    return out


def _checked_name(name: str, where: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: camera name {name!r} must be letters, digits and '_' (it names a ROS node)")
    return name


def bundle_paths(values: Mapping[str, str]) -> list[str]:
    """The bundles this run loads: ``bundle`` and the protocol's policies (``protocol_set`` applied)."""
    paths = [values["bundle"]] if values.get("bundle") else []
    policies: dict[str, str] = {}
    if values.get("protocol"):
        try:
            data = yaml.safe_load(Path(values["protocol"]).expanduser().read_text()) or {}
        except (OSError, yaml.YAMLError):
            data = {}  # the orchestrator reports a bad protocol file with the reason
        if isinstance(data, dict) and isinstance(data.get("policies"), dict):
            policies = {str(k): str(v) for k, v in data["policies"].items()}
    for item in values.get("protocol_set", "").split():
        key, sep, value = item.partition("=")
        if sep and key.startswith("policies."):
            policies[key.removeprefix("policies.")] = value
    return [*paths, *(p for p in policies.values() if p not in paths)]


def read_contract_cameras(path: str) -> tuple[CameraSpec, ...]:
    """The contract cameras of the bundle at ``path`` (an export dir's ``latest`` is followed).
    Raises BundleError naming the problem."""
    from simbridge.deploy.bundle import read_manifest, resolve_bundle
    from simbridge.deploy.manifest_validation import validate_manifest

    bundle = resolve_bundle(Path(path).expanduser())
    return validate_manifest(read_manifest(bundle), where=str(bundle)).observation.cameras


def contract_cameras(paths: list[str]) -> tuple[list[CameraSpec], list[str]]:
    """The union of these bundles' contract cameras (first appearance first) and why any were skipped.
    ConfigError when two bundles want one camera at different sizes: one camera node cannot serve both."""
    from simbridge.deploy.bundle import BundleError

    cameras: dict[str, tuple[CameraSpec, str]] = {}
    skipped: list[str] = []
    for path in paths:
        if "://" in path:
            skipped.append(f"{path} is a policy server (its contract is known only once it runs)")
            continue
        try:
            specs = read_contract_cameras(path)
        except BundleError as err:
            skipped.append(str(err))
            continue
        for cam in specs:
            seen = cameras.setdefault(cam.name, (cam, path))
            if (seen[0].height, seen[0].width) != (cam.height, cam.width):
                raise ConfigError(
                    f"camera {cam.name!r} is {seen[0].width}x{seen[0].height} in bundle {seen[1]} but "
                    f"{cam.width}x{cam.height} in bundle {path}: one camera node cannot serve both; "
                    "compare bundles exported for the same cameras")
    return [c for c, _ in cameras.values()], skipped


def graph_cameras(values: Mapping[str, str], params_file: Path, *, named: list[str],
                  default: tuple[str, str], prefer_named: bool = False) -> GraphCameras:
    """The run's cameras: the bundles' contract, else ``named`` (from a launch argument), else the
    parameter file's ``default`` (node, parameter) list. ``prefer_named``: ``named`` before the
    contract (the sizes still come from it)."""
    specs, skipped = contract_cameras(bundle_paths(values))
    why = f" ({'; '.join(skipped)})" if skipped else ""
    if named and prefer_named:
        sizes = {c.name: (c.height, c.width) for c in specs if c.name in named}
        return GraphCameras(tuple(_checked_name(n, "cameras") for n in named), sizes, "the launch arguments", True)
    if specs:
        return GraphCameras(tuple(_checked_name(c.name, "contract") for c in specs),
                            {c.name: (c.height, c.width) for c in specs}, f"the bundle's contract{why}", True)
    if named:
        return GraphCameras(tuple(named), {}, f"the launch arguments{why}", True)
    node, key = default
    names = node_parameters(params_file, node).get(key) or ["scene"]
    return GraphCameras(tuple(_checked_name(str(n), f"{node}.{key}") for n in names), {},
                        f"{params_file.name} ({node}.{key}){why}")


def robot_camera_overrides(values: Mapping[str, str], cameras: GraphCameras,
                           params_file: Path) -> dict[str, dict[str, Any]]:
    """``{camera_<name>: {name, source, width, height}}`` for the robot graph's camera nodes; ConfigError
    for a camera without a source, a source for a camera the run does not have, or an old ``camera`` section."""
    if CAMERA_NODE in nodes_in(params_file):
        raise ConfigError(
            f"{params_file} has a '{CAMERA_NODE}' section, but camera nodes are now one per camera of the "
            f"bundle's contract, named {camera_node('<name>')}: rename it to {camera_node(cameras.names[0])} "
            "(see launch/robot.yaml)")
    sources = parse_camera_sources(values.get("camera_sources", ""))
    unknown = [n for n in sources if n not in cameras.names]
    if unknown:
        raise ConfigError(f"camera_sources names {unknown}, but this run's cameras are {list(cameras.names)} "
                          f"(from {cameras.origin})")
    if values.get("camera"):
        first = cameras.names[0]
        if first in sources:
            raise ConfigError(f"camera:= and camera_sources:= both set camera {first!r}; use one of them")
        sources[first] = values["camera"]
    out: dict[str, dict[str, Any]] = {}
    for name in cameras.names:
        node = camera_node(name)
        params: dict[str, Any] = {"name": name}
        configured = node_parameters(params_file, node)
        if name in sources:
            params["source"] = sources[name]  # a device index stays a string ("0")
        elif not (configured.get("source") or configured.get("serial")):
            raise ConfigError(
                f"camera {name!r} (from {cameras.origin.split(' (')[0]}) has no source: set "
                f"camera_sources:=\"{name}=<device index | video file | URL | realsense>\" "
                f"(--camera-sources {name}=... with simbridge deploy) or {node}.source in {params_file.name}")
        if name in cameras.sizes:
            params["height"], params["width"] = cameras.sizes[name]
        out[node] = params
    return out
