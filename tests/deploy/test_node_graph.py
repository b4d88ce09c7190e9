"""The node graph both launch files and ``simbridge deploy`` read: which nodes, which typed overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_bundle import draft_manifest, write_bundle  # same directory: pytest puts it on sys.path

from simbridge.data.config import ConfigError
from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import update_latest
from simbridge.deploy.node_graph import LAUNCH_DIR, ROBOT_GRAPH, SIM_GRAPH, overrides_yaml, plan


def two_camera_bundle(export: Path, wrist: tuple[int, int] = (96, 128), name: str = "b1") -> Path:
    """An export dir whose `latest` is a bundle trained on a scene (96x128) and a wrist camera."""
    contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 96, 128),
                                                                   CameraSpec("wrist", *wrist))), chunk_size=2)
    write_bundle(export / name, draft_manifest(contract))
    update_latest(export, name)
    return export


def overrides(planned) -> dict[str, dict]:
    """The overrides file as rcl reads it: ``{node: parameters}``."""
    return {n: s["ros__parameters"] for n, s in yaml.safe_load(overrides_yaml(planned.nodes)).items()}


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
    assert planned.names == ["camera_scene", "franka", "policy", "logger"]
    assert planned.node("franka").overrides == {"robot_ip": "10.1.2.3"}


def test_every_argument_becomes_a_typed_override_of_its_nodes(tmp_path: Path) -> None:
    args = {"robot_ip": "127.0.0.99", "camera": "0", "bundle": "runs/export/sft/latest", "instruction": "put it",
            "protocol": "rl4vla_hardware", "protocol_set": "policies.sft=a/b  policies.rl=c", "log_dir": "runs/x"}
    planned = plan(ROBOT_GRAPH, args)
    # Read back as rcl reads the file: a device index stays a string, lists are string arrays.
    sections = yaml.safe_load(overrides_yaml(planned.nodes))
    assert "/**" not in sections  # launch_ros's dict parameters land there and lose to node sections
    params = {node: s["ros__parameters"] for node, s in sections.items()}
    assert params["camera_scene"] == {"name": "scene", "source": "0"}  # the bundle does not exist (yet)
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


def test_a_two_camera_bundle_gets_a_camera_node_per_contract_camera_with_its_own_source(tmp_path: Path) -> None:
    export = two_camera_bundle(tmp_path / "export")
    args = {"robot_ip": "10.1.2.3", "bundle": str(export), "camera_sources": "scene=0 wrist=/dev/video4"}
    robot = plan(ROBOT_GRAPH, args)
    assert robot.names == ["camera_scene", "camera_wrist", "franka", "policy", "logger"]
    assert [robot.node(n).executable for n in robot.names[:2]] == ["camera", "camera"]
    assert robot.cameras.origin == "the bundle's contract"
    params = overrides(robot)
    assert params["camera_scene"] == {"name": "scene", "source": "0", "height": 96, "width": 128}
    assert params["camera_wrist"] == {"name": "wrist", "source": "/dev/video4", "height": 96, "width": 128}
    assert params["logger"]["cameras"] == ["scene", "wrist"]
    # camera:= is the first camera's source; the wrist's comes from camera_sources.
    first = overrides(plan(ROBOT_GRAPH, {**args, "camera": "2", "camera_sources": "wrist=rtsp://cam/wrist"}))
    assert (first["camera_scene"]["source"], first["camera_wrist"]["source"]) == ("2", "rtsp://cam/wrist")
    # The twin renders the contract's cameras at the contract's size; `cameras` still chooses.
    sim = overrides(plan(SIM_GRAPH, {"bundle": str(export / "latest")}))
    assert sim["twin"] == {"cameras": ["scene", "wrist"], "height": 96, "width": 128}
    assert sim["logger"]["cameras"] == ["scene", "wrist"]
    assert overrides(plan(SIM_GRAPH, {"bundle": str(export), "cameras": "scene"}))["twin"]["cameras"] == ["scene"]


def test_a_contract_camera_without_a_source_is_one_line_naming_it_and_the_argument(tmp_path: Path) -> None:
    export = two_camera_bundle(tmp_path / "export")
    with pytest.raises(ConfigError) as err:
        plan(ROBOT_GRAPH, {"robot_ip": "10.1.2.3", "bundle": str(export)})  # robot.yaml has a scene source only
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("camera 'wrist' (from the bundle's contract) has no source: set "
                                     'camera_sources:="wrist=<device index | video file | URL | realsense>"')
    assert "camera_wrist.source in robot.yaml" in str(err.value)
    with pytest.raises(ConfigError, match=r"camera_sources names \['wirst'\], but this run's cameras are "
                                          r"\['scene', 'wrist'\]"):
        plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "bundle": str(export), "camera_sources": "wirst=1"})
    with pytest.raises(ConfigError, match=r"'wrist' must look like NAME=SOURCE"):
        plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "bundle": str(export), "camera_sources": "scene=0 wrist"})
    with pytest.raises(ConfigError, match=r"camera:= and camera_sources:= both set camera 'scene'"):
        plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "bundle": str(export), "camera": "0",
                           "camera_sources": "scene=1 wrist=2"})
    # A serial in the parameter file is a source (a RealSense), so is a source there.
    params = tmp_path / "robot.yaml"
    params.write_text((LAUNCH_DIR / "robot.yaml").read_text().replace(
        'source: ""             # none by default', 'source: "realsense"    # none by default'))
    planned = plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "bundle": str(export), "params_file": str(params)})
    assert "source" not in planned.node("camera_wrist").overrides


def test_cameras_without_a_readable_bundle_and_across_a_protocols_bundles(tmp_path: Path) -> None:
    # No bundle: camera_sources names the cameras (teleop collection with two cameras).
    planned = plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "camera_sources": "scene=0 wrist=1", "teleop": "keyboard"})
    assert planned.names[:2] == ["camera_scene", "camera_wrist"] and "height" not in planned.node("camera_scene").overrides
    assert planned.node("logger").overrides["cameras"] == ["scene", "wrist"]
    # A bundle that cannot be read yet: the parameter file's cameras, and the launch log says why.
    missing = plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "bundle": str(tmp_path / "nope")})
    assert missing.names[0] == "camera_scene" and "cameras" not in missing.node("logger").overrides
    assert missing.cameras.origin.startswith("robot.yaml (logger.cameras) (bundle path ") and "nope" in missing.cameras.origin
    # A protocol's policies (with protocol_set applied) bring their cameras; a size conflict is refused.
    a, b = two_camera_bundle(tmp_path / "a"), two_camera_bundle(tmp_path / "b", wrist=(64, 64))
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(f"name: x\npolicies: {{sft: '{a}', rl: missing/bundle}}\n")
    both = plan(SIM_GRAPH, {"protocol": str(protocol)})
    assert both.cameras.names == ("scene", "wrist") and "missing/bundle" in both.cameras.origin
    with pytest.raises(ConfigError, match=r"camera 'wrist' is 128x96 in bundle .*a but 64x64 in bundle .*b: "
                                          r"one camera node cannot serve both"):
        plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "protocol": str(protocol), "protocol_set": f"policies.rl={b}"})
    with pytest.raises(ConfigError, match=r"the twin renders every camera at one size.*scene 128x96, wrist 64x64"):
        plan(SIM_GRAPH, {"bundle": str(b)})


def test_an_old_single_camera_section_is_refused_with_the_new_name(tmp_path: Path) -> None:
    params = tmp_path / "old.yaml"
    params.write_text("camera:\n  ros__parameters:\n    source: '0'\nlogger:\n  ros__parameters:\n    cameras: [scene]\n")
    with pytest.raises(ConfigError, match=r"has a 'camera' section.*rename it to camera_scene"):
        plan(ROBOT_GRAPH, {"robot_ip": "1.2.3.4", "params_file": str(params)})
