"""One camera fit for the robot and the simulation: centre crop to the contract's aspect, then INTER_AREA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from simbridge.data import images
from simbridge.data.images import center_crop_box, center_crop_resize, crop_resize_intrinsics
from simbridge.deploy.cameras import OpenCVCamera


def test_the_robot_and_the_simulation_use_the_same_function() -> None:
    from simbridge.deploy import cameras
    from simbridge.training.envs import wrapper

    assert cameras.center_crop_resize is images.center_crop_resize
    assert wrapper.center_crop_resize is images.center_crop_resize


def vga_frame() -> np.ndarray:
    """640 x 480 RGB: a 480 x 480 centred square of grey, 80 px red bands left and right, a white disc."""
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[:, :80] = (255, 0, 0)
    frame[:, 560:] = (255, 0, 0)
    cv2.circle(frame, (320, 240), 100, (255, 255, 255), -1)
    return frame


def test_a_640x480_frame_is_cropped_not_stretched() -> None:
    assert center_crop_box(480, 640, 128, 128) == (0, 80, 480, 480)
    out = center_crop_resize(vga_frame(), 128, 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert (out[..., 1] == 0).sum() == 0  # the red side bands were cut off, not squeezed in
    disc = np.argwhere(out[..., 2] > 200)
    height, width = np.ptp(disc, axis=0) + 1
    assert abs(height - width) <= 1  # the circle stays round (a squash would make it 4:3 narrower)
    assert abs(width - 200 * 128 / 480) <= 2


def test_same_size_is_returned_as_is_and_other_aspects_crop_the_long_side() -> None:
    img = np.zeros((128, 128, 3), np.uint8)
    assert center_crop_resize(img, 128, 128) is img
    assert center_crop_box(640, 480, 100, 100) == (80, 0, 480, 480)  # portrait: crop top and bottom
    assert center_crop_box(480, 640, 90, 160) == (60, 0, 360, 640)  # to 16:9: crop top and bottom
    assert center_crop_resize(np.zeros((480, 640), np.uint8), 96, 96).shape == (96, 96)
    with pytest.raises(ValueError):
        center_crop_box(0, 640, 128, 128)


def test_intrinsics_follow_the_crop() -> None:
    k = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    out = crop_resize_intrinsics(k, (640, 480), 128, 128)
    s = 128 / 480
    np.testing.assert_allclose(out, [[600 * s, 0, 63.5], [0, 600 * s, 63.5], [0, 0, 1]])
    # A 3-D point lands where the cropped, resized image shows it.
    frame = np.zeros((480, 640), np.uint8)
    frame[300:310, 400:410] = 255
    small = center_crop_resize(frame, 128, 128).astype(float)
    rows, cols = np.indices(small.shape)
    centroid = np.array([(cols * small).sum(), (rows * small).sum()]) / small.sum()
    pixel = np.array([404.5, 304.5])  # the blob's centre in the 640 x 480 frame
    ray = np.linalg.solve(k, [*pixel, 1.0])
    np.testing.assert_allclose((out @ ray)[:2], centroid, atol=0.05)


def test_the_camera_crops_its_frames(tmp_path) -> None:
    """OpenCVCamera on a 640 x 480 video file: frames come out cropped, not stretched."""
    path = tmp_path / "vga.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    assert writer.isOpened()
    writer.write(cv2.cvtColor(vga_frame(), cv2.COLOR_RGB2BGR))
    writer.release()
    with OpenCVCamera(path, width=128, height=128, fps=1000.0) as cam:
        frame, _ = cam.read()
    assert frame.shape == (128, 128, 3)
    assert (frame[..., 0].astype(int) - frame[..., 1] > 100).sum() == 0  # no red band (MJPG tolerated)
    disc = np.argwhere(frame.min(axis=-1) > 200)
    height, width = np.ptp(disc, axis=0) + 1
    assert abs(height - width) <= 2
