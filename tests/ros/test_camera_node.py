"""camera node from a video file: publishes rgb8 images + CameraInfo, survives the end of the file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from simbridge_ros.camera import CameraNode, camera_source
from simbridge_ros.common import (
    RELIABLE,
    camera_diagnostics_topic,
    camera_info_topic,
    image_topic,
    msg_to_image,
)
from std_msgs.msg import String

from simbridge.calibration.camera_info import write_camera_info

from .conftest import Probe, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.integration]

N_FRAMES = 12


def write_video(path: Path, w: int = 64, h: int = 48) -> None:
    """Frame i: a uniform colour whose red channel encodes i (survives MJPG compression)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = 20 * i  # red
        rgb[..., 2] = 200  # blue
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_camera_node_streams_a_video_file_and_reconnects_at_its_end(graph, tmp_path) -> None:
    video = tmp_path / "scene.avi"
    write_video(video)
    # Calibrated at 128x96 (simbridge calibrate intrinsics); published at 64x48 (same aspect: no crop):
    # f scales by 1/2, the principal point as pixel centres do under the resize: (c + 0.5) / 2 - 0.5.
    calib = write_camera_info(tmp_path / "calib.yaml", np.array([[120.0, 0, 64.0], [0, 122.0, 48.0], [0, 0, 1]]),
                              np.array([0.1, -0.01, 0, 0, 0]), (128, 96), camera_name="scene")
    probe = graph.add(Probe(graph.context))
    probe.listen(Image, image_topic("scene"), RELIABLE, keep=True)
    probe.listen(CameraInfo, camera_info_topic("scene"), RELIABLE)
    probe.listen(String, camera_diagnostics_topic("scene"), 10)
    node = graph.add(CameraNode(context=graph.context, parameter_overrides=[
        Parameter("name", value="scene"), Parameter("source", value=str(video)), Parameter("width", value=64),
        Parameter("height", value=48), Parameter("fps", value=30.0), Parameter("calibration", value=str(calib))]))
    # Three passes through a 12-frame file: the node must reopen it after each end.
    wait_until(lambda: len(probe.history.get(image_topic("scene"), [])) >= 3 * N_FRAMES, 30, "three passes")
    msgs = [m for _, m in probe.history[image_topic("scene")]]
    assert all((m.encoding, m.width, m.height) == ("rgb8", 64, 48) for m in msgs)
    red = [round(msg_to_image(m)[..., 0].mean() / 20) for m in msgs]
    blue = [msg_to_image(m)[..., 2].mean() for m in msgs]
    assert min(blue) > 180  # RGB order (OpenCV's BGR was converted)
    wraps = sum(1 for a, b in itertools.pairwise(red) if b < a)
    assert wraps >= 2 and red[0] == 0 and max(red) == N_FRAMES - 1
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    info = probe.last[camera_info_topic("scene")]
    assert list(info.k) == [60.0, 0.0, 31.75, 0.0, 61.0, 23.75, 0.0, 0.0, 1.0] and info.d[0] == pytest.approx(0.1)
    assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (64, 48)
    diag = wait_until(lambda: (d := json.loads(probe.last[camera_diagnostics_topic("scene")].data))["reconnects"] >= 2
                      and d["frames"] >= 3 * N_FRAMES and d, 5, "reconnects in the diagnostics")
    assert diag["state"] == "streaming" and diag["fps"] > 5
    assert node.diagnostics()["reconnects"] >= 2


def test_camera_node_keeps_retrying_a_missing_device(graph, tmp_path) -> None:
    probe = graph.add(Probe(graph.context))
    probe.listen(String, camera_diagnostics_topic("wrist"), 10)
    graph.add(CameraNode(context=graph.context, parameter_overrides=[
        Parameter("name", value="wrist"), Parameter("source", value=str(tmp_path / "nothing.avi"))]))
    diag = wait_until(lambda: probe.last.get(camera_diagnostics_topic("wrist")), 5, "diagnostics")
    status = json.loads(diag.data)
    assert status["state"] == "reconnecting" and status["frames"] == 0 and status["last_error"]


def test_a_camera_node_per_contract_camera_takes_its_name_from_the_node_and_a_serial_picks_a_realsense(
        graph, tmp_path) -> None:
    assert camera_source("", "123") == camera_source("realsense", "123") == "realsense:123"
    assert camera_source("/dev/video4", "") == "/dev/video4"
    with pytest.raises(ValueError, match=r"serial '123' names a RealSense camera but source is '0'"):
        camera_source("0", "123")
    node = graph.add(CameraNode(name="camera_wrist", context=graph.context, parameter_overrides=[
        Parameter("source", value=str(tmp_path / "nothing.avi"))]))
    assert node.cam_name == "wrist" and node.pub_image.topic_name == image_topic("wrist")
    with pytest.raises(ValueError, match=r"camera 'front' has no source: set camera_front.source"):
        CameraNode(name="camera_front", context=graph.context, parameter_overrides=[Parameter("source", value="")])
