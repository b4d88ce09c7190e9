"""The nodes as the separate processes ``ros2 launch`` starts, with launch_ros's command line.

``launch`` itself is not on PyPI; what it does is start ``<exe> --ros-args -r __node:=<name>
--params-file <base> --params-file <overrides>`` per node. These tests do exactly that (the
overrides written by the same node-graph code the launch files call) and read the parameters back
from each running process over its ``~/get_parameters`` service, as ``ros2 param get`` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from sensor_msgs.msg import Image
from simbridge_ros.common import RELIABLE, image_topic

from simbridge.deploy.node_graph import ROBOT_GRAPH, SIM_GRAPH, Plan, plan, write_overrides
from simbridge.deploy.supervisor import node_command

from .conftest import ROS_PACKAGE_SRC, Probe, wait_until
from .test_camera_node import write_video
from .test_launch_files import two_camera_export

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """One node started as launch starts it; its output collected for assertions."""

    def __init__(self, planned: Plan, name: str, overrides_file: Path) -> None:
        import os

        env = {**os.environ, "PYTHONPATH": str(ROS_PACKAGE_SRC), "PYTHONUNBUFFERED": "1"}
        cmd = node_command(planned.node(name), planned.params_file, overrides_file)
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, as launch does
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)


def parameters(probe: Probe, node: str, names: list[str]) -> dict[str, tuple[int, object]]:
    """``{name: (ParameterType, value)}`` read from the running node, as ``ros2 param get`` does."""
    response = probe.call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=names), timeout=60)
    out = {}
    for name, value in zip(names, response.values, strict=True):
        field = {ParameterType.PARAMETER_STRING: "string_value", ParameterType.PARAMETER_STRING_ARRAY:
                 "string_array_value", ParameterType.PARAMETER_BOOL: "bool_value",
                 ParameterType.PARAMETER_INTEGER: "integer_value", ParameterType.PARAMETER_DOUBLE: "double_value"}
        attr = field.get(value.type)
        out[name] = (value.type, list(getattr(value, attr)) if value.type == ParameterType.PARAMETER_STRING_ARRAY
                     else getattr(value, attr) if attr else None)
    return out


def test_sim_graph_processes_take_their_launch_arguments_and_franka_waits_for_the_twin(
        graph, tmp_path: Path, bundle_dir: Path) -> None:
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(f"name: launch_args\npolicies: {{sft: '{bundle_dir / 'latest'}'}}\nepisodes_per_condition: 1\n"
                        "episode_time_s: 2.0\nlabel: twin\nconditions:\n  - {name: base, category: train}\n")
    args = {"bundle": str(bundle_dir / "latest"), "instruction": "put the blue can on the tray",
            "log_dir": str(tmp_path / "eval"), "cameras": "scene", "protocol": str(protocol),
            "protocol_set": "episode_time_s=3.0 seed=7"}
    planned = plan(SIM_GRAPH, args)
    overrides = write_overrides(planned.nodes, tmp_path / "overrides.yaml")
    probe = graph.add(Probe(graph.context))
    procs: dict[str, NodeProcess] = {}
    try:
        # Start order must not matter: the franka node first, the twin it needs seconds later.
        procs["franka"] = NodeProcess(planned, "franka", overrides)
        wait_until(lambda: "waiting for the twin" in procs["franka"].output, 60, "franka waiting for the twin",
                   detail=lambda: procs["franka"].output[-2000:])
        time.sleep(2.0)
        assert procs["franka"].proc.poll() is None, procs["franka"].output
        for name in ["twin", "policy", "logger", "orchestrator"]:
            procs[name] = NodeProcess(planned, name, overrides)
        twin_line = wait_until(lambda: next((ln for ln in procs["twin"].lines if "twin running at" in ln), None), 90,
                               "the twin to start", detail=lambda: procs["twin"].output[-2000:])
        host = twin_line.split("twin running at ")[1].split(",")[0]
        wait_until(lambda: f"franka ready at {host}" in procs["franka"].output, 60,
                   f"franka connected to the twin at {host}", detail=lambda: procs["franka"].output[-2000:])

        S, SA = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_STRING_ARRAY
        assert parameters(probe, "twin", ["cameras"]) == {"cameras": (SA, ["scene"])}
        assert parameters(probe, "policy", ["bundle", "instruction"]) == {
            "bundle": (S, args["bundle"]), "instruction": (S, args["instruction"])}
        assert parameters(probe, "logger", ["store", "instruction"]) == {
            "store": (S, str(tmp_path / "eval" / "episodes.zarr")), "instruction": (S, args["instruction"])}
        assert parameters(probe, "orchestrator", ["protocol", "log_dir", "protocol_overrides"]) == {
            "protocol": (S, str(protocol)), "log_dir": (S, args["log_dir"]),
            "protocol_overrides": (SA, ["episode_time_s=3.0", "seed=7"])}
        # The orchestrator found every service it needs and runs the protocol it was given.
        wait_until(lambda: "state=trial" in procs["orchestrator"].output, 120, "the first trial",
                   detail=lambda: procs["orchestrator"].output[-2000:])
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
    assert "Traceback" not in "".join(p.output for p in procs.values())


def test_robot_graph_processes_take_robot_ip_and_camera_as_strings(graph, tmp_path: Path) -> None:
    """robot_ip:= reaches the driver (it was silently replaced by robot.yaml's address before), and
    camera:=2 arrives as the string the camera node declares, not an integer."""
    planned = plan(ROBOT_GRAPH, {"robot_ip": "127.0.0.99", "camera": "2", "instruction": "wave"})
    overrides = write_overrides(planned.nodes, tmp_path / "overrides.yaml")
    probe = graph.add(Probe(graph.context))
    camera = NodeProcess(planned, "camera_scene", overrides)
    franka = NodeProcess(planned, "franka", overrides)
    try:
        assert parameters(probe, "camera_scene", ["source"]) == {"source": (ParameterType.PARAMETER_STRING, "2")}
        assert franka.proc.wait(timeout=60) == 1, franka.output
        assert "waiting for the robot at 127.0.0.99" in franka.output
        assert "cannot start: RobotError: gave up connecting to 127.0.0.99 after 5 s" in franka.output
        assert "Traceback" not in franka.output
    finally:
        camera.stop()
        franka.stop()


def test_a_two_camera_bundle_starts_two_camera_processes_that_both_publish(graph, tmp_path: Path) -> None:
    """The robot plan of a scene + wrist bundle, each camera node from its own video file, as launch starts them."""
    export = two_camera_export(tmp_path / "export")
    write_video(tmp_path / "scene.avi")
    write_video(tmp_path / "wrist.avi")
    planned = plan(ROBOT_GRAPH, {"robot_ip": "127.0.0.99", "bundle": str(export),
                                 "camera_sources": f"scene={tmp_path / 'scene.avi'} wrist={tmp_path / 'wrist.avi'}"})
    overrides = write_overrides(planned.nodes, tmp_path / "overrides.yaml")
    probe = graph.add(Probe(graph.context))
    for cam in ("scene", "wrist"):
        probe.listen(Image, image_topic(cam), RELIABLE)
    procs = [NodeProcess(planned, f"camera_{cam}", overrides) for cam in ("scene", "wrist")]
    try:
        for cam, proc in zip(("scene", "wrist"), procs, strict=True):
            msg = wait_until(lambda c=cam: probe.last.get(image_topic(c)), 60, f"an image from camera_{cam}",
                             detail=lambda p=proc: p.output[-2000:])
            assert (msg.width, msg.height, msg.header.frame_id) == (128, 96, f"{cam}_camera_optical_frame")
    finally:
        for proc in procs:
            proc.stop()
    assert "Traceback" not in "".join(p.output for p in procs)


def simbridge(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simbridge.data.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_a_required_node_that_exits_takes_the_graph_down_with_the_reason() -> None:
    t0 = time.monotonic()
    out = simbridge("deploy", "--processes", "--robot-ip", "127.0.0.99", timeout=120)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "required node 'franka' exited with code 1" in out.stderr
    assert "[franka] [FrankaNode] cannot start: RobotError: gave up connecting to 127.0.0.99" in out.stdout
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in out.stdout + out.stderr


def test_deploy_processes_runs_a_twin_protocol_to_its_summary(tmp_path: Path, bundle_dir: Path) -> None:
    """The ros2 launch path without launch: one process per node, the protocol runs, the graph exits 0."""
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(f"name: processes\npolicies: {{sft: '{bundle_dir / 'latest'}'}}\nepisodes_per_condition: 1\n"
                        "episode_time_s: 6.0\nlabel: twin\nconditions:\n  - {name: base, category: train}\n")
    limits = tmp_path / "limits.yaml"  # see loaded_machine_limits in conftest.py
    limits.write_text("max_command_age_s: 1.0\n")
    out = simbridge("deploy", "--sim", "--processes", "--protocol", str(protocol), "--log-dir", str(tmp_path / "eval"),
                    "--set", f"franka.safety_limits_file={limits}", "--set", "policy.max_observation_age_s=2.0",
                    timeout=240)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    assert "the evaluation protocol finished" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "eval" / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["steps"] > 0, out.stdout[-4000:]
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["splits"][0]["episodes"] == 1
