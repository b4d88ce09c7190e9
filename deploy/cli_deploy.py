"""``simbridge deploy [--sim]``: the ROS 2 nodes in one process, for pip-only users without ``ros2 launch``.

Builds the same nodes as ``launch/robot_eval.launch.py`` (camera, franka, policy, logger and,
with ``--protocol``, the evaluation orchestrator) or ``launch/sim_eval.launch.py`` (``--sim``:
the franky-sim twin instead of the camera and a real arm) from the same parameter files, and
spins them on one ``MultiThreadedExecutor``. The launch arguments are options here::

    simbridge deploy --sim --bundle runs/export/sft/latest --instruction "put the red cube on the green target"
    simbridge deploy --robot-ip 172.16.0.2 --camera 0 --bundle runs/export/ppo/latest --protocol launch/protocols/rl4vla_hardware.yaml
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
from pathlib import Path
from typing import Any

from simbridge.data.config import ConfigError
from simbridge.deploy.ros_params import LAUNCH_DIR, node_parameters, parse_overrides

ROS_PACKAGE_SRC = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "simbridge_ros"


def ensure_ros_package() -> None:
    """Make ``import simbridge_ros`` work: installed package first, else this checkout's source."""
    if importlib.util.find_spec("simbridge_ros") is None:
        if not (ROS_PACKAGE_SRC / "simbridge_ros" / "__init__.py").is_file():
            raise ConfigError(f"the simbridge_ros package is neither installed nor at {ROS_PACKAGE_SRC}")
        sys.path.insert(0, str(ROS_PACKAGE_SRC))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sim", action="store_true", help="run against the embedded franky-sim twin (no robot)"
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="ROS 2 parameter file (default: launch/sim.yaml with --sim, else launch/robot.yaml)",
    )
    parser.add_argument("--robot-ip", default=None, help="the FR3's address (franka.robot_ip)")
    parser.add_argument(
        "--camera", default=None, help="camera device index, video file or URL (camera.source)"
    )
    parser.add_argument(
        "--bundle", default=None, help="policy bundle dir or export dir with a 'latest' pointer"
    )
    parser.add_argument("--instruction", default=None, help="language instruction (changeable at run time)")
    parser.add_argument("--protocol", default=None, help="evaluation protocol YAML: runs the orchestrator")
    parser.add_argument("--log-dir", default=None, help="episode store and evaluation results go here")
    parser.add_argument(
        "--protocol-set",
        dest="protocol_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a protocol field, e.g. policies.sft=runs/export/sft/latest (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override one node parameter, e.g. policy.chunk_mode=ensemble (repeatable)",
    )
    parser.add_argument("--no-logger", action="store_true", help="do not record episodes")
    parser.add_argument(
        "--teleop",
        default=None,
        metavar="DEVICE",
        help="add a teleop node (keyboard | spacemouse | gamepad): with a bundle the operator can take over "
        "(HIL interventions, recorded per step), without one it drives the arm alone",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)"
    )


def launch_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The launch arguments as per-node parameter overrides (the launch files map them the same way)."""
    out: dict[str, dict[str, Any]] = {}

    def put(node: str, key: str, value: Any) -> None:
        if value is not None:
            out.setdefault(node, {})[key] = value

    put("franka", "robot_ip", args.robot_ip)
    put("camera", "source", args.camera)
    put("policy", "bundle", args.bundle)
    put("policy", "instruction", args.instruction)
    put("logger", "instruction", args.instruction)
    put("orchestrator", "protocol", args.protocol)
    if args.protocol_overrides:
        put("orchestrator", "protocol_overrides", list(args.protocol_overrides))
    if args.teleop:
        put("teleop", "device", args.teleop)
        put("teleop", "mode", "intervention" if args.bundle else "teleop")
        put("policy", "publish_actions", False)  # the teleop node forwards the policy's proposals
    if args.log_dir:
        put("logger", "store", str(Path(args.log_dir) / "episodes.zarr"))
        put("orchestrator", "log_dir", str(args.log_dir))
    for node_key, value in parse_overrides(args.overrides).items():
        node, dot, key = node_key.partition(".")
        if not dot:
            raise ConfigError(f"--set {node_key}=...: name the node, e.g. policy.{node_key}=...")
        out.setdefault(node, {})[key] = value
    return out


def node_plan(sim: bool, with_logger: bool, with_orchestrator: bool, with_teleop: bool = False) -> list[str]:
    """Which nodes run, in start order (the twin before the franka node that connects to it)."""
    plan = ["twin"] if sim else ["camera"]
    plan += ["franka", "policy"]
    if with_teleop:
        plan.append("teleop")
    if with_logger:
        plan.append("logger")
    if with_orchestrator:
        plan.append("orchestrator")
    return plan


def build_nodes(
    params_file: Path, plan: list[str], overrides: dict[str, dict[str, Any]], context=None
) -> list:
    """Construct the planned nodes with their parameters from ``params_file`` + ``overrides``."""
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
        for name in plan:
            params = node_parameters(params_file, name, overrides.get(name, {}))
            if name == "franka" and nodes and isinstance(nodes[0], TwinNode):
                params["robot_ip"] = nodes[0].hostname
            try:
                nodes.append(
                    classes[name](
                        name=name,
                        context=context,
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                    )
                )
            except ParameterException as err:  # e.g. source=0 (int) for a string parameter
                raise ConfigError(
                    f"node {name!r}: {err}; check the value's type in {params_file} or --set "
                    f"(quote strings: {name}.key='\"0\"', write floats with a dot: 10.0)"
                ) from None
    except BaseException:
        close_nodes(nodes)
        raise
    return nodes


def close_nodes(nodes: list) -> None:
    """Close in reverse start order: stop the arm before the twin/robot goes away."""
    for node in reversed(nodes):
        close = getattr(node, "close", None)
        try:
            if close is not None:
                close()
        finally:
            node.destroy_node()


def run(args: argparse.Namespace) -> int:
    ensure_ros_package()
    import rclpy
    from rclpy.context import Context
    from simbridge_ros.common import spin_nodes

    params_file = args.params or LAUNCH_DIR / ("sim.yaml" if args.sim else "robot.yaml")
    overrides = launch_overrides(args)
    with_orchestrator = bool(args.protocol or overrides.get("orchestrator", {}).get("protocol"))
    plan = node_plan(args.sim, not args.no_logger, with_orchestrator, bool(args.teleop))
    context = Context()
    rclpy.init(context=context)
    nodes: list = []
    try:
        nodes = build_nodes(params_file, plan, overrides, context)
        print(f"simbridge deploy: running {', '.join(plan)} ({params_file}); Ctrl-C stops the arm and exits")
        orchestrator = next((n for n in nodes if n.get_name() == "orchestrator"), None)
        deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")

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
