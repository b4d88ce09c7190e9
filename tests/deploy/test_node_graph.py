"""The node graph both launch files and ``simbridge deploy`` read: which nodes, which typed overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simbridge.data.config import ConfigError
from simbridge.deploy.node_graph import LAUNCH_DIR, ROBOT_GRAPH, SIM_GRAPH, overrides_yaml, plan


def test_sim_graph_starts_the_twin_first_and_the_orchestrator_only_with_a_protocol() -> None:
    assert plan(SIM_GRAPH, {}).names == ["twin", "franka", "policy", "logger"]
    with_protocol = plan(SIM_GRAPH, {"protocol": "twin_smoke", "teleop": "keyboard"})
    assert with_protocol.names == ["twin", "franka", "policy", "teleop", "logger", "orchestrator"]
    assert plan(SIM_GRAPH, {}, without={"logger"}).names == ["twin", "franka", "policy"]
    assert plan(SIM_GRAPH, {}).params_file == LAUNCH_DIR / "sim.yaml"


def test_robot_graph_requires_robot_ip_and_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"robot_ip is required.*robot_ip:=<value>.*--robot-ip"):
        plan(ROBOT_GRAPH, {})
    with pytest.raises(ConfigError, match=r"robot_ip is required"):
        plan(ROBOT_GRAPH, {"robot_ip": ""})
    planned = plan(ROBOT_GRAPH, {"robot_ip": "10.1.2.3"})
    assert planned.names == ["camera", "franka", "policy", "logger"]
    assert planned.node("franka").overrides == {"robot_ip": "10.1.2.3"}


def test_every_argument_becomes_a_typed_override_of_its_nodes(tmp_path: Path) -> None:
    args = {"robot_ip": "127.0.0.99", "camera": "0", "bundle": "runs/export/sft/latest", "instruction": "put it",
            "protocol": "rl4vla_hardware", "protocol_set": "policies.sft=a/b  policies.rl=c", "log_dir": "runs/x"}
    planned = plan(ROBOT_GRAPH, args)
    # Read back as rcl reads the file: a device index stays a string, lists are string arrays.
    sections = yaml.safe_load(overrides_yaml(planned.nodes))
    assert "/**" not in sections  # launch_ros's dict parameters land there and lose to node sections
    params = {node: s["ros__parameters"] for node, s in sections.items()}
    assert params["camera"] == {"source": "0"}
    assert params["franka"] == {"robot_ip": "127.0.0.99"}
    assert params["policy"] == {"bundle": "runs/export/sft/latest", "instruction": "put it"}
    assert params["logger"] == {"instruction": "put it", "store": "runs/x/episodes.zarr"}
    assert params["orchestrator"] == {"log_dir": "runs/x", "protocol": str(LAUNCH_DIR / "protocols/rl4vla_hardware.yaml"),
                                      "protocol_overrides": ["policies.sft=a/b", "policies.rl=c"]}
    sim = plan(SIM_GRAPH, {"cameras": "scene, wrist"})
    text = overrides_yaml(sim.nodes)
    assert "&" not in text and "*" not in text, "rcl's parser knows no YAML anchors"
    assert yaml.safe_load(text)["twin"]["ros__parameters"]["cameras"] == ["scene", "wrist"]
    assert yaml.safe_load(text)["logger"]["ros__parameters"]["cameras"] == ["scene", "wrist"]


def test_empty_arguments_keep_the_parameter_file_and_teleop_takes_over_the_commander() -> None:
    assert all(not n.overrides for n in plan(SIM_GRAPH, {}).nodes)
    planned = plan(SIM_GRAPH, {"bundle": "b", "teleop": "spacemouse"})
    assert planned.node("teleop").overrides == {"device": "spacemouse", "mode": "intervention"}
    assert planned.node("policy").overrides["publish_actions"] is False
    alone = plan(SIM_GRAPH, {"teleop": "keyboard"})
    assert alone.node("teleop").overrides["mode"] == "teleop" and "policy" not in {
        n.name for n in alone.nodes if n.overrides}


def test_bad_arguments_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown launch argument.*'bundel'"):
        plan(SIM_GRAPH, {"bundel": "x"})
    with pytest.raises(ConfigError, match=r"neither a file nor a shipped protocol.*twin_smoke"):
        plan(SIM_GRAPH, {"protocol": "twin_smok"})
    with pytest.raises(ConfigError, match=r"parameter file .*missing.yaml does not exist"):
        plan(SIM_GRAPH, {"params_file": str(tmp_path / "missing.yaml")})
    own = tmp_path / "protocol.yaml"
    own.write_text("name: x\n")
    assert plan(SIM_GRAPH, {"protocol": str(own)}).node("orchestrator").overrides["protocol"] == str(own)


def test_the_launch_command_line_puts_the_overrides_file_last(tmp_path: Path) -> None:
    planned = plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4"})
    cmd = planned.node("franka").command("/install/lib/simbridge_ros/franka", planned.params_file, tmp_path / "o.yaml")
    assert cmd == ["/install/lib/simbridge_ros/franka", "--ros-args", "-r", "__node:=franka",
                   "--params-file", str(planned.params_file), "--params-file", str(tmp_path / "o.yaml")]
    # A node without overrides gets the base file only (an empty parameter file is an rcl error).
    assert planned.node("policy").command("policy", planned.params_file, tmp_path / "o.yaml")[-2:] == [
        "--params-file", str(planned.params_file)]
