"""Run a policy bundle on a real FR3 (and optionally an evaluation protocol).

    ros2 launch launch/robot_eval.launch.py robot_ip:=172.16.0.2 camera:=0 \
        bundle:=runs/export/ppo/latest instruction:="put the red cube on the green target" \
        protocol:=launch/protocols/rl4vla_hardware.yaml log_dir:=runs/hardware_eval

Nodes: camera, franka, policy, logger and (when ``protocol`` is set) the evaluation
orchestrator, all from the ``simbridge_ros`` package with launch/robot.yaml as parameter file.
Without ``ros2 launch`` (ROS 2 from pip): ``simbridge deploy`` runs the same nodes in one process.
"""

from pathlib import Path

# ruff: noqa: I001  (ruff takes the repository's launch/ folder for the ROS 2 `launch` package)
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PARAMS = str(Path(__file__).resolve().parent / "robot.yaml")


def generate_launch_description() -> LaunchDescription:
    robot_ip = LaunchConfiguration("robot_ip")
    camera = LaunchConfiguration("camera")
    bundle = LaunchConfiguration("bundle")
    instruction = LaunchConfiguration("instruction")
    protocol = LaunchConfiguration("protocol")
    log_dir = LaunchConfiguration("log_dir")
    store = PythonExpression(["'", log_dir, "' + '/episodes.zarr'"])
    return LaunchDescription([
        DeclareLaunchArgument("robot_ip", default_value="172.16.0.2", description="the FR3's address"),
        DeclareLaunchArgument("camera", default_value="0", description="camera device index, video file or URL"),
        DeclareLaunchArgument("bundle", default_value="", description="bundle dir or export dir with `latest`"),
        DeclareLaunchArgument("instruction", default_value="put the red cube on the green target"),
        DeclareLaunchArgument("protocol", default_value="", description="evaluation protocol YAML (optional)"),
        DeclareLaunchArgument("log_dir", default_value="runs/hardware_eval", description="episodes and results"),
        Node(package="simbridge_ros", executable="camera", name="camera", output="screen",
             parameters=[PARAMS, {"source": camera}]),
        Node(package="simbridge_ros", executable="franka", name="franka", output="screen",
             parameters=[PARAMS, {"robot_ip": robot_ip}]),
        Node(package="simbridge_ros", executable="policy", name="policy", output="screen",
             parameters=[PARAMS, {"bundle": bundle, "instruction": instruction}]),
        Node(package="simbridge_ros", executable="logger", name="logger", output="screen",
             parameters=[PARAMS, {"store": store, "instruction": instruction}]),
        Node(package="simbridge_ros", executable="orchestrator", name="orchestrator", output="screen",
             emulate_tty=True,  # the operator answers the success prompt in this terminal
             parameters=[PARAMS, {"protocol": protocol, "log_dir": log_dir}],
             condition=IfCondition(PythonExpression(["'", protocol, "' != ''"]))),
    ])
