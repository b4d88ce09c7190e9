"""logger node: records every episode to the zarr episode store (:mod:`simbridge.data.store`).

One step is written per action the franka node actually executed (``/simbridge/executed_action``),
paired with the latest images and robot state, the action the policy proposed (NaN when none)
and the intervention flag. Episodes are opened by ``~/start`` (or automatically by the first
executed action when ``auto_start`` is true) and committed by ``~/stop``; ``~/discard`` drops
the open episode and ``~/label`` (std_srvs/SetBool) stores the operator's success label on the
last committed one. Metadata (instruction, policy id, condition, seed, ...) come from the node's
parameters at ``~/start`` time, so an orchestrator sets them and then starts the episode.
The open episode is committed every ``commit_every_chunks`` chunks of ``chunk_steps`` steps, with
the commit record fsynced: a crash loses at most those last steps, and the committed part of the
episode is kept as an *incomplete* episode (hidden from training by default, metadata included).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool, Trigger

from simbridge.data.spec import ACTION_DIM, CameraSpec, EpisodeMeta, Observation
from simbridge_ros.common import (
    EE_POSE_TOPIC,
    EXECUTED_ACTION_TOPIC,
    JOINT_STATES_TOPIC,
    POLICY_ACTION_TOPIC,
    RELIABLE,
    expand,
    from_stamp,
    image_topic,
    msg_to_action,
    msg_to_image,
    parse_joint_state,
    parse_pose,
    run_node,
)


def open_writer(path: str, cameras: tuple[CameraSpec, ...], robot: str, chunk_steps: int = 32,
                commit_every_chunks: int = 1) -> Any:
    from simbridge.data.store import EpisodeWriter

    # fsync on: on the robot, a committed step must survive a power cut, not only a crash.
    writer = EpisodeWriter(str(expand(path)), cameras, robot=robot, chunk_steps=chunk_steps,
                           commit_every_chunks=commit_every_chunks, fsync=True)
    return writer.__enter__()


class LoggerNode(Node):
    def __init__(self, *, name: str = "logger", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("store", "runs/episodes.zarr")
        self.declare_parameter("cameras", ["scene"])
        self.declare_parameter("robot", "franka")
        self.declare_parameter("instruction", "")
        self.declare_parameter("task", "")
        self.declare_parameter("policy_id", "")
        self.declare_parameter("condition", "")
        self.declare_parameter("seed", -1)
        # Commit inside the open episode every N chunks of chunk_steps steps (32 x 1 = 3.2 s at 10 Hz):
        # that is the most a crash can lose.
        self.declare_parameter("chunk_steps", 32)
        self.declare_parameter("commit_every_chunks", 1)
        self.declare_parameter("operator", "operator")
        self.declare_parameter("label_by", "")  # "" -> "operator:<operator>"; the twin orchestrator sets "env"
        self.declare_parameter("extra_json", "{}")  # free-form metadata (blinded id, protocol name, ...)
        self.declare_parameter("auto_start", False)
        self.declare_parameter("max_policy_action_age_s", 0.3)

        self.camera_names = list(self.get_parameter("cameras").value)
        self.images: dict[str, np.ndarray] = {}
        self.state: dict[str, Any] = {}
        self.policy_action: tuple[np.ndarray, float] | None = None
        self.writer: Any = None
        self.recording = False
        self.steps = 0
        self.interventions = 0
        self.last_episode: int | None = None
        self.episodes_written = 0

        for cam in self.camera_names:
            self.create_subscription(Image, image_topic(cam), lambda m, n=cam: self._on_image(n, m), RELIABLE)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joints, RELIABLE)
        self.create_subscription(PoseStamped, EE_POSE_TOPIC, self._on_pose, RELIABLE)
        self.create_subscription(JointState, POLICY_ACTION_TOPIC, self._on_policy_action, 10)
        self.create_subscription(JointState, EXECUTED_ACTION_TOPIC, self._on_executed, 10)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.create_service(SetBool, "~/label", self._on_label)

    # --- inputs ----------------------------------------------------------------------------------
    def _on_image(self, name: str, msg: Image) -> None:
        self.images[name] = msg_to_image(msg)

    def _on_joints(self, msg: JointState) -> None:
        self.state["joint_positions"], self.state["gripper_width"] = parse_joint_state(msg)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.state["ee_pose"] = parse_pose(msg)

    def _on_policy_action(self, msg: JointState) -> None:
        cmd = msg_to_action(msg)
        self.policy_action = (cmd.action, time.monotonic())

    def _on_executed(self, msg: JointState) -> None:
        if not self.recording:
            if not self.get_parameter("auto_start").value:
                return
            ok, why = self.start_episode()
            if not ok:
                self.get_logger().warning(f"auto start failed: {why}", throttle_duration_sec=5.0)
                return
        missing = [c for c in self.camera_names if c not in self.images]
        if missing or "ee_pose" not in self.state or "joint_positions" not in self.state:
            self.get_logger().warning(f"step not recorded: no data yet from {missing or ['robot state']}",
                                      throttle_duration_sec=2.0)
            return
        cmd = msg_to_action(msg)
        proposed = np.full(ACTION_DIM, np.nan, np.float32)
        max_age = float(self.get_parameter("max_policy_action_age_s").value)
        if self.policy_action is not None and time.monotonic() - self.policy_action[1] <= max_age:
            proposed = self.policy_action[0]
        obs = Observation(
            images={c: self.images[c] for c in self.camera_names}, ee_pose=self.state["ee_pose"],
            gripper_width=float(self.state["gripper_width"]), joint_positions=self.state["joint_positions"],
            instruction=self.get_parameter("instruction").value or "(none)", timestamp=from_stamp(msg.header.stamp),
        )
        self.writer.add_step(obs, cmd.action, policy_action=proposed, intervention=cmd.intervention)
        self.steps += 1
        self.interventions += int(cmd.intervention)

    # --- episode control ---------------------------------------------------------------------------
    def start_episode(self) -> tuple[bool, str]:
        if self.recording:
            return False, f"an episode is already recording ({self.steps} steps); stop or discard it first"
        if self.writer is None:
            missing = [c for c in self.camera_names if c not in self.images]
            if missing:
                return False, f"no images yet from camera(s) {missing}; is the camera node running?"
            cams = tuple(CameraSpec(c, *self.images[c].shape[:2]) for c in self.camera_names)
            p = self.get_parameter
            self.writer = open_writer(p("store").value, cams, p("robot").value, int(p("chunk_steps").value),
                                      int(p("commit_every_chunks").value))
        self.writer.begin_episode(self._meta())  # a crash keeps the metadata with the committed steps
        self.recording, self.steps, self.interventions = True, 0, 0
        return True, "recording"

    def _meta(self) -> EpisodeMeta:
        """The episode's metadata from the node's parameters (set by the orchestrator before ~/start)."""
        p = self.get_parameter
        seed = int(p("seed").value)
        return EpisodeMeta(
            instruction=p("instruction").value or "(none)", task=p("task").value, policy_id=p("policy_id").value,
            num_interventions=self.interventions, robot=p("robot").value, split=p("condition").value,
            seed=None if seed < 0 else seed, extra=json.loads(p("extra_json").value or "{}"),
        )

    def stop_episode(self) -> tuple[bool, str]:
        if not self.recording:
            return False, "no episode is recording"
        self.recording = False
        if self.steps == 0:
            self.writer.discard_episode()
            return False, "the episode had no executed steps; nothing written"
        self.last_episode = int(self.writer.end_episode(self._meta()))
        self.episodes_written += 1
        return True, json.dumps({"episode": self.last_episode, "steps": self.steps})

    def _on_start(self, request, response):
        response.success, response.message = self.start_episode()
        return response

    def _on_stop(self, request, response):
        response.success, response.message = self.stop_episode()
        return response

    def _on_discard(self, request, response):
        if self.recording:
            self.writer.discard_episode()
            self.recording = False
            response.success, response.message = True, f"discarded {self.steps} steps"
        else:
            response.success, response.message = False, "no episode is recording"
        return response

    def _on_label(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.last_episode is None:
            response.success, response.message = False, "no episode committed yet"
            return response
        from simbridge.data.store import EpisodeStore

        by = self.get_parameter("label_by").value or f"operator:{self.get_parameter('operator').value}"
        EpisodeStore(str(expand(self.get_parameter("store").value))).label(self.last_episode, bool(request.data), by)
        response.success, response.message = True, f"episode {self.last_episode}: success={request.data} by {by}"
        return response

    def close(self) -> None:
        """Commit a recording episode (no data lost on shutdown) and close the store."""
        if self.recording and self.steps:
            self.stop_episode()
        if self.writer is not None:
            self.writer.__exit__(None, None, None)
            self.writer = None


def main(args=None) -> None:
    run_node(LoggerNode, args)


if __name__ == "__main__":
    main()
