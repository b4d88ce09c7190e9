"""The cameras of the ``PutOnTarget`` scene: poses, fields of view, image sizes, and their maths.

Part of the one scene description (:mod:`simbridge.data.scene` re-exports everything here). The
ManiSkill task builds its ``CameraConfig`` from these values and the franky-sim twin its MJCF
``<camera>`` elements, so both simulators look at the table from the same place through the same
lens. The ManiSkill task's values are the truth: policies were trained on its images.

Conventions:

* Fixed cameras are given by ``eye`` and ``target`` in the **task frame** (table centre at the
  origin, table top z = 0, the robot base at :data:`~simbridge.data.scene.ROBOT_BASE_XYZ`), with
  world z up (SAPIEN's ``look_at``).
* Mounted cameras are given by a pose in a robot link's frame, in SAPIEN's camera axes (x forward,
  y left, z up). ``link`` names the Franka link without a simulator prefix: ``hand`` is
  ManiSkill's ``panda_hand`` and franky-sim's ``robot0_hand`` (the same frame: flange, turned
  -45 degrees about z).
* ``fovy`` is the vertical field of view in radians; pixels are square and the principal point is
  the image centre, so the horizontal field of view follows from the image's aspect ratio (as in
  SAPIEN and MuJoCo).

Plain numpy: no simulator import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simbridge.data.geometry import quat_to_matrix
from simbridge.data.spec import CameraSpec

#: (height, width) the simulated cameras render at unless told otherwise: the contract's default.
IMAGE_SIZE: tuple[int, int] = CameraSpec("scene").shape[:2]


def look_at_axes(eye: tuple[float, ...], target: tuple[float, ...]) -> np.ndarray:
    """3x3 rotation whose columns are the camera's forward, left, up (SAPIEN ``look_at``, z up)."""
    fwd = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    fwd /= np.linalg.norm(fwd)
    left = np.cross([0.0, 0.0, 1.0], fwd)
    left /= np.linalg.norm(left)
    up = np.cross(fwd, left)
    return np.stack([fwd, left, up], axis=1)


def gl_axes(sapien_axes: np.ndarray) -> np.ndarray:
    """The same camera in OpenGL / MuJoCo axes: columns right, up, backward (it looks along -z)."""
    fwd, left, up = sapien_axes.T
    return np.stack([-left, up, -fwd], axis=1)


def intrinsic_matrix(fovy: float, height: int, width: int) -> np.ndarray:
    """OpenCV camera matrix ``K`` of a pinhole with vertical field of view ``fovy`` (square pixels)."""
    f = 0.5 * height / math.tan(0.5 * fovy)
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class FixedCamera:
    """A camera standing in the scene at ``eye`` looking at ``target`` (task frame, z up)."""

    name: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy: float
    near: float = 0.01
    far: float = 10.0
    image_size: tuple[int, int] = IMAGE_SIZE

    def axes(self) -> np.ndarray:
        """Rotation camera -> task frame, SAPIEN axes (columns forward, left, up)."""
        return look_at_axes(self.eye, self.target)

    def intrinsics(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        h, w = height or self.image_size[0], width or self.image_size[1]
        return intrinsic_matrix(self.fovy, h, w)


@dataclass(frozen=True)
class MountedCamera:
    """A camera fixed to a robot link: ``pos`` and ``quat`` (wxyz, SAPIEN camera axes) in the link frame."""

    name: str
    link: str
    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    fovy: float
    near: float = 0.01
    far: float = 10.0
    image_size: tuple[int, int] = IMAGE_SIZE

    def axes(self) -> np.ndarray:
        """Rotation camera -> link frame, SAPIEN axes (columns forward, left, up)."""
        return quat_to_matrix(np.asarray(self.quat, np.float64))

    def intrinsics(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        h, w = height or self.image_size[0], width or self.image_size[1]
        return intrinsic_matrix(self.fovy, h, w)


#: In front of the table looking back at the workspace and the robot: objects span ~15-25 px at 128 px.
SCENE_CAMERA = FixedCamera("scene", eye=(0.26, 0.0, 0.36), target=(-0.07, 0.0, 0.0), fovy=0.95)
#: On the hand, looking along the fingers (hand +z), offset to see the fingertips; image up is hand -x.
WRIST_CAMERA = MountedCamera(
    "wrist",
    link="hand",
    pos=(0.06, 0.0, 0.02),
    quat=(math.sqrt(0.5), 0.0, -math.sqrt(0.5), 0.0),
    fovy=1.4,
)
#: The cameras a policy can see, by contract name.
CAMERAS: dict[str, FixedCamera | MountedCamera] = {"scene": SCENE_CAMERA, "wrist": WRIST_CAMERA}
#: The task's human-facing render camera (videos, ``env.render()``): not a policy input.
VIEWER_CAMERA = FixedCamera(
    "render_camera", eye=(0.5, 0.45, 0.55), target=(-0.1, 0.0, 0.05), fovy=1.0, image_size=(384, 384)
)
