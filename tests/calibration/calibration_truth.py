"""Ground truth shared by the calibration tests: the camera and the board poses."""

from __future__ import annotations

import numpy as np

from simbridge.calibration.board import BoardConfig
from simbridge.calibration.synthetic import default_camera_matrix, look_at_board

TRUE_K = default_camera_matrix((640, 480))
TRUE_DIST = np.array([-0.12, 0.04, 0.0006, -0.0004, 0.0])
NUM_VIEWS = 11


def intrinsics_poses(board: BoardConfig, n: int = NUM_VIEWS, seed: int = 3) -> list[np.ndarray]:
    """Board poses that tilt 20-35 degrees in varied directions and sweep the image."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        angle = np.radians(rng.uniform(20, 35))
        direction = 2 * np.pi * i / n
        tilt = (np.degrees(angle * np.cos(direction)), np.degrees(angle * np.sin(direction)), rng.uniform(-15, 15))
        offset = (0.11 * np.cos(direction + 2.0), 0.08 * np.sin(direction + 2.0))
        poses.append(look_at_board(board, rng.uniform(0.27, 0.36), tilt, offset))
    return poses
