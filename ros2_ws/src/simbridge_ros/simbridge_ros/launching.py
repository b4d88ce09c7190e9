"""``ros2 launch`` actions from the SimBridge node graph (``simbridge.deploy.node_graph``).

Imported only by the launch files (it needs ``launch`` and ``launch_ros``, which the PyPI ROS 2
wheels do not ship; ``simbridge deploy`` reads the same graph without them). Each node of the plan
becomes a ``launch_ros`` ``Node`` with two parameter files: the base file, then the launch
arguments written under the node's own name, so the arguments win. Camera nodes are one per camera
of the bundle's contract (``camera_scene``, ``camera_wrist``: the ``camera`` executable under each
name); the plan says where the cameras came from. Every node is required: when
one exits (the franka node cannot reach the arm, the orchestrator finished its protocol) the
launch shuts down with the reason, instead of leaving the others running forever, and exits 1
unless the protocol finished.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from simbridge.deploy.node_graph import GRAPHS, ROS_PACKAGE, Graph, plan, write_overrides


def launch_description(graph_name: str, launch_dir: str | Path) -> LaunchDescription:
    """The launch description of one graph (``sim`` or ``robot``); ``launch_dir`` holds its parameter files."""
    graph = GRAPHS[graph_name]
    arguments = [
        DeclareLaunchArgument(a.name, description=a.description,
                              **({} if a.default is None else {"default_value": a.default}))
        for a in graph.arguments
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes, args=[graph, Path(launch_dir)])])


def _nodes(context: LaunchContext, graph: Graph, launch_dir: Path) -> list:
    args = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.arguments}
    planned = plan(graph, args, launch_dir)
    overrides = write_overrides(planned.nodes, Path(tempfile.mkdtemp(prefix="simbridge_launch_")) / "overrides.yaml")
    actions: list = [LogInfo(msg=f"[simbridge] {graph.name} graph: {', '.join(planned.names)}; "
                                 f"cameras {', '.join(planned.cameras.names)} from {planned.cameras.origin}; "
                                 f"parameters {planned.params_file}, launch arguments in {overrides}")]
    for node in planned.nodes:
        action = Node(package=ROS_PACKAGE, executable=node.executable, name=node.name, output="screen",
                      emulate_tty=node.tty,
                      parameters=[str(f) for f in node.params_files(planned.params_file, overrides)])
        actions += [action, RegisterEventHandler(OnProcessExit(target_action=action,
                                                               on_exit=partial(_on_exit, node.name)))]
    return actions


def _on_exit(name: str, event: ProcessExited, context: LaunchContext) -> list:
    if context.is_shutdown:  # the others stopping because of the first exit: nothing new to say
        return []
    if name == "orchestrator" and event.returncode == 0:
        reason = "the evaluation protocol finished"
        return [LogInfo(msg=f"[simbridge] {reason}: shutting down"), Shutdown(reason=reason)]
    reason = (f"required node {name!r} exited with code {event.returncode}; the evaluation cannot go on "
              "without it (its log above says why)")
    # Shutdown() alone ends `ros2 launch` with exit code 0; an error raised in the launch loop shuts
    # down the same way and makes it exit 1, so scripts see the failure.
    return [LogInfo(msg=f"[simbridge] {reason}: shutting down"), OpaqueFunction(function=_fail, args=[reason])]


class RequiredNodeExited(RuntimeError):
    """A node the evaluation needs exited: ``ros2 launch`` shuts down and exits 1."""


def _fail(context: LaunchContext, reason: str) -> None:
    raise RequiredNodeExited(reason)
