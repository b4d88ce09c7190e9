"""Cameras: OpenCV capture from a video file written here (real decoder), its end, a lost file, no device."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from simbridge.deploy.cameras import CameraError, OpenCVCamera, RealSenseCamera, make_camera

N_FRAMES = 12


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A 12-frame MJPG AVI: frame i is a 64x48 image whose red channel encodes i (BGR on disk)."""
    path = tmp_path_factory.mktemp("cam") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[..., 2] = 20 * i  # red in BGR order
        bgr[..., 0] = 200  # constant blue
        writer.write(bgr)
    writer.release()
    return str(path)


def test_reads_rgb_frames_at_the_spec_size_with_timestamps(video):
    with OpenCVCamera(video, width=32, height=24, fps=100.0) as cam:
        frames = [cam.read() for _ in range(5)]
    for i, (frame, stamp) in enumerate(frames):
        assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
        assert abs(float(frame[..., 0].mean()) - 20 * i) < 6  # red channel first: BGR -> RGB
        assert abs(float(frame[..., 2].mean()) - 200) < 6
        assert abs(stamp - time.time()) < 5
    stamps = [s for _, s in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # The file plays at the nominal rate: a late frame may catch up by at most one period, so four
    # intervals span at least two periods under any load (unpaced, five reads take ~1 ms).
    assert stamps[-1] - stamps[0] >= 2 / 100.0


def test_survives_the_end_of_the_video_file(video):
    cam = OpenCVCamera(video, width=64, height=48, fps=500.0)
    reds = [float(cam.read()[0][..., 0].mean()) for _ in range(N_FRAMES + 3)]
    cam.disconnect()
    assert cam.frames == N_FRAMES + 3 and cam.reconnects == 1
    assert reds[N_FRAMES] < 6 and abs(reds[N_FRAMES + 2] - 40) < 6  # restarted at frame 0
    assert cam.stats()["reconnects"] == 1 and cam.fps > 0


def test_video_file_lost_mid_stream_raises_after_reconnect_attempts(video, tmp_path):
    copy = tmp_path / "gone.avi"
    copy.write_bytes(Path(video).read_bytes())
    cam = OpenCVCamera(copy, fps=1000.0, max_reconnects=2)
    for _ in range(N_FRAMES):
        cam.read()
    copy.unlink()  # the "camera" disappears
    with pytest.raises(CameraError, match="reconnect attempt"):
        cam.read()
    assert cam.reconnects == 2
    cam.disconnect()


def test_drop_counter_counts_missed_frames(video):
    cam = OpenCVCamera(video, fps=50.0, realtime_video=False)
    cam.read()
    time.sleep(0.1)  # ~5 periods without reading: 4 frames missed
    cam.read()
    assert 3 <= cam.drops <= 6
    cam.disconnect()


def test_missing_device_and_file_give_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="plugged in"):
        OpenCVCamera(97).connect()
    with pytest.raises(CameraError, match="does not exist"):
        OpenCVCamera(tmp_path / "nope.avi").connect()
    not_video = tmp_path / "notes.txt"
    not_video.write_text("not a video")
    with pytest.raises(CameraError, match="decode"):
        OpenCVCamera(not_video).connect()


def test_make_camera_picks_the_backend(video):
    assert isinstance(make_camera(video), OpenCVCamera)
    assert make_camera("0").source == 0
    rs = make_camera("realsense:123", width=64, height=48)
    assert isinstance(rs, RealSenseCamera) and rs.serial == "123"
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        with pytest.raises(CameraError, match="pip install pyrealsense2"):
            rs.connect()
