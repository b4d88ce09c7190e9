"""Evaluation orchestrator in the twin: a blinded, randomized protocol run end to end over ROS."""

from __future__ import annotations

import json

import pytest
from rclpy.parameter import Parameter
from simbridge_ros.franka import FrankaNode
from simbridge_ros.logger import LoggerNode
from simbridge_ros.orchestrator import OrchestratorNode
from simbridge_ros.policy import PolicyNode
from simbridge_ros.protocol import ConditionConfig, ProtocolConfig
from simbridge_ros.twin import TwinNode

from simbridge.data.store import EpisodeStore

from .conftest import wait_until

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration, pytest.mark.slow]


def test_twin_protocol_runs_labels_from_object_poses_and_records_every_episode(graph, twin, bundle_dir, tmp_path,
                                                                                loaded_machine_limits) -> None:
    protocol = ProtocolConfig(
        name="twin_test", policies={"sft": str(bundle_dir), "rl": str(bundle_dir / "latest")},
        conditions=[ConditionConfig(name="distractors", category="semantics", twin={"num_distractors": 1})],
        episodes_per_condition=1,
        episode_time_s=1.5, label="twin", seed=0,
    )
    store = tmp_path / "episodes.zarr"
    graph.add(TwinNode(twin, context=graph.context))
    graph.add(FrankaNode(context=graph.context, parameter_overrides=[
        Parameter("robot_ip", value=twin.hostname), Parameter("sim", value=True),
        Parameter("safety_limits_file", value=loaded_machine_limits)]))
    graph.add(PolicyNode(context=graph.context, parameter_overrides=[Parameter("enabled", value=False)]))
    graph.add(LoggerNode(context=graph.context, parameter_overrides=[
        Parameter("store", value=str(store)), Parameter("robot", value="franky-sim")]))
    orchestrator = graph.add(OrchestratorNode(protocol, context=graph.context, autostart=False,
                                              parameter_overrides=[Parameter("log_dir", value=str(tmp_path))]))
    orchestrator.start()
    wait_until(orchestrator.done.is_set, 90, "the protocol to finish")
    assert not orchestrator.error, orchestrator.error

    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["policy"] for r in rows) == ["rl", "sft"]
    blinding = json.loads((tmp_path / "blinding.json").read_text())
    assert sorted(blinding) == ["A", "B"] and all(blinding[r["blind_id"]] == r["policy"] for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {s["policy"] for s in summary["splits"]} == {"sft", "rl"}
    episodes = EpisodeStore(store)
    assert len(episodes) == 2
    for i, row in enumerate(rows):
        assert row["store_episode"] == i and row["steps"] > 0
        meta = episodes.meta(i)
        assert meta.policy_id == row["policy"] and meta.extra["blind_id"] == row["blind_id"]
        assert meta.success == row["success"] and meta.success_labeled_by == "env"
        assert meta.split == "distractors" and len(episodes.episode(i)["action"]) == row["steps"]
        assert meta.instruction == row["instruction"] and meta.instruction.startswith("put the")
    # The condition reached the twin's scene (a distractor next to the target object).
    assert twin.scene.num_distractors == 1 and len(twin.layout.objects) >= 2
