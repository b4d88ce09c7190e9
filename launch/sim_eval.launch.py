"""Run a policy bundle against the simulated twin (franky-sim embedded in the twin node).

    ros2 launch simbridge_ros sim_eval.launch.py bundle:=runs/export/sft/latest
    ros2 launch simbridge_ros sim_eval.launch.py protocol:=twin_smoke log_dir:=runs/twin_eval \
        protocol_set:="policies.sft=runs/demo/latest/bundles/sft policies.rl=runs/demo/latest/bundles/ppo"

(``ros2 launch launch/sim_eval.launch.py ...`` from the repository works too.) The twin node hosts
franky-sim on a loopback address and announces it; the franka node waits for that announcement and
talks to the twin through franky exactly as to a real arm; success comes from the twin's object
poses. Nodes, arguments and their parameters: ``simbridge.deploy.node_graph.SIM_GRAPH`` (the same
graph ``simbridge deploy --sim`` runs); ``ros2 launch ... --show-args`` lists the arguments.
"""

from pathlib import Path

from simbridge_ros.launching import launch_description


def generate_launch_description():
    return launch_description("sim", Path(__file__).resolve().parent)
