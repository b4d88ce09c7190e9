"""twin node: renders the franky-sim scene camera to ROS images, reports success, resets layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from simbridge_ros.common import (
    LATCHED,
    RELIABLE,
    TWIN_SUCCESS_TOPIC,
    camera_info_topic,
    image_topic,
    msg_to_image,
)
from simbridge_ros.twin import TwinNode
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from .conftest import Probe, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration]


def test_twin_node_publishes_camera_images_success_and_resets(graph, twin) -> None:
    probe = graph.add(Probe(graph.context))
    probe.listen(Image, image_topic("scene"), RELIABLE, keep=True)
    probe.listen(CameraInfo, camera_info_topic("scene"), RELIABLE)
    probe.listen(Bool, TWIN_SUCCESS_TOPIC, LATCHED)
    node = graph.add(TwinNode(twin, context=graph.context, parameter_overrides=[
        Parameter("cameras", value=["scene"]), Parameter("camera_rate_hz", value=10.0)]))
    wait_until(lambda: len(probe.history.get(image_topic("scene"), [])) >= 3, 15, "three twin frames")
    msg = probe.last[image_topic("scene")]
    assert (msg.encoding, msg.height, msg.width) == ("rgb8", 128, 128)
    frame = msg_to_image(msg)
    assert frame.std() > 5.0  # a rendered scene, not a blank image
    info = wait_until(lambda: probe.last.get(camera_info_topic("scene")), 5, "camera info")
    assert (info.width, info.height) == (128, 128) and info.k[8] == 1.0
    assert wait_until(lambda: probe.last.get(TWIN_SUCCESS_TOPIC), 5, "the success flag").data is False
    before = frame
    response = probe.call(Trigger, "/twin/reset", Trigger.Request())
    assert response.success, response.message
    assert json.loads(response.message)["instruction"].startswith("put the")
    # A new layout shows up in the next frames.
    n = len(probe.history[image_topic("scene")])
    wait_until(lambda: len(probe.history[image_topic("scene")]) >= n + 2, 10, "frames after the reset")
    after = msg_to_image(probe.last[image_topic("scene")])
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 0.5
    assert node.render_errors == 0
