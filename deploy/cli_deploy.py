"""``simbridge deploy [--sim]``: the ROS 2 nodes in one process, for pip-only users without ``ros2 launch``.

Runs the same node graph as ``launch/robot_eval.launch.py`` (camera, franka, policy, logger and,
with ``--protocol``, the evaluation orchestrator) or ``launch/sim_eval.launch.py`` (``--sim``: the
franky-sim twin instead of the camera and a real arm): :mod:`simbridge.deploy.node_graph` plans
both, from the same parameter files. The launch arguments are the fields of :class:`DeployConfig`
(``--config FILE``, one flag each, ``key=value``); ``--set node.key=value`` overrides a node's ROS
parameter::

    simbridge deploy --sim --bundle runs/export/sft/latest --instruction "put the red cube on the green target"
    simbridge deploy --robot-ip 172.16.0.2 --camera 0 --bundle runs/export/ppo/latest --protocol rl4vla_hardware
    simbridge deploy --sim --set policy.chunk_mode=ensemble --duration 60

The node classes come from the ``simbridge_ros`` package: the installed one when colcon built
and sourced it, otherwise the source tree ``ros2_ws/src/simbridge_ros`` of this checkout (put
on ``sys.path`` here). rclpy is imported only when the verb runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import ConfigError, config
from simbridge.deploy.node_graph import GRAPHS, Plan, plan
from simbridge.deploy.ros_params import node_parameters, parse_overrides

ROS_PACKAGE_SRC = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "simbridge_ros"


def ensure_ros_package() -> None:
    """Make ``import simbridge_ros`` work: installed package first, else this checkout's source."""
    if importlib.util.find_spec("simbridge_ros") is None:
        if not (ROS_PACKAGE_SRC / "simbridge_ros" / "__init__.py").is_file():
            raise ConfigError(f"the simbridge_ros package is neither installed nor at {ROS_PACKAGE_SRC}")
        sys.path.insert(0, str(ROS_PACKAGE_SRC))


def ros_package_installed() -> bool:
    """An installed simbridge_ros (colcon), not this checkout's source tree put on sys.path by
    :func:`ensure_ros_package`; node processes need that tree on their PYTHONPATH."""
    spec = importlib.util.find_spec("simbridge_ros")
    return spec is not None and not str(spec.origin or "").startswith(str(ROS_PACKAGE_SRC))


@config
class DeployConfig:
    """``simbridge deploy``'s options; each but the last three is a launch argument of the node graph."""

    #: Run against the embedded franky-sim twin (no robot): the sim graph and launch/sim.yaml.
    sim: bool = False
    #: ROS 2 parameter file (default: launch/sim.yaml with --sim, else launch/robot.yaml).
    params: Path | None = None
    #: The FR3's address (franka.robot_ip; required on the robot).
    robot_ip: str = ""
    #: Source (device index, video file or URL) of the first camera (with --sim: the twin's cameras).
    camera: str = ""
    #: A source per camera of the bundle's contract, NAME=SOURCE (e.g. scene=0 wrist=/dev/video4).
    camera_sources: list[str] = field(default_factory=list)
    #: Policy bundle directory, or an export directory with a 'latest' pointer.
    bundle: str = ""
    #: Public keys (PEM) of trusted exporters: only bundles signed by one of them run.
    trusted_keys: list[str] = field(default_factory=list)
    #: Language instruction (changeable at run time).
    instruction: str = ""
    #: Evaluation protocol (a YAML file or a name in launch/protocols): runs the orchestrator.
    protocol: str = ""
    #: Episode store and evaluation results go here.
    log_dir: str = ""
    #: Protocol field overrides, e.g. policies.sft=runs/export/sft/latest.
    protocol_set: list[str] = field(default_factory=list)
    #: Record episodes (the logger node).
    logger: bool = True
    #: Add a teleop node (keyboard | spacemouse | gamepad): with a bundle the operator can take over
    #: (HIL interventions, recorded per step), without one it drives the arm alone.
    teleop: str = ""
    #: Stop after this many seconds (0: until Ctrl-C).
    duration: float = 0.0
    #: One process per node with the command lines ros2 launch uses (franky-sim then has an
    #: interpreter of its own); any node exiting stops them all, with the reason.
    processes: bool = False

    def __post_init__(self) -> None:
        if self.duration < 0:
            raise ValueError("duration: seconds >= 0 (0: until Ctrl-C)")


CONFIG = DeployConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DeployConfig, aliases={"trusted_keys": "--trusted-key"})
    # Node parameters are a ROS concept, not a DeployConfig field: they keep ROS's node.key=value.
    parser.add_argument(
        "--set",
        dest="node_sets",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override one node parameter, e.g. policy.chunk_mode=ensemble (repeatable)",
    )


def plan_deploy(cfg: DeployConfig, node_sets: Sequence[str] = ()) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """The node graph's plan for these options (they are its launch arguments), plus ``--set`` overrides."""
    graph = GRAPHS["sim" if cfg.sim else "robot"]
    launch_args = {
        "robot_ip": cfg.robot_ip, "bundle": cfg.bundle, "instruction": cfg.instruction,
        "protocol": cfg.protocol, "log_dir": cfg.log_dir, "teleop": cfg.teleop,
        "protocol_set": " ".join(cfg.protocol_set),
        "trusted_keys": " ".join(cfg.trusted_keys),
        "params_file": str(cfg.params) if cfg.params else "",
        ("cameras" if cfg.sim else "camera"): cfg.camera,
        "camera_sources": " ".join(cfg.camera_sources),
    }
    planned = plan(graph, {k: v for k, v in launch_args.items() if v},
                   without=set() if cfg.logger else {"logger"})
    extra: dict[str, dict[str, Any]] = {}
    for node_key, value in parse_overrides(node_sets).items():
        node, dot, key = node_key.partition(".")
        if not dot:
            raise ConfigError(f"--set {node_key}=...: name the node, e.g. policy.{node_key}=...")
        extra.setdefault(node, {})[key] = value
    return planned, extra


def plan_from_args(args: argparse.Namespace) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """:func:`plan_deploy` for a parsed command line."""
    return plan_deploy(config_from_args(args, DeployConfig), args.node_sets)


def check_bundles(planned: Plan, extra: dict[str, dict[str, Any]]) -> list[str]:
    """Verify every bundle this run would load (the policy's, the protocol's) before any node starts:
    a refused bundle is one line and exit 1, not a traceback after the arm connected.
    Returns the bundles checked."""
    from simbridge.deploy.bundle import BundleError, check_bundle
    from simbridge.deploy.remote_policy import RemotePolicy, is_server_url

    names = planned.names
    policy = node_parameters(planned.params_file, "policy",
                             {**planned.node("policy").overrides, **extra.get("policy", {})}) if "policy" in names else {}
    keys = [k for k in policy.get("trusted_keys", []) if k]
    bundles = [policy["bundle"]] if policy.get("bundle") else []
    if "orchestrator" in names:
        ensure_ros_package()
        from simbridge_ros.protocol import load_protocol

        orchestrator = {**planned.node("orchestrator").overrides, **extra.get("orchestrator", {})}
        protocol = load_protocol(orchestrator["protocol"], [o for o in orchestrator.get("protocol_overrides", []) if o])
        bundles += list(protocol.policies.values())
    for bundle in bundles:
        if is_server_url(bundle):  # a policy server: it must answer the handshake now
            if keys:
                raise BundleError(f"{bundle} is a policy server: trusted_keys verify signed bundles only; "
                                  "deploy a signed bundle, or drop trusted_keys to use the server")
            RemotePolicy(bundle).close()
        else:
            check_bundle(bundle, trusted_keys=keys)
    return bundles


def build_nodes(planned: Plan, extra: dict[str, dict[str, Any]] | None = None, context=None) -> list:
    """Construct the planned nodes, in order, with the base file's parameters, the plan's overrides
    (the launch arguments) and ``extra`` (``--set``) on top."""
    ensure_ros_package()
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter
    from simbridge_ros.camera import CameraNode
    from simbridge_ros.franka import FrankaNode
    from simbridge_ros.logger import LoggerNode
    from simbridge_ros.orchestrator import OrchestratorNode
    from simbridge_ros.policy import PolicyNode
    from simbridge_ros.teleop import TeleopNode
    from simbridge_ros.twin import TwinNode

    classes = {
        "twin": TwinNode,
        "camera": CameraNode,
        "franka": FrankaNode,
        "policy": PolicyNode,
        "logger": LoggerNode,
        "orchestrator": OrchestratorNode,
        "teleop": TeleopNode,
    }
    nodes = []
    try:
        for planned_node in planned.nodes:
            name = planned_node.name
            params = node_parameters(planned.params_file, name,
                                     {**planned_node.overrides, **(extra or {}).get(name, {})})
            if name == "franka" and not params.get("robot_ip") and nodes and isinstance(nodes[0], TwinNode):
                params["robot_ip"] = nodes[0].hostname  # in one process the twin is up already
            try:
                nodes.append(
                    classes[planned_node.executable](
                        name=name,
                        context=context,
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                    )
                )
            except ParameterException as err:  # e.g. source=0 (int) for a string parameter
                raise ConfigError(
                    f"node {name!r}: {err}; check the value's type in {planned.params_file} or --set "
                    f"(quote strings: {name}.key='\"0\"', write floats with a dot: 10.0)"
                ) from None
    except BaseException:
        close_nodes(nodes)
        raise
    return nodes


def close_nodes(nodes: list) -> None:
    """Close in reverse start order: stop the arm before the twin/robot goes away."""
    from simbridge_ros.common import close_node

    for node in reversed(nodes):
        try:
            close_node(node)
        finally:
            node.destroy_node()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, DeployConfig)
    if cfg.processes:
        return run_processes(cfg, args.node_sets)
    ensure_ros_package()
    import rclpy
    from rclpy.context import Context
    from simbridge_ros.common import spin_nodes

    planned, extra = plan_deploy(cfg, args.node_sets)
    if not preflight(planned, extra):
        return 1
    context = Context()
    rclpy.init(context=context)
    nodes: list = []
    try:
        nodes = build_nodes(planned, extra, context)
        print(f"simbridge deploy: running {', '.join(planned.names)} ({planned.params_file}); "
              "Ctrl-C stops the arm and exits")
        orchestrator = next((n for n in nodes if n.get_name() == "orchestrator"), None)
        deadline = time.monotonic() + cfg.duration if cfg.duration > 0 else float("inf")

        def should_stop() -> bool:
            return time.monotonic() > deadline or (orchestrator is not None and orchestrator.done.is_set())

        spin_nodes(nodes, context=context, should_stop=should_stop)
        if orchestrator is not None and orchestrator.error:
            print(f"simbridge deploy: evaluation failed: {orchestrator.error}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("simbridge deploy: interrupted; stopping the arm")
    finally:
        close_nodes(nodes)
        context.try_shutdown()
    return 0


def run_processes(cfg: DeployConfig, node_sets: Sequence[str] = ()) -> int:
    """The graph as one process per node (like ``ros2 launch``); exit 1 unless the protocol finished."""
    import tempfile

    from simbridge.deploy.supervisor import NodeProcesses

    planned, extra = plan_deploy(cfg, node_sets)
    if not preflight(planned, extra):
        return 1
    # Not find_spec alone: preflight read the protocol, which put the source tree on this process's path.
    source = None if ros_package_installed() else ROS_PACKAGE_SRC
    with tempfile.TemporaryDirectory(prefix="simbridge_deploy_") as tmp:
        graph = NodeProcesses(planned, Path(tmp), extra, ros_package_src=source)
        print(f"simbridge deploy: starting {', '.join(planned.names)} as processes ({planned.params_file}, "
              f"launch arguments in {graph.overrides_file}); Ctrl-C stops the arm and exits", flush=True)
        try:
            graph.start()
            outcome = graph.wait(cfg.duration if cfg.duration > 0 else None)
        except KeyboardInterrupt:
            print("simbridge deploy: interrupted; stopping the arm", flush=True)
            outcome = None
        finally:
            graph.stop()
    if outcome is None:
        return 0
    print(f"simbridge deploy: {outcome.reason}; stopped the other nodes", file=sys.stderr if not outcome.ok
          else sys.stdout, flush=True)
    finished_without_protocol = outcome.returncode == 0 and "orchestrator" not in planned.names
    return 0 if outcome.ok or finished_without_protocol else 1


def preflight(planned: Plan, extra: dict[str, dict[str, Any]]) -> bool:
    """check_bundles with the refusal as one line on stderr (False: do not start anything)."""
    from simbridge.deploy.bundle import BundleError
    from simbridge.deploy.remote_policy import PolicyServerError

    try:
        check_bundles(planned, extra)
    except (BundleError, PolicyServerError) as err:
        print(f"simbridge deploy: refused bundle: {err}", file=sys.stderr)
        return False
    return True
