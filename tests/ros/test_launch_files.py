"""Launch files, parameter files and the ament_python package are consistent (no ``launch`` on PyPI:
the launch files are checked by parsing them)."""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simbridge.data.config import ConfigError
from simbridge.deploy.ros_params import node_parameters, nodes_in, parse_overrides

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "simbridge_ros"
LAUNCH = REPO / "launch"
LAUNCH_ARGS = {"robot_ip", "camera", "bundle", "instruction", "protocol", "log_dir"}
PARAM_FILE = {"robot_eval.launch.py": "robot.yaml", "sim_eval.launch.py": "sim.yaml"}


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


@pytest.mark.parametrize("launch_file", sorted(PARAM_FILE))
def test_launch_file_nodes_exist_and_their_parameters_are_declared(launch_file: str) -> None:
    tree = ast.parse((LAUNCH / launch_file).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = {ast.literal_eval(c.args[0]) for c in calls if _call_name(c) == "DeclareLaunchArgument"}
    assert declared >= LAUNCH_ARGS
    used = {ast.literal_eval(c.args[0]) for c in calls if _call_name(c) == "LaunchConfiguration"}
    assert used == declared, "every launch argument is used and every used one declared"
    scripts = console_scripts()
    nodes = [c for c in calls if _call_name(c) == "Node"]
    assert {ast.literal_eval(_kw(n, "executable")) for n in nodes} >= {"franka", "policy", "logger", "orchestrator"}
    params_path = LAUNCH / PARAM_FILE[launch_file]
    for node in nodes:
        assert ast.literal_eval(_kw(node, "package")) == "simbridge_ros"
        exe, name = ast.literal_eval(_kw(node, "executable")), ast.literal_eval(_kw(node, "name"))
        assert exe in scripts, f"{launch_file}: executable {exe!r} is not a console script of setup.py"
        params = _kw(node, "parameters")
        assert isinstance(params, ast.List) and isinstance(params.elts[0], ast.Name) and params.elts[0].id == "PARAMS"
        assert name in nodes_in(params_path), f"{params_path.name} has no section for node {name!r}"
        # The launch-time overrides (dict) name parameters the node really declares.
        declared_params = declared_parameters(scripts[exe])
        for key in (ast.literal_eval(k) for k in params.elts[1].keys):
            assert key in declared_params, f"{launch_file}: {name} has no parameter {key!r}"


@pytest.mark.parametrize("param_file", ["robot.yaml", "sim.yaml"])
def test_parameter_files_match_the_declared_parameters_and_types(param_file: str) -> None:
    """rcl refuses a parameter whose YAML type differs from the declared default (10 vs 10.0)."""
    path = LAUNCH / param_file
    scripts = console_scripts()
    for node in nodes_in(path):
        declared = declared_parameters(scripts[node])
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
