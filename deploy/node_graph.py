"""The SimBridge ROS 2 node graph, written once for ``ros2 launch`` and ``simbridge deploy``.

A :class:`Graph` says which nodes run (in start order), which launch arguments exist and how
each argument becomes typed parameters of which nodes. ``launch/sim_eval.launch.py``,
``launch/robot_eval.launch.py`` and ``simbridge deploy`` all call :func:`plan` on the same graph,
so the three cannot drift apart.

Why a second parameter file instead of launch_ros's parameter dicts: launch_ros writes a
``Node``'s dict parameters under ``/**``, and a node's own section of the base parameter file
(``launch/sim.yaml``) beats ``/**`` whatever the order, so launch arguments were silently
ignored. :func:`write_overrides` writes the arguments under each node's own name; a later file's
node section beats an earlier one's, so an argument given on the command line always wins over
the YAML. An argument left empty keeps the parameter file's value.

Cameras come from the bundle's contract (:mod:`simbridge.deploy.graph_cameras`): the robot graph
starts one ``camera_<name>`` node per contract camera (sources from ``camera_sources`` / ``camera`` /
the parameter file), the twin renders the contract's cameras, and the logger records them.

No ROS import here: the plan is plain data, testable without ROS and read by both launchers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simbridge.data.config import ConfigError
from simbridge.deploy.graph_cameras import (
    GraphCameras,
    camera_node,
    graph_cameras,
    parse_camera_sources,
    robot_camera_overrides,
)

#: The repository's launch folder (parameter files, protocols) in a checkout / editable install.
LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
ROS_PACKAGE = "simbridge_ros"


@dataclass(frozen=True)
class Argument:
    """A launch argument (``name:=value``); ``default=None`` makes it required."""

    name: str
    description: str
    default: str | None = ""


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: its name is also its executable and its section in the parameter file."""

    name: str
    #: The node runs only when this launch argument is non-empty (e.g. the orchestrator needs a protocol).
    when: str | None = None
    #: Let the node read the terminal (the operator answers the orchestrator's success prompt).
    tty: bool = False
    #: One node per camera of the run, named ``<name>_<camera>`` (``camera_scene``, ``camera_wrist``).
    per_camera: bool = False


#: (launch arguments, the run's cameras, base parameter file) -> ``{node: {parameter: typed value}}``.
Bind = Callable[[Mapping[str, str], GraphCameras, Path], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Graph:
    name: str
    #: Base parameter file, next to the launch files (``launch/`` or ``share/simbridge_ros/launch``).
    params_file: str
    arguments: tuple[Argument, ...]
    nodes: tuple[NodeSpec, ...]
    #: Launch arguments (strings) -> ``{node: {parameter: typed value}}``; empty arguments are left out.
    bind: Bind = field(repr=False)
    #: Where the cameras come from without a readable bundle: ``(launch argument, (node, parameter))``.
    cameras_from: tuple[str, tuple[str, str]] = ("", ("logger", "cameras"))


@dataclass(frozen=True)
class PlannedNode:
    name: str
    executable: str
    overrides: dict[str, Any]
    tty: bool = False

    def params_files(self, params_file: Path, overrides_file: Path) -> list[Path]:
        """The base file, then the overrides file when this node has overrides (the later file wins)."""
        return [params_file, overrides_file] if self.overrides else [params_file]

    def ros_arguments(self, params_file: Path, overrides_file: Path) -> list[str]:
        """The ROS arguments launch_ros gives this node: its name, then the parameter files in order."""
        files = [a for f in self.params_files(params_file, overrides_file) for a in ("--params-file", str(f))]
        return ["--ros-args", "-r", f"__node:={self.name}", *files]

    def command(self, executable_path: str | Path, params_file: Path, overrides_file: Path) -> list[str]:
        """The command line launch_ros runs for this node (the installed executable + ROS arguments)."""
        return [str(executable_path), *self.ros_arguments(params_file, overrides_file)]


@dataclass(frozen=True)
class Plan:
    graph: str
    params_file: Path
    nodes: tuple[PlannedNode, ...]
    cameras: GraphCameras = field(default_factory=lambda: GraphCameras(()))

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> PlannedNode:
        return next(n for n in self.nodes if n.name == name)


# --- argument -> parameter bindings ---------------------------------------------------------------
def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


def resolve_protocol(value: str, launch_dir: Path) -> str:
    """A protocol file path, or the name of a shipped protocol (``twin_smoke`` -> launch/protocols/...)."""
    if not value or Path(value).expanduser().exists() or "/" in value:
        return value
    shipped = launch_dir / "protocols" / (value if value.endswith(".yaml") else f"{value}.yaml")
    if shipped.is_file():
        return str(shipped)
    names = sorted(p.stem for p in (launch_dir / "protocols").glob("*.yaml"))
    raise ConfigError(f"protocol {value!r} is neither a file nor a shipped protocol ({', '.join(names)})")


def _bind_common(args: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The arguments both graphs share: policy, logging, evaluation, teleop."""
    out: dict[str, dict[str, Any]] = {}

    def put(node: str, key: str, value: Any) -> None:
        out.setdefault(node, {})[key] = value

    if args.get("bundle"):
        put("policy", "bundle", args["bundle"])
    if args.get("trusted_keys"):
        put("policy", "trusted_keys", _words(args["trusted_keys"]))
    if args.get("instruction"):
        put("policy", "instruction", args["instruction"])
        put("logger", "instruction", args["instruction"])
    if args.get("log_dir"):
        put("logger", "store", str(Path(args["log_dir"]) / "episodes.zarr"))
        put("orchestrator", "log_dir", args["log_dir"])
    if args.get("protocol"):
        put("orchestrator", "protocol", args["protocol"])
    if args.get("protocol_set"):
        put("orchestrator", "protocol_overrides", args["protocol_set"].split())
    if args.get("teleop"):
        put("teleop", "device", args["teleop"])
        # With a policy the operator takes over when needed (HIL interventions); the teleop node then
        # is the one commander and forwards the policy's proposals. Without one it drives alone.
        with_policy = bool(args.get("bundle") or args.get("protocol"))
        put("teleop", "mode", "intervention" if with_policy else "teleop")
        if with_policy:
            put("policy", "publish_actions", False)
    return out


def _bind_sim(args: Mapping[str, str], cameras: GraphCameras, params_file: Path) -> dict[str, dict[str, Any]]:
    out = _bind_common(args)
    if args.get("robot_ip"):
        out.setdefault("franka", {})["robot_ip"] = args["robot_ip"]
    if cameras.explicit:  # the `cameras` argument, else the bundle's contract
        out.setdefault("twin", {})["cameras"] = list(cameras.names)
        out.setdefault("logger", {})["cameras"] = list(cameras.names)
    sizes = {cameras.sizes[n] for n in cameras.names if n in cameras.sizes}
    if len(sizes) > 1:
        listed = ", ".join(f"{n} {w}x{h}" for n, (h, w) in cameras.sizes.items())
        raise ConfigError(f"the twin renders every camera at one size, but this run's cameras are {listed} "
                          f"(from {cameras.origin})")
    if sizes:
        out.setdefault("twin", {})["height"], out["twin"]["width"] = sizes.pop()
    return out


def _bind_robot(args: Mapping[str, str], cameras: GraphCameras, params_file: Path) -> dict[str, dict[str, Any]]:
    out = _bind_common(args)
    out.setdefault("franka", {})["robot_ip"] = args["robot_ip"]
    out.update(robot_camera_overrides(args, cameras, params_file))
    if cameras.explicit:
        out.setdefault("logger", {})["cameras"] = list(cameras.names)
    return out


_COMMON_ARGS = (
    Argument("bundle", "policy bundle dir, or an export dir whose `latest` pointer is followed "
             "(default: policy.bundle of the parameter file)"),
    Argument("trusted_keys", "public keys (PEM files, space separated) of trusted exporters: only bundles "
             "signed by one of them run (default: any bundle with valid checksums)"),
    Argument("instruction", "language instruction (default: the parameter file's)"),
    Argument("protocol", "evaluation protocol: a YAML file or a shipped name (twin_smoke, twin_demo, "
             "rl4vla_hardware); empty: no orchestrator, the policy runs until Ctrl-C"),
    Argument("protocol_set", "protocol overrides, space separated KEY=VALUE, e.g. "
             "'policies.sft=runs/demo/latest/bundles/sft policies.ppo=runs/demo/latest/bundles/ppo'"),
    Argument("log_dir", "episodes (<log_dir>/episodes.zarr) and evaluation results (default: the parameter file's)"),
    Argument("teleop", "add a teleop node with this device (keyboard | spacemouse | gamepad)"),
    Argument("params_file", "base parameter file (default: the shipped one next to this launch file)"),
)

SIM_GRAPH = Graph(
    name="sim",
    params_file="sim.yaml",
    arguments=(
        Argument("robot_ip", "franky-sim address; empty: the address the twin node announces"),
        Argument("cameras", "twin cameras to render and log, comma separated (default: the bundle's contract, "
                 "else the parameter file's)"),
        *_COMMON_ARGS,
    ),
    # The twin first: the franka node waits for its announcement before connecting.
    nodes=(NodeSpec("twin"), NodeSpec("franka"), NodeSpec("policy"), NodeSpec("teleop", when="teleop"),
           NodeSpec("logger"), NodeSpec("orchestrator", when="protocol")),
    bind=_bind_sim,
    cameras_from=("cameras", ("twin", "cameras")),
)

ROBOT_GRAPH = Graph(
    name="robot",
    params_file="robot.yaml",
    arguments=(
        # Required, no default: a default address could name someone else's arm.
        Argument("robot_ip", "the FR3's FCI address (required)", default=None),
        Argument("camera", "source of the (first) camera: device index, video file or URL "
                 "(default: the parameter file's camera_<name>.source)"),
        Argument("camera_sources", "a source per camera of the bundle's contract, space separated NAME=SOURCE, "
                 "e.g. 'scene=0 wrist=/dev/video4' (a camera node each: camera_scene, camera_wrist)"),
        *_COMMON_ARGS,
    ),
    nodes=(NodeSpec("camera", per_camera=True), NodeSpec("franka"), NodeSpec("policy"), NodeSpec("teleop", when="teleop"),
           NodeSpec("logger"), NodeSpec("orchestrator", when="protocol", tty=True)),
    bind=_bind_robot,
    cameras_from=("camera_sources", ("logger", "cameras")),
)

GRAPHS = {g.name: g for g in (SIM_GRAPH, ROBOT_GRAPH)}


# --- planning ----------------------------------------------------------------------------------------
def plan(graph: Graph, args: Mapping[str, str], launch_dir: Path = LAUNCH_DIR,
         without: frozenset[str] | set[str] = frozenset()) -> Plan:
    """The nodes to start for these launch arguments, each with its typed parameter overrides.

    ``args`` are the launch arguments as strings (missing ones take their defaults); ``without``
    drops optional nodes (``simbridge deploy --no-logger``). Raises ConfigError naming the argument."""
    known = {a.name for a in graph.arguments}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"{graph.name} graph: unknown launch argument(s) {unknown}; known: {sorted(known)}")
    values = {a.name: str(args.get(a.name, a.default if a.default is not None else "")) for a in graph.arguments}
    missing = [a.name for a in graph.arguments if a.default is None and not values[a.name]]
    if missing:
        name = missing[0]
        raise ConfigError(f"{name} is required ({next(a.description for a in graph.arguments if a.name == name)}): "
                          f"{name}:=<value> with ros2 launch, --{name.replace('_', '-')} with simbridge deploy")
    values["protocol"] = resolve_protocol(values.get("protocol", ""), launch_dir)
    params_file = Path(values["params_file"]).expanduser() if values.get("params_file") else (
        launch_dir / graph.params_file)
    if not params_file.is_file():
        raise ConfigError(f"parameter file {params_file} does not exist (params_file:=...)")
    cameras = _cameras(graph, values, params_file)
    overrides = graph.bind(values, cameras, params_file)
    nodes = tuple(
        PlannedNode(name, spec.name, overrides.get(name, {}), spec.tty)
        for spec in graph.nodes
        if (spec.when is None or values.get(spec.when)) and spec.name not in without
        for name in ([camera_node(c) for c in cameras.names] if spec.per_camera else [spec.name])
    )
    return Plan(graph.name, params_file, nodes, cameras)


def _cameras(graph: Graph, values: Mapping[str, str], params_file: Path) -> GraphCameras:
    argument, default = graph.cameras_from
    text = values.get(argument, "")
    named = list(parse_camera_sources(text)) if argument == "camera_sources" else _words(text)
    # The twin renders what `cameras` names (sizes still from the contract); on the robot the contract
    # decides and `camera_sources` must name its cameras.
    return graph_cameras(values, params_file, named=named, default=default, prefer_named=graph.name == "sim")


def overrides_yaml(nodes: tuple[PlannedNode, ...] | list[PlannedNode]) -> str:
    """A ROS 2 parameter file with one section per node name (never ``/**``: see the module docstring)."""
    data = {n.name: {"ros__parameters": dict(n.overrides)} for n in nodes if n.overrides}
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False)


class _NoAliasDumper(yaml.SafeDumper):
    """rcl's parameter-file parser knows no YAML anchors: write a list shared by two nodes twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_overrides(nodes: tuple[PlannedNode, ...] | list[PlannedNode], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(overrides_yaml(nodes))
    return path
