"""Intrinsics from rendered views with known K and distortion: accuracy, outliers, feedback, I/O."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from calibration_truth import TRUE_DIST, TRUE_K, intrinsics_poses

from simbridge.calibration.board import BoardDetection
from simbridge.calibration.camera_info import CalibrationFileError, load_camera_info, write_camera_info
from simbridge.calibration.intrinsics import (
    CalibrationError,
    CoverageGrid,
    IntrinsicsCalibrator,
    IntrinsicsConfig,
    calibrate_frames,
    calibrate_intrinsics,
    iter_image_folder,
    iter_video_frames,
)
from simbridge.calibration.synthetic import look_at_board, project_board


@pytest.fixture(scope="module")
def calibrated(intrinsics_images, board):
    return calibrate_frames(iter_image_folder(intrinsics_images), board)


def test_rendered_views_give_intrinsics_within_one_percent(calibrated):
    K = calibrated.K
    for (i, j), name in {(0, 0): "fx", (1, 1): "fy", (0, 2): "cx", (1, 2): "cy"}.items():
        assert abs(K[i, j] - TRUE_K[i, j]) / TRUE_K[i, j] < 0.01, (name, K[i, j], TRUE_K[i, j])
    assert calibrated.dist[0] == pytest.approx(TRUE_DIST[0], abs=0.02)  # k1 (the dominant term)
    assert calibrated.rms_px < 0.5
    assert calibrated.num_kept == len(calibrated.views) >= 10


def test_camera_info_yaml_round_trips_in_ros_layout(calibrated, tmp_path):
    import yaml

    path = calibrated.write(tmp_path / "wrist.yaml", camera_name="wrist")
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                        "distortion_coefficients", "rectification_matrix", "projection_matrix"}
    assert raw["camera_matrix"]["rows"] == 3 and raw["projection_matrix"]["cols"] == 4
    assert raw["distortion_model"] == "plumb_bob"
    K, dist, size, name = load_camera_info(path)
    np.testing.assert_allclose(K, calibrated.K)
    np.testing.assert_allclose(dist, calibrated.dist)
    assert size == (640, 480) and name == "wrist"


def test_camera_info_loader_names_bad_files(tmp_path):
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_camera_info(tmp_path / "missing.yaml")
    path = write_camera_info(tmp_path / "c.yaml", TRUE_K, np.zeros(5), (640, 480))
    path.write_text(path.read_text().replace("camera_matrix", "camera_matrx"))
    with pytest.raises(CalibrationFileError, match="camera_matrix"):
        load_camera_info(path)


def _ideal_detections(board, noise_px=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return [project_board(board, TRUE_K, T, (640, 480), TRUE_DIST, noise_px=noise_px, rng=rng)
            for T in intrinsics_poses(board, n=12, seed=seed)]


def test_outlier_view_is_rejected_and_solution_recovers(board):
    detections = _ideal_detections(board)
    # A mis-detected view: right corner ids at wrong places (as after a bad marker decode).
    bad = detections[3]
    shifted = bad.corners + np.random.default_rng(1).normal(0, 4.0, bad.corners.shape)
    detections.append(BoardDetection(shifted, bad.ids, bad.image_size))
    result = calibrate_intrinsics(detections, (640, 480), board)
    assert [v.rejected for v in result.views] == [False] * 12 + [True]
    assert result.views[-1].error_px > 1.0
    assert np.abs(result.K[0, 0] - TRUE_K[0, 0]) / TRUE_K[0, 0] < 0.005


def test_too_many_bad_views_fail_with_advice(board):
    detections = _ideal_detections(board, noise_px=3.0)
    with pytest.raises(CalibrationError, match="board config"):
        calibrate_intrinsics(detections, (640, 480), board, IntrinsicsConfig(max_view_error_px=0.5))


def test_coverage_feedback_names_missing_regions(board):
    calibrator = IntrinsicsCalibrator(board)
    # One view of the board in the middle of the image: the corners are still missing.
    feedback = calibrator.add_detection(project_board(board, TRUE_K, look_at_board(board, 0.5), (640, 480)))
    assert feedback.accepted and feedback.coverage < 0.5
    assert "top-left" in feedback.missing and "bottom-right" in feedback.missing
    # The same view again adds nothing.
    again = calibrator.add_detection(project_board(board, TRUE_K, look_at_board(board, 0.5), (640, 480)))
    assert not again.accepted and "too close" in again.reason
    with pytest.raises(CalibrationError, match="need at least 8"):
        calibrator.calibrate()


def test_coverage_grid_counts_cells():
    grid = CoverageGrid((600, 400), (3, 2))
    grid.add(np.array([[10.0, 10.0], [590.0, 390.0]]))
    assert grid.fraction == pytest.approx(2 / 6)
    assert grid.missing_cells() == [(1, 0), (2, 0), (0, 1), (1, 1)]
    assert grid.ascii_map() == "+..\n..+"


def test_video_source_yields_frames_and_missing_video_is_named(intrinsics_images, tmp_path, board):
    path = tmp_path / "views.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (640, 480))
    images = list(iter_image_folder(intrinsics_images))[:3]
    for _, rgb in images:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    frames = list(iter_video_frames(str(path), stride=1))
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[1][1], images[1][1])  # lossless: identical pixels
    calibrator = IntrinsicsCalibrator(board)
    assert all(calibrator.add_frame(frame).accepted for _, frame in frames)
    with pytest.raises(CalibrationError, match="does not exist"):
        list(iter_video_frames(str(tmp_path / "nope.mp4")))
