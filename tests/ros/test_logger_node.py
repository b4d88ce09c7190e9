"""logger node: a complete episode (images, state, actions, interventions, metadata) lands in the store."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from simbridge_ros.common import (
    EE_POSE_TOPIC,
    EXECUTED_ACTION_TOPIC,
    JOINT_STATES_TOPIC,
    POLICY_ACTION_TOPIC,
    RELIABLE,
    action_to_msg,
    image_to_msg,
    image_topic,
    joint_state_msg,
    pose_msg,
)
from simbridge_ros.logger import LoggerNode
from std_srvs.srv import SetBool, Trigger

from simbridge.data.store import EpisodeStore

from .conftest import Probe, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.integration]


def test_logger_records_a_complete_labelled_episode(graph, tmp_path) -> None:
    store_path = tmp_path / "episodes.zarr"
    params = [Parameter("store", value=str(store_path)), Parameter("cameras", value=["scene"]),
              Parameter("instruction", value="put the red cube on the plate"), Parameter("policy_id", value="abc123"),
              Parameter("condition", value="lighting"), Parameter("seed", value=7), Parameter("robot", value="franky-sim")]
    logger = graph.add(LoggerNode(context=graph.context, parameter_overrides=params))
    probe = graph.add(Probe(graph.context))
    pubs = {t: probe.publisher(m, t, q) for t, m, q in [
        (image_topic("scene"), Image, RELIABLE), (JOINT_STATES_TOPIC, JointState, RELIABLE),
        (EE_POSE_TOPIC, PoseStamped, RELIABLE), (POLICY_ACTION_TOPIC, JointState, 10),
        (EXECUTED_ACTION_TOPIC, JointState, 10)]}
    for topic in pubs:
        probe.wait_for_subscriber(topic)

    rng = np.random.default_rng(0)
    n = 12
    frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    poses = np.tile(np.array([0.3, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0], np.float32), (n, 1))
    poses[:, 0] += np.arange(n) * 0.01
    executed = rng.uniform(-0.02, 0.02, (n, 7)).astype(np.float32)
    intervention = np.arange(n) % 4 == 3  # every 4th step the operator acted
    proposed = executed + 0.001

    def publish_observation(i: int) -> None:
        t = time.time()
        pubs[image_topic("scene")].publish(image_to_msg(frames[i], t, "scene"))
        pubs[JOINT_STATES_TOPIC].publish(joint_state_msg(np.full(7, 0.1 * i), 0.04, t))
        pubs[EE_POSE_TOPIC].publish(pose_msg(poses[i], t))

    publish_observation(0)
    wait_until(lambda: "scene" in logger.images and "ee_pose" in logger.state, 5, "the logger to see the observation")
    assert probe.call(Trigger, "/logger/start", Trigger.Request()).success
    for i in range(n):
        publish_observation(i)
        # The logger pairs each executed action with the latest observation: wait until it has step i's.
        wait_until(lambda i=i: np.array_equal(logger.images.get("scene"), frames[i])
                   and np.allclose(logger.state["ee_pose"], poses[i], atol=1e-6), 5, f"observation {i}")
        pubs[POLICY_ACTION_TOPIC].publish(action_to_msg(proposed[i], "policy:abc123", time.time()))
        wait_until(lambda i=i: logger.policy_action is not None and np.allclose(logger.policy_action[0], proposed[i]),
                   5, f"policy action {i}")
        source = "teleop:keyboard" if intervention[i] else "policy:abc123"
        pubs[EXECUTED_ACTION_TOPIC].publish(action_to_msg(executed[i], source, time.time(), bool(intervention[i])))
        wait_until(lambda i=i: logger.steps == i + 1, 5, f"step {i} recorded")
    stop = probe.call(Trigger, "/logger/stop", Trigger.Request())
    assert stop.success, stop.message
    assert json.loads(stop.message) == {"episode": 0, "steps": n}
    assert probe.call(SetBool, "/logger/label", SetBool.Request(data=True)).success

    store = EpisodeStore(store_path)
    assert len(store) == 1
    ep = store.episode(0)
    np.testing.assert_array_equal(ep["image_scene"], frames)
    np.testing.assert_allclose(ep["action"], executed, atol=1e-6)
    np.testing.assert_allclose(ep["policy_action"], proposed, atol=1e-6)
    np.testing.assert_array_equal(ep["intervention"], intervention)
    np.testing.assert_allclose(ep["ee_pose"], poses, atol=1e-6)
    np.testing.assert_allclose(ep["joint_positions"][:, 0], 0.1 * np.arange(n), atol=1e-6)
    np.testing.assert_allclose(ep["gripper_width"], 0.04, atol=1e-6)
    assert np.all(np.diff(ep["timestamp"]) > 0)
    meta = store.meta(0)
    assert (meta.instruction, meta.policy_id, meta.split, meta.seed) == ("put the red cube on the plate", "abc123",
                                                                         "lighting", 7)
    assert meta.num_interventions == int(intervention.sum()) and meta.robot == "franky-sim"
    assert meta.success is True and meta.success_labeled_by == "operator:operator"


def test_logger_refuses_to_start_without_images_and_discards_empty_episodes(graph, tmp_path) -> None:
    params = [Parameter("store", value=str(tmp_path / "e.zarr")), Parameter("cameras", value=["wrist"])]
    graph.add(LoggerNode(context=graph.context, parameter_overrides=params))
    probe = graph.add(Probe(graph.context))
    start = probe.call(Trigger, "/logger/start", Trigger.Request())
    assert not start.success and "wrist" in start.message
    stop = probe.call(Trigger, "/logger/stop", Trigger.Request())
    assert not stop.success and "no episode" in stop.message
    assert not (tmp_path / "e.zarr").exists()  # nothing created before a real episode
