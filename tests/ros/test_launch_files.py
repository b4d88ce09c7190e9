"""Launch files, parameter files and the ament_python package: consistent, and built by colcon.

``launch`` is not on PyPI, so the launch files are checked by parsing them; the node graph they
read is checked against the parameters each node declares, and the package is built with the real
colcon into a temporary workspace and its install tree inspected as ``ros2 pkg`` would."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from simbridge.data.config import ConfigError
from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import update_latest
from simbridge.deploy.graph_cameras import executable_of
from simbridge.deploy.node_graph import ROBOT_GRAPH, SIM_GRAPH, overrides_yaml, plan
from simbridge.deploy.ros_params import node_parameters, nodes_in, parse_overrides

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "simbridge_ros"
LAUNCH = REPO / "launch"


def two_camera_export(root: Path) -> Path:
    """An export dir (``latest``) of a hand-made bundle whose contract has a scene and a wrist camera,
    written with tests/deploy/test_bundle.py's helpers (as pytest imports that module)."""
    sys.path.insert(0, str(REPO / "tests" / "deploy"))
    try:
        from test_bundle import draft_manifest, write_bundle
    finally:
        sys.path.remove(str(REPO / "tests" / "deploy"))
    contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 96, 128),
                                                                   CameraSpec("wrist", 96, 128))), chunk_size=2)
    write_bundle(root / "b1", draft_manifest(contract))
    update_latest(root, "b1")
    return root


def _call_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def _kw(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def console_scripts() -> dict[str, str]:
    tree = ast.parse((PKG / "setup.py").read_text())
    nodes = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "NODES")
    return ast.literal_eval(nodes)


def declared_parameters(module: str) -> dict[str, type]:
    """Parameters a node module declares (``declare_parameter("name", default)``) and their default types."""
    tree = ast.parse((PKG / "simbridge_ros" / f"{module}.py").read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "declare_parameter":
            name, default = ast.literal_eval(node.args[0]), ast.literal_eval(node.args[1])
            out[name] = type(default)
    return out


@pytest.mark.parametrize("graph", [SIM_GRAPH, ROBOT_GRAPH], ids=["sim", "robot"])
def test_graph_nodes_exist_and_every_argument_sets_declared_parameters_with_their_type(graph, tmp_path) -> None:
    """Each launch argument reaches parameters its node declares, with the declared type (rcl refuses
    a mismatch, e.g. camera:=0 as an integer where a string is declared); a two-camera bundle gets
    both cameras (the robot: a camera node each, with its own source)."""
    scripts = console_scripts()
    params_path = LAUNCH / graph.params_file
    values = {a.name: "1" for a in graph.arguments}  # numeric-looking strings: the type trap
    values.update(protocol="", teleop="keyboard", params_file="", protocol_set="a=1 b=2",
                  bundle=str(two_camera_export(tmp_path / "export")))
    if "cameras" in values:
        values["cameras"] = "scene,wrist"
    if "camera_sources" in values:
        values["camera_sources"] = "wrist=2"  # camera:=1 is the scene camera's
    planned = plan(graph, values)
    assert planned.cameras.names == ("scene", "wrist")
    written = {n: s["ros__parameters"] for n, s in yaml.safe_load(overrides_yaml(planned.nodes)).items()}
    if graph is ROBOT_GRAPH:
        assert planned.names[:2] == ["camera_scene", "camera_wrist"]
        assert [written[f"camera_{c}"]["source"] for c in ("scene", "wrist")] == ["1", "2"]
    else:
        assert written["twin"]["cameras"] == ["scene", "wrist"] and written["twin"]["width"] == 128
    for node in planned.nodes:
        assert node.executable in scripts, f"{graph.name}: executable {node.executable!r} is not a console script"
        assert node.name in nodes_in(params_path), f"{params_path.name} has no section for node {node.name!r}"
        declared = declared_parameters(scripts[node.executable])
        for key, value in node.overrides.items():
            assert key in declared, f"{graph.name}: {node.name} has no parameter {key!r}"
            expected = declared[key]
            if expected is list:
                assert isinstance(value, list) and all(isinstance(v, str) for v in value), (node.name, key, value)
            else:
                assert type(value) is expected, f"{graph.name}: {node.name}.{key}={value!r} must be {expected.__name__}"


@pytest.mark.parametrize("launch_file,graph", [("sim_eval.launch.py", "sim"), ("robot_eval.launch.py", "robot")])
def test_launch_files_describe_their_graph(launch_file: str, graph: str) -> None:
    tree = ast.parse((LAUNCH / launch_file).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == "launch_description"]
    assert len(calls) == 1 and ast.literal_eval(calls[0].args[0]) == graph
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


@pytest.mark.parametrize("param_file", ["robot.yaml", "sim.yaml"])
def test_parameter_files_match_the_declared_parameters_and_types(param_file: str) -> None:
    """rcl refuses a parameter whose YAML type differs from the declared default (10 vs 10.0)."""
    path = LAUNCH / param_file
    scripts = console_scripts()
    for node in nodes_in(path):
        declared = declared_parameters(scripts[executable_of(node)])
        for key, value in node_parameters(path, node).items():
            if key not in declared:
                assert key == "control_rate_hz", f"{param_file}: {node}.{key} is not declared by the node"
                continue
            assert isinstance(value, declared[key]) and not (declared[key] is int and isinstance(value, bool)), (
                f"{param_file}: {node}.{key}={value!r} must be {declared[key].__name__}"
            )


def test_parameter_loading_merges_wildcard_and_overrides(tmp_path) -> None:
    params = node_parameters(LAUNCH / "sim.yaml", "policy", ["chunk_mode=ensemble", "execute_steps=2"])
    assert node_parameters(LAUNCH / "sim.yaml", "franka")["control_rate_hz"] == 10.0  # from the /** section
    assert params["control_rate_hz"] == 10.0 and params["chunk_mode"] == "ensemble" and params["execute_steps"] == 2
    assert parse_overrides(["enabled=false"]) == {"enabled": False}
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  bundle: x\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        node_parameters(bad, "policy")
    with pytest.raises(ConfigError, match="does not exist"):
        node_parameters(tmp_path / "missing.yaml", "policy")


def test_ament_python_package_is_complete() -> None:
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.findtext("name") == "simbridge_ros" and root.get("format") == "3"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs"} <= deps
    assert (PKG / "resource" / "simbridge_ros").is_file()
    assert "lib/simbridge_ros" in (PKG / "setup.cfg").read_text()
    out = subprocess.run([sys.executable, "setup.py", "--name"], cwd=PKG, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "simbridge_ros", out.stderr
    for exe, module in console_scripts().items():
        source = (PKG / "simbridge_ros" / f"{module}.py").read_text()
        assert "\ndef main(" in source, f"console script {exe}: {module}.py has no main()"


@pytest.mark.parametrize("symlink", [False, True], ids=["copy", "symlink-install"])
def test_colcon_builds_the_package_and_installs_executables_launch_and_parameter_files(tmp_path, symlink) -> None:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    assert colcon, "colcon is part of the dev extra: pip install -e .[dev]"
    cmd = [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO / "ros2_ws" / "src"),
           "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
           "--packages-select", "simbridge_ros", *(["--symlink-install"] if symlink else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    prefix = tmp_path / "install" / "simbridge_ros"
    # What `ros2 pkg prefix / executables` read: the ament index marker and lib/<package>/<exe>.
    assert (prefix / "share/ament_index/resource_index/packages/simbridge_ros").is_file()
    for exe in console_scripts():
        path = prefix / "lib" / "simbridge_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"executable {exe} not installed"
    share = prefix / "share" / "simbridge_ros"
    assert (share / "package.xml").is_file()
    for name in ["sim_eval.launch.py", "robot_eval.launch.py", "sim.yaml", "robot.yaml",
                 "protocols/twin_smoke.yaml", "protocols/twin_demo.yaml", "protocols/rl4vla_hardware.yaml"]:
        installed = share / "launch" / name
        assert installed.is_file(), f"{name} not installed to share/simbridge_ros/launch"
        assert installed.read_bytes() == (LAUNCH / name).read_bytes()
    # The installed launch file finds its parameter file and protocols next to itself.
    launch_dir = (share / "launch" / "sim_eval.launch.py").resolve().parent
    assert plan(SIM_GRAPH, {"protocol": "twin_smoke"}, launch_dir).params_file.is_file()
