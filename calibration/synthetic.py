"""Synthetic calibration data with known ground truth: rendered board views and a virtual rig.

Used by the tests, the benchmark and ``simbridge calibrate handeye --simulate`` to check the
whole pipeline (detection -> intrinsics -> board poses -> hand-eye) against exact answers.

* :func:`render_board_view` renders the printed board as a pinhole camera (optionally with
  lens distortion, blur and pixel noise) sees it from a known pose: every output pixel is
  undistorted, intersected with the board plane and looked up in the board image, so the
  geometry is exact up to interpolation (2x supersampled).
* :func:`project_board` is the fast path: ideal corner detections (+ Gaussian pixel noise).
* :class:`SyntheticRig` is a robot + camera + board with a known hand-eye transform; its
  ``move_to`` / ``capture`` callables plug into :func:`simbridge.calibration.handeye.collect_views`
  exactly like a real robot's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from simbridge.calibration.board import BoardConfig, BoardDetection, board_corners_m, render_board_image
from simbridge.calibration.geometry import invert, make_transform, to_rvec_tvec

#: Texture resolution of the board image the renderer samples (pixels per metre).
_TEXTURE_PPM = 5000.0


def default_camera_matrix(image_size: tuple[int, int] = (640, 480), fov_x_deg: float = 60.0) -> np.ndarray:
    width, height = image_size
    f = width / 2 / np.tan(np.radians(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2 - 0.5 + 3.0], [0, f * 1.002, height / 2 - 0.5 - 2.0], [0, 0, 1]])


def look_at_board(cfg: BoardConfig, distance_m: float, tilt_deg: tuple[float, float, float] = (0, 0, 0),
                  offset_m: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``T_camera_board`` for a camera ``distance_m`` from the board centre, looking at it.

    ``tilt_deg`` rotates the camera about the board centre (extrinsic xyz, board axes);
    ``offset_m`` shifts the looked-at point within the board plane.
    """
    width, height = cfg.size_m
    centre = np.array([width / 2 + offset_m[0], height / 2 + offset_m[1], 0.0])
    # Camera frame when untilted: aligned with the board (z into the board), standing off along -z.
    tilt = Rotation.from_euler("xyz", tilt_deg, degrees=True).as_matrix()
    T_board_camera = make_transform(tilt, centre + tilt @ np.array([0, 0, -distance_m]))
    return invert(T_board_camera)


@functools.lru_cache(maxsize=4)
def _texture(cfg: BoardConfig) -> np.ndarray:
    return render_board_image(cfg, _TEXTURE_PPM, margin=True)


def render_board_view(
    cfg: BoardConfig,
    K: np.ndarray,
    T_camera_board: np.ndarray,
    image_size: tuple[int, int] = (640, 480),
    dist: np.ndarray | None = None,
    noise_sigma: float = 0.0,
    blur_sigma: float = 0.6,
    background: int = 110,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """RGB uint8 image of the board (with its white margin) seen from ``T_camera_board``."""
    width, height = image_size
    scale = 2  # supersampling: render at 2x and area-average down, to avoid aliasing
    texture = _texture(cfg)
    margin_px = (texture.shape[1] - round(cfg.size_m[0] * _TEXTURE_PPM)) / 2

    # The pixel -> texture map is smooth: compute it exactly on a coarse grid and interpolate.
    full_h, full_w = height * scale, width * scale
    step = 4
    rows = np.arange(0, full_h + step, step).clip(max=full_h - 1)
    cols = np.arange(0, full_w + step, step).clip(max=full_w - 1)
    grid_u, grid_v = np.meshgrid((cols + 0.5) / scale - 0.5, (rows + 0.5) / scale - 0.5)
    pixels = np.stack([grid_u.ravel(), grid_v.ravel()], axis=1)
    if dist is not None and np.any(np.asarray(dist) != 0):
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
        normalized = cv2.undistortPointsIter(pixels.reshape(-1, 1, 2), K, np.asarray(dist, np.float64), None, None,
                                             criteria).reshape(-1, 2)
    else:
        normalized = cv2.undistortPoints(pixels.reshape(-1, 1, 2), K, None).reshape(-1, 2)
    # Ray (xn, yn, 1) meets the board plane where (x, y, 1) ~ H^-1 (xn, yn, 1), H = [r1 r2 t].
    H = np.column_stack([T_camera_board[:3, 0], T_camera_board[:3, 1], T_camera_board[:3, 3]])
    board_h = np.column_stack([normalized, np.ones(len(normalized))]) @ np.linalg.inv(H).T
    in_front = board_h[:, 2] > 1e-9
    board_xy = board_h[:, :2] / np.where(in_front, board_h[:, 2], 1.0)[:, None]
    tex = board_xy * _TEXTURE_PPM - 0.5 + margin_px
    tex[~in_front] = -1e6
    tex = tex.reshape(len(rows), len(cols), 2)
    ri = np.interp(np.arange(full_h), rows, np.arange(len(rows))).astype(np.float32)
    ci = np.interp(np.arange(full_w), cols, np.arange(len(cols))).astype(np.float32)
    map_c, map_r = np.meshgrid(ci, ri)
    # Interpolate in float64 precision terms: offsets from the grid mean keep float32 exact enough.
    base = tex.reshape(-1, 2).mean(axis=0)
    map_x, map_y = (cv2.remap((tex[..., k] - base[k]).astype(np.float32), map_c, map_r, cv2.INTER_LINEAR)
                    + np.float32(base[k]) for k in range(2))
    big = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=int(background))
    gray = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    if blur_sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), blur_sigma)
    if noise_sigma > 0:
        rng = rng or np.random.default_rng(0)
        gray = gray + rng.normal(0.0, noise_sigma, gray.shape)
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def project_board(
    cfg: BoardConfig,
    K: np.ndarray,
    T_camera_board: np.ndarray,
    image_size: tuple[int, int] = (640, 480),
    dist: np.ndarray | None = None,
    noise_px: float = 0.0,
    rng: np.random.Generator | None = None,
) -> BoardDetection:
    """Ideal detection: the board corners projected into the image, with Gaussian pixel noise.

    Corners outside the image, behind the camera or on a board seen from its back are dropped.
    """
    object_points = board_corners_m(cfg)
    in_camera = object_points @ T_camera_board[:3, :3].T + T_camera_board[:3, 3]
    facing = T_camera_board[:3, 2] @ T_camera_board[:3, 3] > 0  # board z points away from the camera
    rvec, tvec = to_rvec_tvec(T_camera_board)
    pixels, _ = cv2.projectPoints(object_points, rvec, tvec, K, dist if dist is not None else np.zeros(5))
    pixels = pixels.reshape(-1, 2)
    if noise_px > 0:
        pixels = pixels + (rng or np.random.default_rng(0)).normal(0.0, noise_px, pixels.shape)
    width, height = image_size
    keep = (in_camera[:, 2] > 0.01) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1)
    keep &= (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1) & facing
    ids = np.flatnonzero(keep)
    return BoardDetection(pixels[ids], ids, (width, height), num_markers=0)


@dataclass
class SyntheticRig:
    """A robot, a camera and a board with known transforms.

    ``eye_in_hand``: the camera rides on the end effector (``T_ee_camera`` is the answer) and
    the board is fixed in the base frame (``T_base_board``). ``eye_to_hand``: the camera is
    fixed (``T_base_camera`` is the answer) and the board is held by the end effector
    (``T_ee_board``). ``render=False`` returns ideal corner detections instead of images.
    """

    mode: Literal["eye_in_hand", "eye_to_hand"]
    board: BoardConfig
    T_hand_eye: np.ndarray  # T_ee_camera or T_base_camera: the unknown the calibration solves for
    T_board: np.ndarray  # T_base_board or T_ee_board: the other unknown (nuisance)
    K: np.ndarray = field(default_factory=default_camera_matrix)
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    image_size: tuple[int, int] = (640, 480)
    pixel_noise: float = 0.0  # image intensity noise (render) or corner noise in px (no render)
    render: bool = True
    robot_noise_mm: float = 0.0  # noise of the reported ee position
    robot_noise_deg: float = 0.0
    seed: int = 0
    T_base_ee: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def T_camera_board(self, T_base_ee: np.ndarray | None = None) -> np.ndarray:
        T_base_ee = self.T_base_ee if T_base_ee is None else T_base_ee
        if self.mode == "eye_in_hand":
            return invert(T_base_ee @ self.T_hand_eye) @ self.T_board
        return invert(self.T_hand_eye) @ T_base_ee @ self.T_board

    def move_to(self, target: np.ndarray) -> np.ndarray:
        """Go to ``target`` (T_base_ee) and return the pose the robot reports (with its noise)."""
        self.T_base_ee = np.asarray(target, dtype=np.float64).copy()
        reported = self.T_base_ee.copy()
        if self.robot_noise_mm > 0:
            reported[:3, 3] += self._rng.normal(0, self.robot_noise_mm / 1000, 3)
        if self.robot_noise_deg > 0:
            axis_angle = self._rng.normal(0, np.radians(self.robot_noise_deg), 3)
            reported[:3, :3] = Rotation.from_rotvec(axis_angle).as_matrix() @ reported[:3, :3]
        return reported

    def capture(self) -> np.ndarray | BoardDetection:
        if self.render:
            return render_board_view(self.board, self.K, self.T_camera_board(), self.image_size, self.dist,
                                     noise_sigma=self.pixel_noise, rng=self._rng)
        return project_board(self.board, self.K, self.T_camera_board(), self.image_size, self.dist,
                             noise_px=self.pixel_noise, rng=self._rng)


def example_rig(mode: Literal["eye_in_hand", "eye_to_hand"], board: BoardConfig | None = None, **kwargs) -> tuple[
        SyntheticRig, np.ndarray]:
    """A plausible Franka setup and the ee pose (centre) from which the camera sees the board.

    eye-in-hand: a wrist camera 6 cm off the flange looking along the gripper; the board lies on
    the table 0.45 m below the centre pose. eye-to-hand: a camera on a stand 0.75 m in front of
    the robot looking back at a board held in the gripper.
    """
    board = board or BoardConfig()
    width, height = board.size_m
    if mode == "eye_in_hand":
        # ee z points down (Franka convention); camera z along ee z, camera a bit off-axis.
        T_ee_camera = make_transform(Rotation.from_euler("xyz", [2.0, -3.0, 91.0], degrees=True).as_matrix(),
                                     [0.055, -0.012, 0.045])
        centre = make_transform(Rotation.from_euler("xyz", [180.0, 0.0, 0.0], degrees=True).as_matrix(),
                                [0.45, 0.02, 0.50])
        # Board flat on the table under the camera: the camera looks at its centre from ~0.40 m.
        T_base_camera = centre @ T_ee_camera
        T_camera_board = look_at_board(board, 0.40)
        T_base_board = T_base_camera @ T_camera_board
        return SyntheticRig(mode, board, T_ee_camera, T_base_board, **kwargs), centre
    # eye_to_hand: board attached to the flange, facing the camera.
    T_ee_board = make_transform(Rotation.from_euler("xyz", [0.0, 0.0, 0.0], degrees=True).as_matrix(),
                                [-width / 2, -height / 2, 0.02])
    centre = make_transform(Rotation.from_euler("xyz", [0.0, -90.0, 0.0], degrees=True).as_matrix(),
                            [0.55, 0.0, 0.45])
    T_base_board = centre @ T_ee_board
    T_camera_board = look_at_board(board, 0.55)
    T_base_camera = T_base_board @ invert(T_camera_board)
    return SyntheticRig(mode, board, T_base_camera, T_ee_board, **kwargs), centre
