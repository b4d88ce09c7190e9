"""Run a policy bundle against the simulated twin (franky-sim embedded in the twin node).

    ros2 launch launch/sim_eval.launch.py bundle:=runs/export/sft/latest \
        protocol:=launch/protocols/twin_smoke.yaml log_dir:=runs/twin_eval

The twin node hosts franky-sim on 127.0.0.1 and renders the scene camera; the franka node talks
to it through franky exactly as to a real arm; success is computed from the twin's object poses.
Same arguments as robot_eval.launch.py (``robot_ip`` and ``camera`` default to the twin's).
Without ``ros2 launch``: ``simbridge deploy --sim``.
"""

from pathlib import Path

# ruff: noqa: I001  (ruff takes the repository's launch/ folder for the ROS 2 `launch` package)
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PARAMS = str(Path(__file__).resolve().parent / "sim.yaml")


def generate_launch_description() -> LaunchDescription:
    robot_ip = LaunchConfiguration("robot_ip")
    camera = LaunchConfiguration("camera")
    bundle = LaunchConfiguration("bundle")
    instruction = LaunchConfiguration("instruction")
    protocol = LaunchConfiguration("protocol")
    log_dir = LaunchConfiguration("log_dir")
    store = PythonExpression(["'", log_dir, "' + '/episodes.zarr'"])
    return LaunchDescription([
        DeclareLaunchArgument("robot_ip", default_value="127.0.0.1", description="the twin's franky-sim address"),
        DeclareLaunchArgument("camera", default_value="scene", description="the twin camera to publish"),
        DeclareLaunchArgument("bundle", default_value="", description="bundle dir or export dir with `latest`"),
        DeclareLaunchArgument("instruction", default_value="put the red cube on the green target"),
        DeclareLaunchArgument("protocol", default_value="", description="evaluation protocol YAML (optional)"),
        DeclareLaunchArgument("log_dir", default_value="runs/twin_eval", description="episodes and results"),
        Node(package="simbridge_ros", executable="twin", name="twin", output="screen",
             parameters=[PARAMS, {"cameras": [camera]}]),
        Node(package="simbridge_ros", executable="franka", name="franka", output="screen",
             parameters=[PARAMS, {"robot_ip": robot_ip}]),
        Node(package="simbridge_ros", executable="policy", name="policy", output="screen",
             parameters=[PARAMS, {"bundle": bundle, "instruction": instruction}]),
        Node(package="simbridge_ros", executable="logger", name="logger", output="screen",
             parameters=[PARAMS, {"store": store, "instruction": instruction}]),
        Node(package="simbridge_ros", executable="orchestrator", name="orchestrator", output="screen",
             parameters=[PARAMS, {"protocol": protocol, "log_dir": log_dir}],
             condition=IfCondition(PythonExpression(["'", protocol, "' != ''"]))),
    ])
