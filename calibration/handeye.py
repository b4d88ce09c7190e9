"""Hand-eye calibration: where the camera is relative to the robot.

* ``eye_in_hand``: the camera rides on the end effector; the board lies still in the
  workspace. Answer: ``T_ee_camera``.
* ``eye_to_hand``: the camera stands still; the end effector holds the board. Answer:
  ``T_base_camera``.

The routine is robot-agnostic: :mod:`~simbridge.calibration.handeye_poses` proposes N diverse
end-effector poses around a centre pose (``generate_poses``) and refuses sets that cannot
determine the answer (``check_pose_diversity``: too few poses, rotations all about parallel
axes), :func:`collect_views` drives any robot through them with two callables (``move_to(T_base_ee) -> reported T_base_ee`` and
``capture() -> RGB image``), and :func:`solve_hand_eye` solves with the five methods of
``cv2.calibrateHandEye`` and reports how well they agree. The result is saved as YAML with a
``calibration_id`` (date + content hash) that every recorded episode stores.

    >>> poses = generate_poses(T_base_ee_centre, n=15)
    >>> views = collect_views(poses, move_to, capture, board, intrinsics)
    >>> result = solve_hand_eye(views, "eye_in_hand"); result.write("calib/handeye.yaml")
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml

from simbridge.calibration.board import BoardConfig, BoardDetection, detect_board
from simbridge.calibration.camera_info import CalibrationFileError, CameraIntrinsics
from simbridge.calibration.geometry import (
    average_transforms,
    from_rvec_tvec,
    invert,
    make_transform,
    matrix_to_pose7,
    pose7_to_matrix,
    pose_difference,
    rotation_angle_deg,
)
from simbridge.calibration.handeye_poses import DegeneratePoseSet, check_pose_diversity

Mode = Literal["eye_in_hand", "eye_to_hand"]
MODES: tuple[str, ...] = ("eye_in_hand", "eye_to_hand")
#: The five classic AX = XB solvers in OpenCV, by name.
METHODS: dict[str, int] = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use 'eye_in_hand' (camera on the gripper) or 'eye_to_hand' (fixed camera)")


# ----------------------------------------------------------------------------------------------- views


@dataclass
class HandEyeView:
    """One robot pose with the board pose seen from the camera there."""

    T_base_ee: np.ndarray
    T_camera_board: np.ndarray
    detection: BoardDetection | None = None
    pnp_error_px: float = 0.0


def estimate_board_pose(det: BoardDetection, board: BoardConfig, intrinsics: CameraIntrinsics,
                        min_corners: int = 6) -> tuple[np.ndarray, float] | None:
    """(T_camera_board, RMS reprojection error px) from a detection, or None if unusable."""
    if not det.is_usable(min_corners):
        return None
    K, dist = intrinsics.K, intrinsics.dist
    obj = det.object_points(board).astype(np.float64)
    img = det.corners.reshape(-1, 1, 2).astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    projected, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - det.corners) ** 2, axis=1))))
    return from_rvec_tvec(rvec, tvec), error


def collect_views(
    poses: Sequence[np.ndarray],
    move_to: Callable[[np.ndarray], np.ndarray | None],
    capture: Callable[[], np.ndarray | BoardDetection],
    board: BoardConfig,
    intrinsics: CameraIntrinsics,
    save_dir: str | Path | None = None,
    progress: bool = False,
) -> list[HandEyeView]:
    """Move through ``poses``, capture the board at each, keep the poses where it was found.

    ``move_to(T_base_ee)`` moves the robot (through its safety filter) and returns the pose the
    robot *reports* having reached (None: assume the target). ``capture()`` returns an RGB image
    (or a ready :class:`BoardDetection`). With ``save_dir``, images and poses are written as they
    come (``views.jsonl``), so a crash loses nothing and the solve can be re-run offline.
    """
    out = Path(save_dir) if save_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    iterator: Sequence[np.ndarray] = poses
    if progress:
        from tqdm import tqdm

        iterator = tqdm(poses, desc="hand-eye poses", unit="pose")
    views: list[HandEyeView] = []
    for index, target in enumerate(iterator):
        reached = move_to(np.asarray(target, dtype=np.float64))
        T_base_ee = np.asarray(target if reached is None else reached, dtype=np.float64)
        frame = capture()
        det = frame if isinstance(frame, BoardDetection) else detect_board(frame, board)
        if out is not None and not isinstance(frame, BoardDetection):
            cv2.imwrite(str(out / f"view_{index:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            with open(out / "views.jsonl", "a") as f:
                f.write(json.dumps({"image": f"view_{index:03d}.png", "ee_pose": matrix_to_pose7(T_base_ee).tolist()})
                        + "\n")
        estimate = estimate_board_pose(det, board, intrinsics)
        if estimate is not None:
            views.append(HandEyeView(T_base_ee, estimate[0], det, estimate[1]))
    return views


def load_views(data_dir: str | Path, board: BoardConfig, intrinsics: CameraIntrinsics) -> list[HandEyeView]:
    """Views saved by :func:`collect_views` (``views.jsonl`` + images) or written by hand."""
    data_dir = Path(data_dir)
    index = data_dir / "views.jsonl"
    if not index.is_file():
        raise CalibrationFileError(f"{index} does not exist: a hand-eye data folder holds views.jsonl with one "
                                   '{"image": "view_000.png", "ee_pose": [x, y, z, qw, qx, qy, qz]} per line')
    views = []
    for lineno, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            T_base_ee = pose7_to_matrix(entry["ee_pose"])
            image_path = data_dir / entry["image"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationFileError(f"{index}:{lineno}: {exc}; each line needs 'image' and 'ee_pose' "
                                       "(xyz + quaternion wxyz, base frame)") from exc
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationFileError(f"{index}:{lineno}: cannot read image {image_path}")
        det = detect_board(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), board)
        estimate = estimate_board_pose(det, board, intrinsics)
        if estimate is not None:
            views.append(HandEyeView(T_base_ee, estimate[0], det, estimate[1]))
    return views


# ----------------------------------------------------------------------------------------------- solve


@dataclass
class Residuals:
    """How well a hand-eye transform explains the views (board pose predicted vs observed)."""

    translation_mm: np.ndarray  # per view
    rotation_deg: np.ndarray  # per view
    reprojection_px: np.ndarray  # per view (RMS over the corners), empty without detections

    def summary(self) -> dict:
        def stats(x: np.ndarray) -> dict:
            return {"mean": float(np.mean(x)), "max": float(np.max(x))} if len(x) else {}

        return {"translation_mm": stats(self.translation_mm), "rotation_deg": stats(self.rotation_deg),
                "reprojection_px": stats(self.reprojection_px)}


def fixed_board_pose(views: Sequence[HandEyeView], T_hand_eye: np.ndarray, mode: Mode) -> np.ndarray:
    """The board's pose that stays fixed during the routine: T_base_board (eye-in-hand) or
    T_ee_board (eye-to-hand), averaged over the views."""
    if mode == "eye_in_hand":
        estimates = [v.T_base_ee @ T_hand_eye @ v.T_camera_board for v in views]
    else:
        estimates = [invert(v.T_base_ee) @ T_hand_eye @ v.T_camera_board for v in views]
    return average_transforms(estimates)


def predicted_camera_board(T_base_ee: np.ndarray, T_hand_eye: np.ndarray, T_board: np.ndarray, mode: Mode) -> np.ndarray:
    """T_camera_board predicted from the robot's kinematics, the hand-eye result and the board pose."""
    if mode == "eye_in_hand":
        return invert(T_base_ee @ T_hand_eye) @ T_board
    return invert(T_hand_eye) @ T_base_ee @ T_board


def compute_residuals(views: Sequence[HandEyeView], T_hand_eye: np.ndarray, mode: Mode,
                      board: BoardConfig | None = None, intrinsics: CameraIntrinsics | None = None,
                      T_board: np.ndarray | None = None) -> Residuals:
    """Board pose predicted through the robot kinematics vs observed, per view (mm, deg, px).

    The board's fixed pose is estimated from the views unless ``T_board`` is given (e.g. from
    the calibration run, to check a held-out set).
    """
    _check_mode(mode)
    T_board = fixed_board_pose(views, T_hand_eye, mode) if T_board is None else T_board
    t_err, r_err, px_err = [], [], []
    for view in views:
        predicted = predicted_camera_board(view.T_base_ee, T_hand_eye, T_board, mode)
        # Compare where the board's corners land, in the camera frame: the board centre's offset.
        mm, deg = pose_difference(predicted, view.T_camera_board)
        t_err.append(mm)
        r_err.append(deg)
        if board is not None and intrinsics is not None and view.detection is not None and len(view.detection):
            obj = view.detection.object_points(board)
            rvec, _ = cv2.Rodrigues(np.ascontiguousarray(predicted[:3, :3]))
            projected, _ = cv2.projectPoints(obj, rvec, predicted[:3, 3], intrinsics.K, intrinsics.dist)
            diff = projected.reshape(-1, 2) - view.detection.corners
            px_err.append(float(np.sqrt(np.mean(np.sum(diff**2, axis=1)))))
    return Residuals(np.asarray(t_err), np.asarray(r_err), np.asarray(px_err))


@dataclass
class HandEyeResult:
    mode: Mode
    T: np.ndarray  # T_ee_camera (eye_in_hand) or T_base_camera (eye_to_hand)
    method: str  # the method chosen (lowest residuals)
    per_method: dict[str, np.ndarray]
    agreement: dict  # max pairwise spread between methods: translation_mm, rotation_deg
    residuals: Residuals
    num_views: int
    camera_name: str = "camera"
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def transform_name(self) -> str:
        return "T_ee_camera" if self.mode == "eye_in_hand" else "T_base_camera"

    @property
    def calibration_id(self) -> str:
        """``he-YYYYMMDD-<8 hex>``: date + hash of the transform (what episodes record)."""
        return calibration_id(self.mode, self.T, self.camera_name, self.created)

    def to_dict(self) -> dict:
        return {
            "calibration_id": self.calibration_id,
            "mode": self.mode,
            "camera_name": self.camera_name,
            "created": self.created,
            "transform": self.transform_name,
            self.transform_name: {
                "pose": [round(float(x), 9) for x in matrix_to_pose7(self.T)],  # xyz + quat wxyz
                "matrix": [[float(x) for x in row] for row in self.T],
            },
            "method": self.method,
            "num_views": self.num_views,
            "agreement": self.agreement,
            "residuals": self.residuals.summary(),
            "per_method": {name: [round(float(x), 9) for x in matrix_to_pose7(T)] for name, T in self.per_method.items()},
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)
        return path


def calibration_id(mode: str, T: np.ndarray, camera_name: str, created: str) -> str:
    content = json.dumps({"mode": mode, "camera": camera_name, "T": [round(float(x), 7) for x in np.ravel(T)]})
    digest = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"he-{created[:10].replace('-', '')}-{digest}"


@dataclass
class HandEyeCalibration:
    """A hand-eye file loaded back: what the runtime needs."""

    mode: Mode
    T: np.ndarray
    calibration_id: str
    camera_name: str


def load_hand_eye(path: str | Path) -> HandEyeCalibration:
    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"hand-eye file {path} does not exist; create it with 'simbridge calibrate handeye'")
    try:
        raw = yaml.safe_load(path.read_text())
        mode = raw["mode"]
        _check_mode(mode)
        T = np.asarray(raw[raw["transform"]]["matrix"], dtype=np.float64).reshape(4, 4)
        recorded = str(raw["calibration_id"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: not a hand-eye calibration file ({exc}); regenerate it with "
                                   "'simbridge calibrate handeye'") from exc
    expected = calibration_id(mode, T, raw.get("camera_name", "camera"), raw.get("created", ""))
    if expected != recorded:
        raise CalibrationFileError(f"{path}: calibration_id {recorded} does not match the transform (expected "
                                   f"{expected}): the file was edited by hand; re-run the calibration")
    return HandEyeCalibration(mode, T, recorded, raw.get("camera_name", "camera"))


def solve_hand_eye(views: Sequence[HandEyeView], mode: Mode, methods: Sequence[str] = tuple(METHODS),
                   board: BoardConfig | None = None, intrinsics: CameraIntrinsics | None = None,
                   camera_name: str = "camera") -> HandEyeResult:
    """Solve AX = XB with each method; pick the one whose residuals are smallest."""
    _check_mode(mode)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown hand-eye method(s) {unknown}; choose from {', '.join(METHODS)}")
    check_pose_diversity([v.T_base_ee for v in views])
    # OpenCV solves for cam->gripper given gripper->base; for a fixed camera, feed base->gripper
    # (inverse robot poses) and the answer is cam->base.
    robot = [v.T_base_ee if mode == "eye_in_hand" else invert(v.T_base_ee) for v in views]
    R_robot = [T[:3, :3] for T in robot]
    t_robot = [T[:3, 3].reshape(3, 1) for T in robot]
    R_board = [v.T_camera_board[:3, :3] for v in views]
    t_board = [v.T_camera_board[:3, 3].reshape(3, 1) for v in views]
    per_method: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    for name in methods:
        try:
            R, t = cv2.calibrateHandEye(R_robot, t_robot, R_board, t_board, method=METHODS[name])
        except cv2.error:
            continue
        T = make_transform(R, t)
        if not np.isfinite(T).all() or abs(np.linalg.det(R) - 1.0) > 1e-3:
            continue
        per_method[name] = T
        res = compute_residuals(views, T, mode)
        # One score: 1 mm of translation residual ~ 0.1 degree of rotation residual.
        scores[name] = float(np.mean(res.translation_mm) + 10.0 * np.mean(res.rotation_deg))
    if not per_method:
        raise DegeneratePoseSet("every hand-eye method failed on these views; collect more diverse poses")
    best = min(scores, key=scores.__getitem__)
    names = list(per_method)
    spread_mm, spread_deg = 0.0, 0.0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            mm, deg = pose_difference(per_method[a], per_method[b])
            spread_mm, spread_deg = max(spread_mm, mm), max(spread_deg, deg)
    agreement = {"translation_mm": spread_mm, "rotation_deg": spread_deg, "methods": names,
                 "failed": [m for m in methods if m not in per_method]}
    residuals = compute_residuals(views, per_method[best], mode, board, intrinsics)
    return HandEyeResult(mode, per_method[best], best, per_method, agreement, residuals, len(views),
                         camera_name=camera_name)


def hand_eye_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mm, deg) between an estimated and a true hand-eye transform."""
    mm, _ = pose_difference(estimate, truth)
    return mm, rotation_angle_deg(estimate[:3, :3].T @ truth[:3, :3])
