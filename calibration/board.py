"""The ChArUco calibration board: its configuration, printable files and detection.

A ChArUco board is a chessboard whose white squares hold ArUco markers: every chessboard
corner gets an id, so partial views still give labelled 2-D/3-D correspondences (plain
chessboards need the whole pattern visible). One :class:`BoardConfig` fixes the board; the
same config is used to print it (``simbridge calibrate board``) and to detect it.

Board frame (OpenCV's): origin at the board's top-left outer corner, x to the right, y down,
z into the board; units are metres.

    >>> cfg = BoardConfig(squares_x=7, squares_y=5, square_length_m=0.04, marker_length_m=0.03)
    >>> write_board_files(cfg, "out/")          # board.png, board.pdf (true scale), board.yaml
    >>> det = detect_board(image_rgb, cfg)      # BoardDetection(corners (N,2), ids (N,), ...)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from simbridge.data.config import config, load_config, to_yaml

#: ArUco dictionaries by name (``DICT_5X5_100`` ...), read from OpenCV itself.
DICTIONARIES: dict[str, int] = {
    name: getattr(cv2.aruco, name)
    for name in dir(cv2.aruco)
    if name.startswith("DICT_") and isinstance(getattr(cv2.aruco, name), int)
}
METRES_PER_INCH = 0.0254


@config(frozen=True)
class BoardConfig:
    """A ChArUco board. Lengths are the *printed* sizes in metres: measure them after printing."""

    squares_x: int = 7
    squares_y: int = 5
    square_length_m: float = 0.04
    marker_length_m: float = 0.03
    dictionary: str = "DICT_5X5_100"
    #: OpenCV < 4.6 boards with an even number of rows start with a marker in the top-left.
    legacy_pattern: bool = False
    #: White border around the board in the printed files (m); also holds the caption.
    margin_m: float = 0.015
    #: Resolution of the PNG (and of the image embedded in the PDF).
    dpi: int = 300

    def __post_init__(self) -> None:
        if self.squares_x < 2 or self.squares_y < 2 or self.squares_x * self.squares_y < 6:
            raise ValueError("squares_x: squares_x and squares_y must be >= 2 (and give >= 6 squares)")
        if not self.square_length_m > 0:
            raise ValueError("square_length_m: a positive length in metres (e.g. 0.04)")
        if not 0 < self.marker_length_m < self.square_length_m:
            raise ValueError("marker_length_m: must be positive and smaller than square_length_m")
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"dictionary: one of OpenCV's ArUco dictionaries, e.g. DICT_5X5_100, DICT_4X4_50 "
                             f"({len(DICTIONARIES)} known)")
        capacity = int(self.dictionary.rsplit("_", 1)[1]) if self.dictionary.rsplit("_", 1)[1].isdigit() else 1000
        if self.num_markers > capacity:
            raise ValueError(f"dictionary: {self.dictionary} holds {capacity} markers but the board needs "
                             f"{self.num_markers}; use a larger dictionary (e.g. DICT_5X5_250) or fewer squares")
        if self.margin_m < 0:
            raise ValueError("margin_m: a length >= 0 in metres")
        if not 50 <= self.dpi <= 1200:
            raise ValueError("dpi: between 50 and 1200")

    @property
    def num_markers(self) -> int:
        return self.squares_x * self.squares_y // 2

    @property
    def num_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def size_m(self) -> tuple[float, float]:
        """Board width and height in metres (without margin)."""
        return self.squares_x * self.square_length_m, self.squares_y * self.square_length_m


def load_board_config(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> BoardConfig:
    """A :class:`BoardConfig` from a YAML file (``board.yaml`` written with the board) and overrides."""
    return load_config(BoardConfig, path, overrides=list(overrides))


@functools.lru_cache(maxsize=16)
def make_board(cfg: BoardConfig) -> cv2.aruco.CharucoBoard:
    dictionary = cv2.aruco.getPredefinedDictionary(DICTIONARIES[cfg.dictionary])
    board = cv2.aruco.CharucoBoard(
        (cfg.squares_x, cfg.squares_y), cfg.square_length_m, cfg.marker_length_m, dictionary
    )
    board.setLegacyPattern(cfg.legacy_pattern)
    return board


@functools.lru_cache(maxsize=16)
def _detector(cfg: BoardConfig) -> cv2.aruco.CharucoDetector:
    charuco_params = cv2.aruco.CharucoParameters()
    detector_params = cv2.aruco.DetectorParameters()
    # Sub-pixel refinement of the marker corners makes the interpolated chessboard corners sharper.
    detector_params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    return cv2.aruco.CharucoDetector(make_board(cfg), charuco_params, detector_params)


def board_corners_m(cfg: BoardConfig) -> np.ndarray:
    """(num_corners, 3) chessboard corner positions in the board frame (metres), indexed by id."""
    return np.asarray(make_board(cfg).getChessboardCorners(), dtype=np.float64).reshape(-1, 3)


def render_board_image(cfg: BoardConfig, pixels_per_metre: float | None = None, margin: bool = False) -> np.ndarray:
    """Grayscale uint8 image of the board at ``pixels_per_metre`` (default: ``cfg.dpi``).

    Without margin, pixel ``(u, v)`` covers board coordinates ``[u, u+1) / pixels_per_metre``.
    """
    ppm = pixels_per_metre or cfg.dpi / METRES_PER_INCH
    width_m, height_m = cfg.size_m
    size = (round(width_m * ppm), round(height_m * ppm))
    image = make_board(cfg).generateImage(size, marginSize=0, borderBits=1)
    if margin and cfg.margin_m > 0:
        pad = round(cfg.margin_m * ppm)
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    return image


def caption(cfg: BoardConfig) -> str:
    return (f"ChArUco {cfg.squares_x}x{cfg.squares_y}  square {cfg.square_length_m * 1000:g} mm  "
            f"marker {cfg.marker_length_m * 1000:g} mm  {cfg.dictionary}"
            f"{'  legacy' if cfg.legacy_pattern else ''}  -  print at 100% scale, then measure a square")


def write_board_files(cfg: BoardConfig, out_dir: str | Path, stem: str = "board") -> dict[str, Path]:
    """Write ``<stem>.png`` (with its DPI), ``<stem>.pdf`` (page = board + margin, true scale)
    and ``<stem>.yaml`` (the config, to pass to the detection commands)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ppm = cfg.dpi / METRES_PER_INCH
    image = render_board_image(cfg, ppm, margin=True)
    paths = {"png": out / f"{stem}.png", "pdf": out / f"{stem}.pdf", "yaml": out / f"{stem}.yaml"}

    from PIL import Image

    Image.fromarray(image).save(paths["png"], dpi=(cfg.dpi, cfg.dpi))

    # The PDF page is exactly the board plus its margin: the image fills the whole page, so
    # printing at 100% (no "fit to page") gives true-size squares.
    width_m, height_m = cfg.size_m
    page_in = ((width_m + 2 * cfg.margin_m) / METRES_PER_INCH, (height_m + 2 * cfg.margin_m) / METRES_PER_INCH)
    fig = plt.figure(figsize=page_in, dpi=cfg.dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if cfg.margin_m >= 0.005:
        font_pt = min(6.0, cfg.margin_m / METRES_PER_INCH * 72 * 0.45)
        fig.text(0.5, cfg.margin_m / 2 / (height_m + 2 * cfg.margin_m), caption(cfg), ha="center",
                 va="center", fontsize=font_pt, color="0.35")
    fig.savefig(paths["pdf"], format="pdf", dpi=cfg.dpi)
    plt.close(fig)
    paths["yaml"].write_text(to_yaml(cfg))
    return paths


@dataclass
class BoardDetection:
    """Chessboard corners found in one image: pixel positions and their ids on the board."""

    corners: np.ndarray  # (N, 2) float64 pixels
    ids: np.ndarray  # (N,) int
    image_size: tuple[int, int]  # (width, height)
    num_markers: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def object_points(self, cfg: BoardConfig) -> np.ndarray:
        """(N, 3) board-frame positions (m) matching :attr:`corners`."""
        return board_corners_m(cfg)[self.ids]

    def is_usable(self, min_corners: int = 6) -> bool:
        """Enough corners, and not all on one line (a line gives no pose / no homography)."""
        if len(self) < min_corners:
            return False
        pts = self.corners - self.corners.mean(axis=0)
        singular = np.linalg.svd(pts, compute_uv=False)
        return bool(singular[1] > 1e-3 * max(singular[0], 1e-9) and singular[1] > 1.0)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # the contract's images are RGB
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"image of shape {image.shape}: expected HxW grayscale or HxWx3 RGB uint8")


def detect_board(image: np.ndarray, cfg: BoardConfig) -> BoardDetection:
    """Find the board's chessboard corners in ``image`` (RGB or grayscale uint8).

    Returns an empty detection (``len == 0``) when the board is not visible.
    """
    gray = _to_gray(np.asarray(image))
    if gray.dtype != np.uint8:
        raise ValueError(f"image dtype {gray.dtype}: expected uint8")
    corners, ids, _marker_corners, marker_ids = _detector(cfg).detectBoard(gray)
    size = (gray.shape[1], gray.shape[0])
    n_markers = 0 if marker_ids is None else len(marker_ids)
    if ids is None or len(ids) == 0:
        return BoardDetection(np.zeros((0, 2)), np.zeros((0,), dtype=int), size, n_markers)
    return BoardDetection(
        np.asarray(corners, dtype=np.float64).reshape(-1, 2), np.asarray(ids, dtype=int).reshape(-1), size, n_markers
    )
