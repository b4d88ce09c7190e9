"""Camera intrinsics on disk: the ROS ``camera_info`` YAML (camera_calibration_parsers format).

The same file works with ROS tools (``camera_info_manager``, ``image_proc``) and with the
SimBridge camera node, which loads it with :func:`load_camera_info`:

    >>> K, dist, (width, height) = load_camera_info("camera_info/wrist.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import yaml

#: ROS distortion model names by number of coefficients OpenCV returns.
_MODELS = {5: "plumb_bob", 8: "rational_polynomial"}


class CalibrationFileError(ValueError):
    """A calibration file is missing or malformed; the message names the file, the key and the fix."""


class CameraIntrinsics(NamedTuple):
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,) plumb_bob or (8,) rational_polynomial
    image_size: tuple[int, int]  # (width, height)
    camera_name: str = "camera"


def _matrix(rows: int, cols: int, data: np.ndarray) -> dict:
    return {"rows": rows, "cols": cols, "data": [float(x) for x in np.asarray(data, dtype=np.float64).ravel()]}


def camera_info_dict(K: np.ndarray, dist: np.ndarray, image_size: tuple[int, int], camera_name: str = "camera",
                     alpha: float = 0.0) -> dict:
    """The camera_info mapping; ``projection_matrix`` is OpenCV's optimal new camera matrix
    for ``alpha`` (0: only valid pixels after rectification), as ROS's calibrator writes it."""
    dist = np.asarray(dist, dtype=np.float64).ravel()
    if len(dist) not in _MODELS:
        raise ValueError(f"distortion with {len(dist)} coefficients: expected 5 (plumb_bob) or 8 (rational_polynomial)")
    new_K, _ = cv2.getOptimalNewCameraMatrix(K, dist, tuple(image_size), alpha, tuple(image_size))
    P = np.zeros((3, 4))
    P[:, :3] = new_K
    return {
        "image_width": int(image_size[0]),
        "image_height": int(image_size[1]),
        "camera_name": camera_name,
        "camera_matrix": _matrix(3, 3, K),
        "distortion_model": _MODELS[len(dist)],
        "distortion_coefficients": _matrix(1, len(dist), dist),
        "rectification_matrix": _matrix(3, 3, np.eye(3)),
        "projection_matrix": _matrix(3, 4, P),
    }


def write_camera_info(path: str | Path, K: np.ndarray, dist: np.ndarray, image_size: tuple[int, int],
                      camera_name: str = "camera", comment: str = "") -> Path:
    """Write the camera_info YAML atomically (a half-written file never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(camera_info_dict(K, dist, image_size, camera_name), sort_keys=False)
    if comment:
        text = "".join(f"# {line}\n" for line in comment.splitlines()) + text
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _read_matrix(raw: dict, key: str, path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    entry = raw.get(key)
    if not isinstance(entry, dict) or "data" not in entry:
        raise CalibrationFileError(f"{path}: key '{key}' missing or not a {{rows, cols, data}} mapping; "
                                   "re-run 'simbridge calibrate intrinsics' to regenerate the file")
    data = np.asarray(entry["data"], dtype=np.float64)
    rows, cols = int(entry.get("rows", 1)), int(entry.get("cols", data.size))
    if data.size != rows * cols or (shape is not None and (rows, cols) != shape):
        raise CalibrationFileError(f"{path}: '{key}' has {data.size} values for rows={rows} cols={cols}"
                                   f"{f', expected {shape}' if shape else ''}")
    if not np.isfinite(data).all():
        raise CalibrationFileError(f"{path}: '{key}' holds non-finite values")
    return data.reshape(rows, cols)


def load_camera_info(path: str | Path) -> CameraIntrinsics:
    """``(K, dist, (width, height), camera_name)`` from a ROS camera_info YAML."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"camera info {path} does not exist; create it with "
                                   "'simbridge calibrate intrinsics ... -o {path}'")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CalibrationFileError(f"{path}: expected a camera_info mapping")
    try:
        size = (int(raw["image_width"]), int(raw["image_height"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: image_width / image_height missing or not integers") from exc
    K = _read_matrix(raw, "camera_matrix", path, (3, 3))
    dist = _read_matrix(raw, "distortion_coefficients", path).ravel()
    if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise CalibrationFileError(f"{path}: camera_matrix is not a valid intrinsic matrix (fx, fy > 0, K[2,2] = 1)")
    return CameraIntrinsics(K, dist, size, str(raw.get("camera_name", "camera")))
