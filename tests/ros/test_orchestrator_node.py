"""Orchestrator resilience: a robot fault at reset is recovered in the twin and stops the protocol on hardware.

franky-sim raises no reflexes, so the fault is franky's own ControlException injected at the franky
boundary (FaultInjector) on the homing motion; everything else is the real stack over loopback DDS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rclpy.parameter import Parameter

from simbridge.data.config import load_config
from simbridge.deploy.cli_deploy import build_nodes
from simbridge.deploy.franky_config import FrankyRobotConfig
from simbridge.deploy.franky_robot import FrankyRobot
from simbridge.deploy.node_graph import SIM_GRAPH, plan
from simbridge.deploy.safety import SafetyLimits
from simbridge.deploy.testing import FaultInjector

from .conftest import wait_until

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def start_stack(graph, tmp_path: Path, bundle_dir: Path, limits: str, label: str):
    """twin + franka (through a FaultInjector) + policy + logger + orchestrator (not yet started)."""
    import franky
    from simbridge_ros.franka import FrankaNode
    from simbridge_ros.franka_startup import drop_inherited_realtime
    from simbridge_ros.orchestrator import OrchestratorNode
    from simbridge_ros.protocol import load_protocol

    planned = plan(SIM_GRAPH, {"bundle": str(bundle_dir / "latest"), "log_dir": str(tmp_path)},
                   without={"franka"})  # the franka node is built below, around a fault injector
    extra = {"policy": {"max_observation_age_s": 2.0, "enabled": False}}
    twin, policy, logger = build_nodes(planned, extra, context=graph.context)
    graph.add(twin)
    faults = FaultInjector()
    robot = FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True, safety=load_config(SafetyLimits, limits)),
                        robot_factory=faults.robot_factory(), gripper_factory=faults.gripper_factory())
    robot.connect()
    drop_inherited_realtime()
    graph.add(FrankaNode(robot, context=graph.context, parameter_overrides=[Parameter("sim", value=True)]))
    graph.add(policy)
    graph.add(logger)
    protocol_file = tmp_path / "protocol.yaml"
    protocol_file.write_text(
        f"name: fault_test\npolicies: {{sft: '{bundle_dir / 'latest'}'}}\nepisodes_per_condition: 1\n"
        f"episode_time_s: 3.0\nlabel: {label}\nconditions:\n  - {{name: base, category: train}}\n"
    )
    orchestrator = OrchestratorNode(load_protocol(protocol_file), context=graph.context, parameter_overrides=[
        Parameter("log_dir", value=str(tmp_path / "eval")), Parameter("autostart", value=False)])
    # The first motion the arm is asked for is the homing before trial 1: it ends in a reflex.
    faults.inject("move", franky.ControlException("motion aborted by reflex! ['joint_position_limits_violation']"))
    return robot, graph.add(orchestrator)


def close_robot(graph, robot) -> None:
    from simbridge_ros.franka import FrankaNode

    for node in [n for n in graph.nodes if isinstance(n, FrankaNode)]:
        graph.remove(node)
    robot.disconnect()


def test_twin_fault_at_reset_is_recovered_and_the_trial_runs(graph, tmp_path, bundle_dir, loaded_machine_limits):
    robot, orchestrator = start_stack(graph, tmp_path, bundle_dir, loaded_machine_limits, label="twin")
    try:
        orchestrator.start()
        wait_until(orchestrator.done.is_set, 90, "the protocol to finish")
        assert orchestrator.error == ""
        rows = [json.loads(line) for line in (tmp_path / "eval" / "episodes.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and rows[0]["steps"] > 0 and rows[0]["robot_fault"] == ""
    finally:
        close_robot(graph, robot)


def test_hardware_fault_at_reset_stops_the_protocol_for_the_operator(graph, tmp_path, bundle_dir,
                                                                      loaded_machine_limits):
    robot, orchestrator = start_stack(graph, tmp_path, bundle_dir, loaded_machine_limits, label="service")
    try:
        orchestrator.start()
        wait_until(orchestrator.done.is_set, 60, "the protocol to stop")
        assert "homing failed" in orchestrator.error and "/franka/recover" in orchestrator.error
        assert "ControlException" in orchestrator.error  # the robot's own reason reaches the operator
        assert not (tmp_path / "eval" / "episodes.jsonl").exists()  # no trial ran on a faulted arm
    finally:
        close_robot(graph, robot)


def test_a_shutdown_during_a_service_call_is_a_quiet_stop_not_an_abort(tmp_path, bundle_dir):
    """``ros2 launch`` stopping the graph while the protocol thread waits on a service: rclpy raises
    RCLError (context invalid). That is a normal stop: no traceback, no "aborted" status."""
    import rclpy
    from rclpy.context import Context
    from simbridge_ros.orchestrator import OrchestratorNode
    from simbridge_ros.protocol import load_protocol

    protocol_file = tmp_path / "protocol.yaml"
    protocol_file.write_text(f"name: stop_test\npolicies: {{sft: '{bundle_dir / 'latest'}'}}\nepisodes_per_condition: 1\n"
                             "conditions:\n  - {name: base, category: train}\n")  # fmt: skip
    context = Context()
    rclpy.init(context=context)
    node = OrchestratorNode(load_protocol(protocol_file), context=context, parameter_overrides=[
        Parameter("log_dir", value=str(tmp_path / "eval")), Parameter("autostart", value=False)])
    statuses: list[dict] = []
    node._status = lambda **fields: statuses.append(fields)

    def shut_down_mid_call() -> None:
        context.shutdown()
        raise RuntimeError("failed to check service availability: rcl node's context is invalid")

    node.run_protocol = shut_down_mid_call
    node._run_safely()  # must not raise
    assert node.done.is_set() and "context is invalid" in node.error and statuses == []
    node.destroy_node()

    # While the context is up, the same failure is an abort, reported as such.
    context = Context()
    rclpy.init(context=context)
    node = OrchestratorNode(load_protocol(protocol_file), context=context, parameter_overrides=[
        Parameter("log_dir", value=str(tmp_path / "eval")), Parameter("autostart", value=False)])
    node._status = lambda **fields: statuses.append(fields)
    node.run_protocol = lambda: (_ for _ in ()).throw(RuntimeError("the franka node refused"))
    node._run_safely()
    assert statuses == [{"state": "aborted", "error": "RuntimeError: the franka node refused"}]
    node.destroy_node()
    context.try_shutdown()
