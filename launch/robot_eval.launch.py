"""Run a policy bundle on a real FR3 (and optionally an evaluation protocol).

    ros2 launch simbridge_ros robot_eval.launch.py robot_ip:=172.16.0.2 camera:=0 \
        bundle:=runs/export/ppo/latest instruction:="put the red cube on the green target" \
        protocol:=rl4vla_hardware log_dir:=runs/hardware_eval
    # a bundle trained on a scene and a wrist camera: a source for each
    ros2 launch simbridge_ros robot_eval.launch.py robot_ip:=172.16.0.2 bundle:=runs/export/ppo/latest \
        camera_sources:="scene=0 wrist=/dev/video4"

``robot_ip`` is required (no default could be the right arm). Nodes: one camera node per camera of
the bundle's contract (``camera_scene``, ``camera_wrist``), franka, policy, logger and, with
``protocol``, the evaluation orchestrator, with ``robot.yaml`` as base parameter file and
the launch arguments on top (``simbridge.deploy.node_graph.ROBOT_GRAPH``, the graph ``simbridge
deploy`` runs too). When a node exits (e.g. the arm is unreachable) the launch stops with the reason.
"""

from pathlib import Path

from simbridge_ros.launching import launch_description


def generate_launch_description():
    return launch_description("robot", Path(__file__).resolve().parent)
