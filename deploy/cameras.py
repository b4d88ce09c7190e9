"""Cameras for the robot runtime: RGB frames in the contract's format, with reconnects and counters.

Every camera gives ``read() -> (frame, timestamp)``: ``frame`` is ``uint8 (height, width, 3)`` **RGB**
(OpenCV captures BGR; converted here) fitted to the policy's camera spec by
:func:`simbridge.data.images.center_crop_resize` (the centred window of the spec's aspect ratio,
resized with ``cv2.INTER_AREA``: a 640 x 480 frame is cropped to 480 x 480, never stretched; the
simulation path uses the same function), ``timestamp`` is
``time.time()`` at capture. Cameras drop out in practice (USB resets, timeouts, a video file that
ends), so :meth:`Camera.read` reconnects on its own (``max_reconnects`` attempts with a short
back-off) before raising :class:`CameraError`; ``frames``, ``drops``, ``reconnects`` and the
measured ``fps`` show how healthy the stream is.

* :class:`OpenCVCamera` — a device index (``0``), a device path (``/dev/video2``), a stream URL or
  a video file (played in real time at ``fps`` and restarted at its end: handy for replaying a
  recorded scene through the whole stack).
* :class:`RealSenseCamera` — Intel RealSense colour stream through ``pyrealsense2`` (imported only
  when used; ``pip install pyrealsense2``).

``make_camera("realsense:<serial>" | "0" | "/dev/video0" | "clip.mp4", ...)`` picks the backend.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simbridge.data.images import center_crop_resize

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """A camera cannot be opened or stopped delivering frames. The message names it and the fix."""


class Camera(ABC):
    """A source of RGB frames at a fixed size. Use as a context manager or connect()/disconnect()."""

    def __init__(self, name: str, width: int, height: int, fps: float, max_reconnects: int = 3) -> None:
        if width <= 0 or height <= 0 or not fps > 0:
            raise ValueError(
                f"camera {name!r}: width, height and fps must be positive, got {width}x{height}@{fps}"
            )
        self.name = name
        self.width, self.height, self.fps_nominal = int(width), int(height), float(fps)
        self.max_reconnects = int(max_reconnects)
        self.frames = 0
        self.drops = 0
        self.reconnects = 0
        self._last_stamp: float | None = None
        self._fps_ema = 0.0

    # backend hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the device; raise CameraError with a clear message when it cannot."""

    @abstractmethod
    def _grab(self) -> np.ndarray | None:
        """One frame as captured (BGR or RGB, any size), or None when the stream failed."""

    @abstractmethod
    def _close(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    _frame_is_bgr = True

    # public API -------------------------------------------------------------------------------
    def connect(self) -> None:
        if not self.is_connected:
            self._open()

    def disconnect(self) -> None:
        self._close()

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def read(self) -> tuple[np.ndarray, float]:
        """The next frame ``(H, W, 3)`` uint8 RGB and its capture time; reconnects on failure."""
        if not self.is_connected:
            self.connect()
        raw = self._grab()
        attempt = 0
        while raw is None:
            if attempt >= self.max_reconnects:
                raise CameraError(
                    f"camera {self.name!r} stopped delivering frames and {attempt} reconnect attempt(s) failed: "
                    f"check its cable/power and that no other program uses it"
                )
            attempt += 1
            self.reconnects += 1
            log.warning("camera %r: no frame, reconnecting (attempt %d)", self.name, attempt)
            self._close()
            time.sleep(0.05 * attempt)
            try:
                self._open()
            except CameraError:
                continue
            raw = self._grab()
        stamp = time.time()
        self._count(stamp)
        return self._to_rgb(raw), stamp

    def _to_rgb(self, raw: np.ndarray) -> np.ndarray:
        import cv2

        frame = np.asarray(raw)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        elif self._frame_is_bgr:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        frame = center_crop_resize(frame, self.height, self.width)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _count(self, stamp: float) -> None:
        self.frames += 1
        if self._last_stamp is not None:
            dt = stamp - self._last_stamp
            if dt > 1.5 / self.fps_nominal:  # frames we never saw
                self.drops += max(0, round(dt * self.fps_nominal) - 1)
            if dt > 0:
                inst = 1.0 / dt
                self._fps_ema = inst if self._fps_ema == 0 else 0.9 * self._fps_ema + 0.1 * inst
        self._last_stamp = stamp

    @property
    def fps(self) -> float:
        """Measured frame rate (exponential moving average)."""
        return self._fps_ema

    def stats(self) -> dict[str, Any]:
        return {
            "camera": self.name,
            "connected": self.is_connected,
            "frames": self.frames,
            "drops": self.drops,
            "reconnects": self.reconnects,
            "fps": round(self.fps, 2),
        }


def _parse_source(source: int | str | Path) -> int | str:
    if isinstance(source, int):
        return source
    s = str(source)
    return int(s) if s.isdigit() else s


class OpenCVCamera(Camera):
    """``cv2.VideoCapture`` on a device index, device path, stream URL or video file."""

    def __init__(
        self,
        source: int | str | Path,
        width: int = 128,
        height: int = 128,
        fps: float = 30.0,
        name: str | None = None,
        max_reconnects: int = 3,
        loop_video: bool = True,
        realtime_video: bool = True,
    ) -> None:
        self.source = _parse_source(source)
        super().__init__(name or str(self.source), width, height, fps, max_reconnects)
        self.is_file = (
            isinstance(self.source, str) and "://" not in self.source and not self.source.startswith("/dev/")
        )
        self.loop_video = loop_video
        self.realtime_video = realtime_video
        self._cap: Any = None
        self._next_due = 0.0

    @property
    def is_connected(self) -> bool:
        return self._cap is not None

    def _open(self) -> None:
        import cv2

        if self.is_file and not Path(self.source).is_file():
            raise CameraError(
                f"camera {self.name!r}: video file {self.source} does not exist; pass an existing file"
            )
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            if isinstance(self.source, int) or str(self.source).startswith("/dev/"):
                fix = "is it plugged in (ls /dev/video*), is the index right, is another program using it?"
            else:
                fix = "is the file a video OpenCV can decode (FFV1/MJPG/H.264) or the URL reachable?"
            raise CameraError(f"cannot open camera {self.name!r} (source {self.source!r}): {fix}")
        if not self.is_file:  # live devices: ask for the nominal rate and a short queue (fresh frames)
            cap.set(cv2.CAP_PROP_FPS, self.fps_nominal)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        self._next_due = time.monotonic()

    def _grab(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        if self.is_file and self.realtime_video:  # play files at their nominal rate, like a camera
            delay = self._next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_due = max(
                self._next_due + 1.0 / self.fps_nominal, time.monotonic() - 1.0 / self.fps_nominal
            )
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self.is_file and self.loop_video and Path(self.source).is_file():
            import cv2

            # End of the file: restart it (counted as a reconnect, like a camera coming back).
            self.reconnects += 1
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
            if ok and frame is not None:
                return frame
        return None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class RealSenseCamera(Camera):
    """Intel RealSense colour stream (``pyrealsense2``, imported lazily)."""

    _frame_is_bgr = False  # the colour stream is configured as rgb8

    def __init__(
        self,
        serial: str | None = None,
        width: int = 128,
        height: int = 128,
        fps: float = 30.0,
        name: str | None = None,
        capture_size: tuple[int, int] = (640, 480),
        max_reconnects: int = 3,
        timeout_ms: int = 1000,
    ) -> None:
        super().__init__(name or f"realsense:{serial or 'any'}", width, height, fps, max_reconnects)
        self.serial = serial
        self.capture_size = capture_size
        self.timeout_ms = timeout_ms
        self._pipe: Any = None

    @property
    def is_connected(self) -> bool:
        return self._pipe is not None

    def _open(self) -> None:
        try:
            import pyrealsense2 as rs
        except ImportError as exc:
            raise CameraError(
                f"camera {self.name!r} needs pyrealsense2: pip install pyrealsense2 (or use an OpenCV source)"
            ) from exc
        pipe, cfg = rs.pipeline(), rs.config()
        if self.serial:
            cfg.enable_device(self.serial)
        w, h = self.capture_size
        cfg.enable_stream(rs.stream.color, w, h, rs.format.rgb8, int(self.fps_nominal))
        try:
            pipe.start(cfg)
        except RuntimeError as exc:
            raise CameraError(
                f"cannot start RealSense {self.serial or '(any)'}: {exc}. Is it connected to a USB 3 port "
                f"(rs-enumerate-devices lists it) and is the serial right?"
            ) from exc
        self._pipe = pipe

    def _grab(self) -> np.ndarray | None:
        try:
            frames = self._pipe.wait_for_frames(self.timeout_ms)
        except RuntimeError:  # timeout: the device stalled or was unplugged
            return None
        color = frames.get_color_frame()
        return np.asanyarray(color.get_data()).copy() if color else None

    def _close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError as exc:
                log.debug("stopping RealSense: %s", exc)
            self._pipe = None


#: Camera backends by source prefix ("realsense:<serial>"); anything else goes to OpenCV.
CAMERA_BACKENDS: dict[str, Callable[..., Camera]] = {
    "realsense": lambda rest, **kw: RealSenseCamera(serial=rest or None, **kw),
    "opencv": lambda rest, **kw: OpenCVCamera(rest, **kw),
}


def make_camera(source: int | str | Path, **kwargs: Any) -> Camera:
    """A camera from a source string: ``realsense[:serial]``, ``opencv:<src>``, or an OpenCV source."""
    s = str(source)
    prefix, _, rest = s.partition(":")
    if prefix in CAMERA_BACKENDS and "://" not in s:
        return CAMERA_BACKENDS[prefix](rest, **kwargs)
    return OpenCVCamera(source, **kwargs)
