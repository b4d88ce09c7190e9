"""Camera intrinsics from views of a ChArUco board, with live coverage feedback.

Frames come from anywhere: a folder of images (:func:`iter_image_folder`), a video file or
device (:func:`iter_video_frames`), or handed in one by one by the camera node
(:meth:`IntrinsicsCalibrator.add_frame`). Each frame is detected, checked (enough corners,
not a near-duplicate of a view already kept) and its corners are binned into a coverage grid
so the operator sees which parts of the image still need the board. :meth:`calibrate` runs
``cv2.calibrateCamera``, then drops views whose reprojection error is above
``max_view_error_px`` and solves again (a blurred or mis-detected view would otherwise bias
everything).

    >>> cal = IntrinsicsCalibrator(BoardConfig())
    >>> for frame in frames: print(cal.add_frame(frame).message)
    >>> result = cal.calibrate(); result.write("camera_info/wrist.yaml", camera_name="wrist")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from simbridge.calibration.board import BoardConfig, BoardDetection, detect_board, make_board
from simbridge.calibration.camera_info import write_camera_info
from simbridge.data.config import config

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationError(RuntimeError):
    """Calibration cannot produce a trustworthy result; the message names the problem and the fix."""


@config(frozen=True)
class IntrinsicsConfig:
    min_corners: int = 8  # per view
    min_views: int = 8
    max_views: int = 60
    #: Views whose RMS reprojection error is above this are dropped and the camera re-solved.
    max_view_error_px: float = 1.0
    max_rejection_rounds: int = 3
    #: Coverage grid over the image (columns, rows).
    grid: tuple[int, int] = (6, 4)
    #: A new view must move the board's corners by this much (mean, px) versus every kept view.
    min_motion_px: float = 12.0
    distortion_model: Literal["plumb_bob", "rational_polynomial"] = "plumb_bob"
    zero_tangential: bool = False

    def __post_init__(self) -> None:
        if self.min_corners < 6:
            raise ValueError("min_corners: at least 6 (fewer corners give unreliable views)")
        if self.min_views < 3:
            raise ValueError("min_views: at least 3 (planar calibration needs >= 3 views; 10-20 recommended)")
        if self.max_views < self.min_views:
            raise ValueError("max_views: must be >= min_views")
        if not self.max_view_error_px > 0:
            raise ValueError("max_view_error_px: a positive error in pixels (e.g. 1.0)")
        if min(self.grid) < 1:
            raise ValueError("grid: two positive integers (columns, rows), e.g. [6, 4]")


class CoverageGrid:
    """Which cells of the image have seen board corners, and how many."""

    def __init__(self, image_size: tuple[int, int], grid: tuple[int, int] = (6, 4)) -> None:
        self.image_size = image_size
        self.cols, self.rows = grid
        self.counts = np.zeros((self.rows, self.cols), dtype=int)

    def cells_of(self, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.image_size
        c = np.clip((corners[:, 0] / width * self.cols).astype(int), 0, self.cols - 1)
        r = np.clip((corners[:, 1] / height * self.rows).astype(int), 0, self.rows - 1)
        return r, c

    def add(self, corners: np.ndarray) -> None:
        np.add.at(self.counts, self.cells_of(corners), 1)

    @property
    def fraction(self) -> float:
        return float((self.counts > 0).mean())

    def missing_cells(self) -> list[tuple[int, int]]:
        """(column, row) of the cells no corner has fallen into yet."""
        return [(int(c), int(r)) for r, c in zip(*np.nonzero(self.counts == 0), strict=True)]

    def describe_missing(self) -> str:
        """Plain words for where the board still needs to go, e.g. ``'top-left, bottom edge'``."""
        missing = self.missing_cells()
        if not missing:
            return "none"
        names = []
        for col, row in missing:
            vertical = "top" if row < self.rows / 3 else "bottom" if row >= self.rows * 2 / 3 else "middle"
            horizontal = "left" if col < self.cols / 3 else "right" if col >= self.cols * 2 / 3 else "centre"
            name = "centre" if (vertical, horizontal) == ("middle", "centre") else f"{vertical}-{horizontal}"
            if name not in names:
                names.append(name)
        return ", ".join(names)

    def ascii_map(self) -> str:
        """One character per cell: '.' empty, '+' a few corners, '#' well covered."""
        chars = np.where(self.counts == 0, ".", np.where(self.counts < 8, "+", "#"))
        return "\n".join("".join(row) for row in chars)


@dataclass
class FrameFeedback:
    accepted: bool
    num_corners: int
    num_views: int
    coverage: float
    missing: str
    reason: str = ""

    @property
    def message(self) -> str:
        status = "kept" if self.accepted else f"skipped ({self.reason})"
        return (f"{status}: {self.num_corners} corners, {self.num_views} views, coverage {self.coverage:.0%}, "
                f"still needed: {self.missing}")


@dataclass
class ViewReport:
    name: str
    num_corners: int
    error_px: float  # RMS reprojection error of this view (last solve it took part in)
    tilt_deg: float  # angle between the board normal and the optical axis
    rejected: bool = False


@dataclass
class IntrinsicsResult:
    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float  # over the kept views
    views: list[ViewReport]
    coverage: CoverageGrid
    warnings: list[str] = field(default_factory=list)

    @property
    def num_kept(self) -> int:
        return sum(not v.rejected for v in self.views)

    def write(self, path: str | Path, camera_name: str = "camera") -> Path:
        comment = (f"simbridge calibrate intrinsics: {self.num_kept} views kept of {len(self.views)}, "
                   f"RMS reprojection error {self.rms_px:.3f} px, coverage {self.coverage.fraction:.0%}")
        return write_camera_info(path, self.K, self.dist, self.image_size, camera_name, comment)

    def summary(self) -> dict:
        return {
            "fx": float(self.K[0, 0]), "fy": float(self.K[1, 1]), "cx": float(self.K[0, 2]), "cy": float(self.K[1, 2]),
            "dist": [float(x) for x in self.dist], "rms_px": self.rms_px, "views_kept": self.num_kept,
            "views_rejected": len(self.views) - self.num_kept, "coverage": self.coverage.fraction,
            "warnings": list(self.warnings),
        }


class IntrinsicsCalibrator:
    """Accumulate board views (frames or detections), then :meth:`calibrate`."""

    def __init__(self, board: BoardConfig, cfg: IntrinsicsConfig | None = None) -> None:
        self.board = board
        self.cfg = cfg or IntrinsicsConfig()
        self.detections: list[BoardDetection] = []
        self.names: list[str] = []
        self.image_size: tuple[int, int] | None = None
        self.coverage: CoverageGrid | None = None

    def _feedback(self, accepted: bool, n: int, reason: str = "") -> FrameFeedback:
        cov = self.coverage
        return FrameFeedback(accepted, n, len(self.detections), cov.fraction if cov else 0.0,
                             cov.describe_missing() if cov else "everything", reason)

    def add_frame(self, image: np.ndarray, name: str | None = None) -> FrameFeedback:
        """Detect the board in an RGB (or grayscale) frame and keep it if it adds information."""
        return self.add_detection(detect_board(image, self.board), name)

    def add_detection(self, det: BoardDetection, name: str | None = None) -> FrameFeedback:
        if self.image_size is None:
            self.image_size = det.image_size
            self.coverage = CoverageGrid(det.image_size, self.cfg.grid)
        elif det.image_size != self.image_size:
            raise CalibrationError(f"frame {name or len(self.names)} is {det.image_size[0]}x{det.image_size[1]} but "
                                   f"earlier frames are {self.image_size[0]}x{self.image_size[1]}; calibrate one "
                                   "camera resolution at a time")
        if len(det) < self.cfg.min_corners or not det.is_usable(self.cfg.min_corners):
            return self._feedback(False, len(det), f"fewer than {self.cfg.min_corners} usable corners: is the "
                                                   "whole board in focus and well lit?")
        if len(self.detections) >= self.cfg.max_views:
            return self._feedback(False, len(det), f"already {self.cfg.max_views} views")
        if self._is_duplicate(det):
            return self._feedback(False, len(det), "too close to a view already kept: move or tilt the board")
        self.detections.append(det)
        self.names.append(name or f"view_{len(self.names):03d}")
        assert self.coverage is not None
        self.coverage.add(det.corners)
        return self._feedback(True, len(det))

    def _is_duplicate(self, det: BoardDetection) -> bool:
        for kept in self.detections:
            common, a, b = np.intersect1d(det.ids, kept.ids, return_indices=True)
            if len(common) >= len(det) // 2 and len(common) >= 4:
                motion = np.linalg.norm(det.corners[a] - kept.corners[b], axis=1).mean()
                if motion < self.cfg.min_motion_px:
                    return True
        return False

    def calibrate(self) -> IntrinsicsResult:
        if self.image_size is None or len(self.detections) < self.cfg.min_views:
            missing = self.coverage.describe_missing() if self.coverage else "everything"
            raise CalibrationError(
                f"only {len(self.detections)} usable board views, need at least {self.cfg.min_views}: capture more "
                f"views with the whole board visible, tilted by 20-45 degrees in different directions, covering "
                f"the image corners (still uncovered: {missing})"
            )
        return calibrate_intrinsics(self.detections, self.image_size, self.board, self.cfg, self.names,
                                    coverage=self.coverage)


def _flags(cfg: IntrinsicsConfig) -> int:
    flags = 0
    if cfg.distortion_model == "rational_polynomial":
        flags |= cv2.CALIB_RATIONAL_MODEL
    if cfg.zero_tangential:
        flags |= cv2.CALIB_ZERO_TANGENT_DIST
    return flags


def calibrate_intrinsics(
    detections: list[BoardDetection],
    image_size: tuple[int, int],
    board: BoardConfig,
    cfg: IntrinsicsConfig | None = None,
    names: list[str] | None = None,
    coverage: CoverageGrid | None = None,
) -> IntrinsicsResult:
    """``cv2.calibrateCamera`` over the views, dropping views above ``max_view_error_px``."""
    cfg = cfg or IntrinsicsConfig()
    names = names or [f"view_{i:03d}" for i in range(len(detections))]
    if coverage is None:
        coverage = CoverageGrid(image_size, cfg.grid)
        for det in detections:
            coverage.add(det.corners)
    cv_board = make_board(board)
    object_points, image_points = [], []
    for det in detections:
        obj, img = cv_board.matchImagePoints(det.corners.reshape(-1, 1, 2).astype(np.float32),
                                             det.ids.reshape(-1, 1).astype(np.int32))
        object_points.append(obj.astype(np.float32))
        image_points.append(img.astype(np.float32))

    kept = list(range(len(detections)))
    errors = np.full(len(detections), np.nan)
    tilts = np.full(len(detections), np.nan)
    rejected: set[int] = set()
    for round_ in range(cfg.max_rejection_rounds + 1):
        rms, K, dist, rvecs, _tvecs, _std_in, _std_ex, per_view = cv2.calibrateCameraExtended(
            [object_points[i] for i in kept], [image_points[i] for i in kept], image_size, None, None,
            flags=_flags(cfg),
        )
        for slot, i in enumerate(kept):
            errors[i] = float(per_view[slot, 0])
            R, _ = cv2.Rodrigues(rvecs[slot])
            tilts[i] = float(np.degrees(np.arccos(np.clip(abs(R[2, 2]), 0.0, 1.0))))
        outliers = [i for i in kept if errors[i] > cfg.max_view_error_px]
        if not outliers or round_ == cfg.max_rejection_rounds:
            break
        if len(kept) - len(outliers) < cfg.min_views:
            raise CalibrationError(
                f"{len(outliers)} of {len(kept)} views have a reprojection error above {cfg.max_view_error_px} px "
                f"(median {np.median(errors[kept]):.2f} px), leaving fewer than min_views={cfg.min_views}: check "
                "that the board config (square/marker length, dictionary) matches the printed board and that the "
                "frames are sharp; or raise max_view_error_px for a low-quality camera"
            )
        rejected.update(outliers)
        kept = [i for i in kept if i not in rejected]

    views = [ViewReport(names[i], len(detections[i]), float(errors[i]), float(tilts[i]), i in rejected)
             for i in range(len(detections))]
    warnings = []
    if coverage.fraction < 0.75:
        warnings.append(f"board corners covered only {coverage.fraction:.0%} of the image (missing: "
                        f"{coverage.describe_missing()}): distortion there is extrapolated; add views there")
    if np.nanmax(tilts[kept]) < 15.0:
        warnings.append("no view tilts the board by more than 15 degrees: the focal length is poorly constrained; "
                        "add views with the board tilted 20-45 degrees")
    return IntrinsicsResult(K, dist.ravel(), tuple(image_size), float(rms), views, coverage, warnings)


def iter_image_folder(folder: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """(file name, RGB image) for every image in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist; pass a folder of board images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"cannot read image {path}: corrupted or not an image; remove it and retry")
        yield path.name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_video_frames(source: str | int, stride: int = 5, max_frames: int = 2000) -> Iterator[tuple[str, np.ndarray]]:
    """(frame name, RGB frame) from a video file or a device index/path (``cv2.VideoCapture``).

    Every ``stride``-th frame, at most ``max_frames`` frames read (devices stream forever).
    """
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, str) and not source.startswith(("/dev/", "rtsp:", "http:", "https:")) \
            and not Path(source).exists():
        raise CalibrationError(f"video {source} does not exist; pass a video file, a device index (0) or /dev/videoN")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise CalibrationError(f"cannot open video source {source!r}: is the camera connected and not in use "
                               "by another process?")
    try:
        for index in range(max_frames):
            ok, frame = capture.read()
            if not ok:
                if index == 0:
                    raise CalibrationError(f"video source {source!r} opened but gave no frames")
                return
            if index % stride == 0:
                yield f"frame_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def calibrate_frames(frames: Iterable[tuple[str, np.ndarray]], board: BoardConfig,
                     cfg: IntrinsicsConfig | None = None, progress: bool = False) -> IntrinsicsResult:
    """Detect every frame, keep the useful ones and calibrate (see :class:`IntrinsicsCalibrator`)."""
    calibrator = IntrinsicsCalibrator(board, cfg)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc="detecting board", unit="frame")
    for name, frame in frames:
        feedback = calibrator.add_frame(frame, name)
        if progress:
            frames.set_postfix_str(f"views {feedback.num_views} coverage {feedback.coverage:.0%}")  # type: ignore[union-attr]
    return calibrator.calibrate()


def plot_result(result: IntrinsicsResult, path: str | Path) -> Path:
    """PNG: per-view reprojection error (rejected views in red) and the coverage grid."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_err, ax_cov) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 2]})
    errors = [v.error_px for v in result.views]
    colours = ["tab:red" if v.rejected else "tab:blue" for v in result.views]
    ax_err.bar(range(len(errors)), errors, color=colours)
    ax_err.axhline(result.rms_px, color="k", lw=0.8, ls="--", label=f"RMS {result.rms_px:.3f} px")
    ax_err.set(xlabel="view", ylabel="reprojection error (px)", title="per-view error (red: rejected)")
    ax_err.legend()
    cov = result.coverage
    ax_cov.imshow(cov.counts, cmap="Greens", extent=(0, cov.image_size[0], cov.image_size[1], 0))
    for (r, c), n in np.ndenumerate(cov.counts):
        x = (c + 0.5) * cov.image_size[0] / cov.cols
        y = (r + 0.5) * cov.image_size[1] / cov.rows
        ax_cov.text(x, y, str(n), ha="center", va="center", fontsize=7, color="k" if n else "tab:red")
    ax_cov.set(title=f"corners per image cell (coverage {cov.fraction:.0%})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
