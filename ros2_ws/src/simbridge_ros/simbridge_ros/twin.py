"""twin node: the simulated Franka (:class:`simbridge.deploy.twin.TwinSim`) as a ROS node.

Hosts franky-sim in-process on ``127.0.0.1`` with the MuJoCo scene that mirrors the ManiSkill
task; the franka node connects to it through franky exactly as to a real arm. The node renders
the scene's cameras headless in its own thread (never inside the simulator's 1 kHz loop) and
publishes them on the same topics as the camera node, so policy and logger cannot tell the twin
from the lab. ``/simbridge/twin/success`` (std_msgs/Bool) reports task success computed from the
object poses; ``~/reset`` (std_srvs/Trigger) puts the objects back for the next episode.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from simbridge_ros.common import (
    LATCHED,
    RELIABLE,
    TWIN_STATUS_TOPIC,
    TWIN_SUCCESS_TOPIC,
    camera_info_msg,
    camera_info_topic,
    image_to_msg,
    image_topic,
    json_msg,
    run_node,
)


def make_twin(node: Node) -> Any:
    """Start a TwinSim from parameters (``scene_file``: YAML of TwinScene; camera ``width``/``height``)."""
    from simbridge.data.config import load_config
    from simbridge.deploy.twin import TwinScene, TwinSim

    p = node.get_parameter
    scene = load_config(TwinScene, p("scene_file").value) if p("scene_file").value else None
    twin = TwinSim(scene=scene, seed=int(p("seed").value), camera_size=(int(p("height").value), int(p("width").value)),
                   sim_speed=float(p("sim_speed").value))
    twin.start()
    return twin


class TwinNode(Node):
    def __init__(self, twin: Any | None = None, *, name: str = "twin", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("sim_speed", 0.5)  # simulated s per wall s (1.0 with cores to spare)
        self.declare_parameter("scene_file", "")  # TwinScene YAML (colours, region, light); "" = the task's
        self.declare_parameter("seed", 0)
        self.declare_parameter("width", 128)
        self.declare_parameter("height", 128)
        self.declare_parameter("cameras", ["scene"])
        self.declare_parameter("camera_rate_hz", 10.0)
        # JSON object of TwinScene fields applied at the next ~/reset (an evaluation condition), e.g.
        # {"light_range": [0.4, 0.6], "num_distractors": 2}; "{}" = the base scene.
        self.declare_parameter("scene_overrides_json", "{}")
        self._owns_twin = twin is None
        self.twin = twin if twin is not None else make_twin(self)
        self.cameras = list(self.get_parameter("cameras").value)
        self.size = (int(self.get_parameter("height").value), int(self.get_parameter("width").value))
        self.episode_seed = int(self.get_parameter("seed").value)
        self.pubs = {
            c: (self.create_publisher(Image, image_topic(c), RELIABLE),
                self.create_publisher(CameraInfo, camera_info_topic(c), RELIABLE))
            for c in self.cameras
        }
        self.pub_success = self.create_publisher(Bool, TWIN_SUCCESS_TOPIC, LATCHED)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.frames = 0
        self.render_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._render_loop, name="twin-render", daemon=True)
        self._thread.start()
        # Latched: a franka node started before (or after) this one learns that franky-sim now serves,
        # and at which loopback address, instead of failing its first connection attempt.
        self.pub_status = self.create_publisher(String, TWIN_STATUS_TOPIC, LATCHED)
        self.pub_status.publish(json_msg(ready=True, hostname=self.twin.hostname, cameras=self.cameras))
        self.get_logger().info(f"twin running at {self.twin.hostname}, cameras {self.cameras}")

    @property
    def hostname(self) -> str:
        return self.twin.hostname

    def _render_loop(self) -> None:
        period = 1.0 / float(self.get_parameter("camera_rate_hz").value)
        next_t = time.monotonic()
        # SIGINT shuts the context down before close() stops this thread: stop publishing then.
        while not self._stop.is_set() and self.context.ok():
            for cam in self.cameras:
                try:
                    frame = self.twin.render(cam, size=self.size)
                except Exception as err:
                    self.render_errors += 1
                    self.get_logger().error(f"twin render {cam}: {err}", throttle_duration_sec=5.0)
                    continue
                stamp = time.time()
                img_pub, info_pub = self.pubs[cam]
                if not self._publish(img_pub, image_to_msg(frame, stamp, f"{cam}_camera_optical_frame")):
                    return
                info_pub.publish(camera_info_msg(frame.shape[1], frame.shape[0], stamp, f"{cam}_camera_optical_frame"))
            self.frames += 1
            if not self._publish(self.pub_success, Bool(data=bool(self.twin.success()))):
                return
            next_t += period
            self._stop.wait(max(0.0, next_t - time.monotonic()))
            next_t = max(next_t, time.monotonic() - period)

    def _publish(self, publisher, msg) -> bool:
        """Publish; False once the context is gone (shutdown raced the loop's check)."""
        try:
            publisher.publish(msg)
            return True
        except Exception:
            if self.context.ok():
                raise
            return False

    def success(self) -> bool:
        return bool(self.twin.success())

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.episode_seed += 1
        try:
            layout = self.twin.reset(seed=self.episode_seed, scene=self._scene())
        except Exception as err:
            response.success, response.message = False, f"twin reset failed: {type(err).__name__}: {err}"
            return response
        instruction = getattr(layout, "instruction", "")
        response.success = True
        response.message = json.dumps({"seed": self.episode_seed, "instruction": instruction})
        return response

    def _scene(self) -> Any:
        """The base TwinScene (``scene_file``) with ``scene_overrides_json`` applied, validated."""
        from simbridge.data.config import load_config
        from simbridge.deploy.twin import TwinScene

        overrides = json.loads(self.get_parameter("scene_overrides_json").value or "{}")
        files = [self.get_parameter("scene_file").value] if self.get_parameter("scene_file").value else None
        return load_config(TwinScene, files, data=overrides)

    def close(self) -> None:
        # Rendering stops first, whatever else fails: a render thread still running while the
        # process tears MuJoCo down crashes it (exit -11 seen under ros2 launch).
        self._stop.set()
        if self.context.ok():  # under ros2 launch the context is already shut down by SIGINT
            self.pub_status.publish(json_msg(ready=False, hostname=self.twin.hostname, cameras=self.cameras))
        self._thread.join(timeout=5.0)
        if self._owns_twin:
            self.twin.close()


def main(args=None) -> None:
    run_node(TwinNode, args)


if __name__ == "__main__":
    main()
