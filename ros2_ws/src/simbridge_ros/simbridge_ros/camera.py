"""camera node: one camera (:mod:`simbridge.deploy.cameras`) published as ROS images.

The launch files start one per camera of the bundle's contract, named ``camera_<name>``
(:mod:`simbridge.deploy.graph_cameras`), each with its own ``source`` (device index, video file,
URL, ``realsense[:serial]``) and optional RealSense ``serial``; ``name`` defaults to the part of
the node name after ``camera_``.

Publishes ``sensor_msgs/Image`` (rgb8) on ``/simbridge/camera/<name>/image_raw`` and
``sensor_msgs/CameraInfo`` (intrinsics from the ``simbridge calibrate intrinsics`` camera_info
YAML when ``calibration`` is given, cropped and scaled as the frames are)
next to it. Frames are read in a dedicated thread, so a slow or blocked device never stalls the
executor. When the camera drops (unplugged, USB timeout, a video file that ended) the node
closes it and reconnects with a growing back-off; for a video file this restarts it from the
first frame. Once per second ``.../diagnostics`` (std_msgs/String, JSON) reports the measured
fps, dropped frames, reconnects and the state, so a flaky camera is visible, not silent.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from simbridge_ros.common import (
    RELIABLE,
    camera_diagnostics_topic,
    camera_info_msg,
    camera_info_topic,
    image_to_msg,
    image_topic,
    json_msg,
    run_node,
)


def load_intrinsics(path: str, width: int, height: int) -> tuple[list[float], list[float], str]:
    """(K row-major, distortion, model) from a ``simbridge calibrate intrinsics`` camera_info YAML,
    with K following the camera's fit of frames to the policy's width x height (a centre crop to
    that aspect ratio, then a resize: :func:`simbridge.data.images.center_crop_resize`)."""
    from simbridge.calibration.camera_info import load_camera_info
    from simbridge.data.images import crop_resize_intrinsics

    info = load_camera_info(path)
    k = crop_resize_intrinsics(np.asarray(info.K, dtype=np.float64), info.image_size, height, width)
    dist = [float(v) for v in np.asarray(info.dist).ravel()]
    return [float(v) for v in k.ravel()], dist, "rational_polynomial" if len(dist) == 8 else "plumb_bob"


def camera_source(source: str, serial: str) -> str:
    """The source to open: ``serial`` picks a RealSense (``source`` empty or ``realsense``); ValueError
    when it contradicts ``source``."""
    if not serial:
        return source
    if source in ("", "realsense") or source == f"realsense:{serial}":
        return f"realsense:{serial}"
    raise ValueError(f"serial {serial!r} names a RealSense camera but source is {source!r}: set source to "
                     "'realsense' (or leave it empty), or clear serial")


def make_camera(node: Node) -> Any:
    """``simbridge.deploy.cameras.make_camera``: ``realsense[:serial]``, a device index/path, a URL or a video file."""
    from simbridge.deploy.cameras import make_camera as make

    p = node.get_parameter
    source = camera_source(str(p("source").value), str(p("serial").value))
    if not source:
        raise ValueError(f"camera {node.cam_name!r} has no source: set {node.get_name()}.source (or camera_sources:=)")
    return make(source, width=int(p("width").value), height=int(p("height").value),
                fps=float(p("fps").value), name=node.cam_name)


def default_camera_name(node_name: str) -> str:
    """``camera_wrist`` -> ``wrist``; any other node name -> ``scene``."""
    return node_name.removeprefix("camera_") if node_name.startswith("camera_") else "scene"


class CameraNode(Node):
    def __init__(self, camera: Any | None = None, *, name: str = "camera", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("name", "")  # "": from the node name (camera_wrist -> wrist), else scene
        self.declare_parameter("source", "0")  # device index, path or video file (or a URL OpenCV opens)
        self.declare_parameter("serial", "")  # RealSense serial number (source "" or realsense)
        self.declare_parameter("width", 128)
        self.declare_parameter("height", 128)
        self.declare_parameter("fps", 30.0)
        self.declare_parameter("calibration", "")
        self.declare_parameter("reconnect_max_backoff_s", 2.0)
        self.cam_name = self.get_parameter("name").value or default_camera_name(self.get_name())
        self.frame_id = f"{self.cam_name}_camera_optical_frame"
        self.camera = camera if camera is not None else make_camera(self)
        calib = self.get_parameter("calibration").value
        w, h = int(self.get_parameter("width").value), int(self.get_parameter("height").value)
        self.intrinsics = load_intrinsics(calib, w, h) if calib else None

        self.pub_image = self.create_publisher(Image, image_topic(self.cam_name), RELIABLE)
        self.pub_info = self.create_publisher(CameraInfo, camera_info_topic(self.cam_name), RELIABLE)
        self.pub_diag = self.create_publisher(String, camera_diagnostics_topic(self.cam_name), 10)
        self.frames = 0
        self.reconnects = 0  # node-level reopen after the camera gave up (CameraError)
        self.state = "connecting"
        self.last_error = ""
        self._window: list[float] = []
        self._stop = threading.Event()
        self.create_timer(1.0, self._publish_diagnostics)
        self._thread = threading.Thread(target=self._capture_loop, name=f"camera-{self.cam_name}", daemon=True)
        self._thread.start()

    def _capture_loop(self) -> None:
        backoff = 0.05
        max_backoff = float(self.get_parameter("reconnect_max_backoff_s").value)
        connected = False
        while not self._stop.is_set():
            if not connected:
                try:
                    self.camera.connect()
                    connected, backoff, self.state = True, 0.05, "streaming"
                except Exception as err:
                    self.state, self.last_error = "reconnecting", f"{type(err).__name__}: {err}"
                    self.get_logger().warning(f"camera {self.cam_name}: cannot open ({err}); retrying",
                                              throttle_duration_sec=5.0)
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, max_backoff)
                    continue
            try:
                frame, stamp = self.camera.read()
            except Exception as err:  # CameraError: the camera's own reconnect attempts failed
                self.reconnects += 1
                self.state, self.last_error = "reconnecting", f"{type(err).__name__}: {err}"
                self.get_logger().warning(f"camera {self.cam_name} dropped ({err}); reconnecting")
                self._safe_disconnect()
                connected = False
                continue
            try:
                self._publish(frame, stamp)
            except Exception:
                # Ctrl-C shuts the context down before close() stops this thread: end quietly.
                if self._stop.is_set() or not self.context.ok():
                    return
                raise
            self._window = [*self._window[-59:], stamp]

    def _publish(self, frame: np.ndarray, stamp: float) -> None:
        self.frames += 1
        self.pub_image.publish(image_to_msg(frame, stamp, self.frame_id))
        h, w = frame.shape[:2]
        k, d, model = self.intrinsics if self.intrinsics else (None, None, "plumb_bob")
        self.pub_info.publish(camera_info_msg(w, h, stamp, self.frame_id, k, d, model))

    def fps(self) -> float:
        w = self._window
        return (len(w) - 1) / (w[-1] - w[0]) if len(w) > 2 and w[-1] > w[0] else 0.0

    def diagnostics(self) -> dict:
        """Frames published by this node plus the camera's own counters (drops, in-driver reconnects)."""
        cam_drops = int(getattr(self.camera, "drops", 0))
        cam_reconnects = int(getattr(self.camera, "reconnects", 0))
        return {
            "camera": self.cam_name, "state": self.state, "fps": round(self.fps(), 2), "frames": self.frames,
            "drops": cam_drops, "reconnects": self.reconnects + cam_reconnects, "last_error": self.last_error,
        }

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(json_msg(**self.diagnostics()))

    def _safe_disconnect(self) -> None:
        try:
            self.camera.disconnect()
        except Exception as err:
            self.get_logger().debug(f"disconnect after drop: {err}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._safe_disconnect()


def main(args=None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
