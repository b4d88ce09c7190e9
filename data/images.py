"""Camera frames to contract images: one aspect-preserving centre crop, then an area resize.

A real camera delivers 640 x 480 (4:3) frames while the simulated cameras, and so the policies'
contract images (:class:`~simbridge.data.spec.CameraSpec`), are square. Squashing 4:3 into 1:1
would show the policy a world stretched sideways by a third; instead :func:`center_crop_resize`
cuts the largest centred window of the contract's aspect ratio and resizes it with
``cv2.INTER_AREA``. The robot's cameras (:mod:`simbridge.deploy.cameras`) and the simulation
wrapper (:mod:`simbridge.training.envs.wrapper`, where it is a no-op: simulated images already
have the contract size) call this one function, and camera intrinsics follow the same crop
(:func:`crop_resize_intrinsics`).
"""

from __future__ import annotations

import numpy as np


def center_crop_box(src_height: int, src_width: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)``: the largest centred window with the aspect of ``height x width``."""
    if min(src_height, src_width, height, width) <= 0:
        raise ValueError(f"sizes must be positive, got {src_height}x{src_width} -> {height}x{width}")
    if src_width * height > width * src_height:  # source is wider: keep its height
        crop_h, crop_w = src_height, max(1, round(src_height * width / height))
    else:  # source is taller (or the same aspect): keep its width
        crop_h, crop_w = max(1, round(src_width * height / width)), src_width
    return (src_height - crop_h) // 2, (src_width - crop_w) // 2, crop_h, crop_w


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H x W [x C]) centre-cropped to the aspect of ``height x width``, then resized to it
    with ``cv2.INTER_AREA``. An image that already has that size is returned as is (no copy)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    import cv2

    top, left, ch, cw = center_crop_box(h, w, height, width)
    crop = image[top : top + ch, left : left + cw]
    if (ch, cw) == (height, width):
        return np.ascontiguousarray(crop)
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)


def crop_resize_intrinsics(k: np.ndarray, src_size: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Camera matrix ``k`` of a ``src_size`` = (width, height) camera after :func:`center_crop_resize` to ``height x width``."""
    src_w, src_h = int(src_size[0]), int(src_size[1])
    top, left, ch, cw = center_crop_box(src_h, src_w, height, width)
    sx, sy = width / cw, height / ch
    out = np.asarray(k, dtype=np.float64).copy()
    out[0, :2] *= sx  # fx, skew
    out[1, 1] *= sy  # fy
    # Pixel centres sit at integer coordinates (OpenCV): a resize by s maps x to (x + 0.5) s - 0.5.
    out[0, 2] = (out[0, 2] - left + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] - top + 0.5) * sy - 0.5
    return out
