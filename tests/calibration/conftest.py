"""Shared synthetic calibration data: rendered board views with known K, distortion and poses.

Rendering costs ~0.2 s per view, so the image sets are built once per session.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from calibration_truth import TRUE_DIST, TRUE_K, intrinsics_poses

from simbridge.calibration.board import BoardConfig, write_board_files
from simbridge.calibration.camera_info import CameraIntrinsics, write_camera_info
from simbridge.calibration.geometry import matrix_to_pose7
from simbridge.calibration.handeye_poses import generate_poses
from simbridge.calibration.synthetic import (
    example_rig,
    render_board_view,
)


@pytest.fixture(scope="session")
def board() -> BoardConfig:
    return BoardConfig()


@pytest.fixture(scope="session")
def board_yaml(tmp_path_factory, board) -> str:
    return str(write_board_files(board, tmp_path_factory.mktemp("board"))["yaml"])


@pytest.fixture(scope="session")
def intrinsics_images(tmp_path_factory, board):
    """A folder of rendered views (distorted lens, mild image noise) and the true poses."""
    folder = tmp_path_factory.mktemp("intrinsics_views")
    rng = np.random.default_rng(7)
    for i, T in enumerate(intrinsics_poses(board)):
        image = render_board_view(board, TRUE_K, T, (640, 480), TRUE_DIST, noise_sigma=2.0, rng=rng)
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def true_camera_info(tmp_path_factory) -> str:
    return str(write_camera_info(tmp_path_factory.mktemp("cam") / "camera_info.yaml", TRUE_K, np.zeros(5),
                                 (640, 480), "wrist"))


@pytest.fixture(scope="session")
def handeye_data(tmp_path_factory, board):
    """Rendered eye-in-hand views + reported ee poses in the on-disk format; and the rig (truth)."""
    folder = tmp_path_factory.mktemp("handeye_views")
    rig, centre = example_rig("eye_in_hand", board, render=True, K=TRUE_K)
    poses = generate_poses(centre, 10, pivot_in_ee=(0, 0, 0.40), seed=1)
    with open(folder / "views.jsonl", "w") as f:
        for i, pose in enumerate(poses):
            reported = rig.move_to(pose)
            cv2.imwrite(str(folder / f"view_{i:03d}.png"), cv2.cvtColor(rig.capture(), cv2.COLOR_RGB2BGR))
            f.write(json.dumps({"image": f"view_{i:03d}.png", "ee_pose": matrix_to_pose7(reported).tolist()}) + "\n")
    return folder, rig, CameraIntrinsics(TRUE_K, np.zeros(5), (640, 480), "wrist")
