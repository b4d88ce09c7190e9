"""policy node: a verified ONNX bundle (or any ``spec.Policy``) driving the arm at the control rate.

Subscribes to the contract's camera topics, the joint states and the end-effector pose; every
control period it assembles a contract :class:`~simbridge.data.spec.Observation`, asks the
policy for an action chunk when the chunk executor needs one (receding horizon or temporal
ensembling, :mod:`simbridge.deploy.chunking`), and publishes one action under the source
``policy:<bundle-id>``, stamped with the time of the observation it was computed from, plus its
publish time (the franka node's safety filter bounds both ages: an image that was old before a
slow inference started is caught, not only a late delivery). Observations older than ``max_observation_age_s`` (a stalled
camera) produce no action at all, so the watchdog stops the arm. ``trace`` keeps, per recent
command, a :class:`~simbridge.deploy.latency.CommandTiming`: frame capture, receipt, observation
assembly, inference start / end, publication (latency diagnostics and the benchmark).

Before the first action it checks the bundle against the running cameras: every camera of the
contract must have a publisher and deliver images of the contract's size. A mismatch is
refused (status ``refused`` with the reason) and nothing is ever published, so the arm cannot
move under a policy that would see the wrong images.

Inference runs off the control tick by default (``inference: async``,
:class:`simbridge.deploy.async_inference.AsyncChunkRunner`): a worker thread computes the next chunk
while the current one executes, the tick never waits on the model, and chunks older than
``max_chunk_age_s`` are dropped. ``inference: sync`` predicts inside the tick (the chunk executors of
:mod:`simbridge.deploy.chunking`), for comparison.

Run-time parameters: ``instruction``, ``enabled`` and ``bundle`` (a new bundle is loaded and
verified again); ``~/reset`` (std_srvs/Trigger) starts a new episode (policy + chunk state).

``bundle: ws://host:port`` runs a policy served by ``simbridge serve`` (a torch checkpoint on a GPU
machine; :class:`simbridge.deploy.remote_policy.RemotePolicy`) through the same chunk executors, the
same camera check and the same safety filter; actions carry ``policy:ckpt-<hash>``. An unreachable
server or a broken connection gives no actions (fail closed); ``trusted_keys`` refuses servers:
only bundles carry signatures.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from simbridge.data.spec import Observation
from simbridge.deploy.latency import NAN, CommandTiming
from simbridge_ros.common import (
    ACTION_TOPIC,
    EE_POSE_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED,
    POLICY_ACTION_TOPIC,
    POLICY_STATUS_TOPIC,
    RELIABLE,
    action_to_msg,
    from_stamp,
    image_topic,
    json_msg,
    msg_to_image,
    parse_joint_state,
    parse_pose,
    run_node,
)


def load_bundle_policy(path: str, providers: list[str] | None = None, trusted_keys: list[str] | None = None) -> Any:
    """The bundle at ``path``; with ``trusted_keys`` (public-key PEM paths) only one signed by them.
    ``ws://host:port``: the policy served there (refused when ``trusted_keys`` are set)."""
    from simbridge.deploy.remote_policy import RemotePolicy, is_server_url
    from simbridge.deploy.runtime import BundleError, BundlePolicy, resolve_bundle

    if is_server_url(path):
        if trusted_keys:
            raise BundleError(f"trusted_keys are set but {path} is a policy server: only bundles carry signatures; "
                              "export the checkpoint and sign the bundle, or clear trusted_keys")  # fmt: skip
        return RemotePolicy(path)

    return BundlePolicy(resolve_bundle(path), providers=providers, trusted_keys=trusted_keys or ())


def policy_id(policy: Any) -> str:
    return str(getattr(policy, "bundle_id", None) or getattr(policy, "policy_id", None) or type(policy).__name__)


def make_chunk_executor(mode: str, chunk_size: int, execute_steps: int, ensemble_decay: float) -> Any:
    from simbridge.deploy.chunking import make_chunk_executor as make

    return make(mode, chunk_size=chunk_size, execute_steps=execute_steps, ensemble_decay=ensemble_decay)


class PolicyNode(Node):
    def __init__(self, policy: Any | None = None, *, name: str = "policy", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.declare_parameter("bundle", "")
        self.declare_parameter("instruction", "")
        self.declare_parameter("enabled", True)
        self.declare_parameter("control_rate_hz", 0.0)  # 0: the bundle's contract rate
        self.declare_parameter("chunk_mode", "receding")  # receding | ensemble
        self.declare_parameter("execute_steps", 0)  # receding horizon: steps run per prediction (0: all)
        self.declare_parameter("ensemble_decay", 0.01)  # temporal ensembling weight exp(-decay * age)
        self.declare_parameter("max_observation_age_s", 0.3)
        self.declare_parameter("camera_timeout_s", 10.0)
        self.declare_parameter("publish_actions", True)  # false: only /simbridge/policy_action (teleop mux)
        self.declare_parameter("source", "policy")
        self.declare_parameter("inference", "async")  # async: off the control tick | sync: inside it
        self.declare_parameter("request_below", 0)  # async: ask for the next chunk below this many queued (0: half)
        self.declare_parameter("max_chunk_age_s", 0.5)  # async: drop chunks/actions planned from older observations
        # Public keys (PEM paths) of trusted exporters: when set, only bundles they signed are loaded.
        self.declare_parameter("trusted_keys", [""])

        self.images: dict[str, tuple[np.ndarray, float]] = {}  # camera -> (frame, capture stamp)
        self._received: dict[str, float] = {}  # camera -> when its current frame arrived (wall clock)
        # observation stamp -> (frame received, observation assembled): joined to the chunk planned from it
        self._assembly: dict[float, tuple[float, float]] = {}
        self._chunk_timing = CommandTiming(NAN, NAN, NAN, NAN, NAN, NAN)
        self.state: dict[str, Any] = {}
        self.status_text = "starting"
        self.refusal = ""
        self.verified = False
        self._image_subs: list = []
        self._timer = None
        self._started = time.monotonic()
        self.steps = 0
        self.predictions = 0
        self.trace: deque[CommandTiming] = deque(maxlen=1000)  # per published command: where its latency went
        self.ticks: deque[tuple[float, float]] = deque(maxlen=1000)  # (tick start monotonic, tick duration s)

        self.pub_action = self.create_publisher(JointState, ACTION_TOPIC, 10)
        self.pub_policy_action = self.create_publisher(JointState, POLICY_ACTION_TOPIC, 10)
        self.pub_status = self.create_publisher(String, POLICY_STATUS_TOPIC, LATCHED)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joints, RELIABLE)
        self.create_subscription(PoseStamped, EE_POSE_TOPIC, self._on_pose, RELIABLE)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.policy: Any = None
        self.runner: Any = None
        if policy is not None:
            self._install(policy)
        elif self.get_parameter("bundle").value:
            self._install(load_bundle_policy(self.get_parameter("bundle").value, trusted_keys=self._trusted_keys()))
        else:
            self._set_status("idle", "no bundle: set the 'bundle' parameter")

    # --- policy loading and verification ---------------------------------------------------------
    def _trusted_keys(self) -> list[str]:
        return [k for k in self.get_parameter("trusted_keys").value if k]

    def _install(self, policy: Any) -> None:
        old, self.policy = self.policy, policy
        if old is not None and old is not policy and hasattr(old, "close"):
            old.close()  # a remote policy's connection
        self.get_logger().info(f"policy: {policy!r}")  # which bundle / server, and where it runs
        contract = policy.contract
        self.contract = contract
        p = self.get_parameter
        self.chunker = make_chunk_executor(p("chunk_mode").value, contract.chunk_size, int(p("execute_steps").value),
                                           float(p("ensemble_decay").value))
        self.source = f"{p('source').value}:{policy_id(policy)}"
        for sub in self._image_subs:
            self.destroy_subscription(sub)
        self.images.clear()
        self._image_subs = [
            self.create_subscription(Image, image_topic(cam.name), lambda m, n=cam.name: self._on_image(n, m), RELIABLE)
            for cam in contract.observation.cameras
        ]
        rate = float(p("control_rate_hz").value) or contract.action.control_rate_hz
        self._period = 1.0 / rate
        self._chunk_obs_time, self._chunk_step = 0.0, 0
        if self.runner is not None:
            self.runner.close()
        self.runner = None
        if p("inference").value == "async":
            from simbridge.deploy.async_inference import AsyncChunkRunner

            mode = p("chunk_mode").value
            self.runner = AsyncChunkRunner(
                policy.predict, self._period, contract.chunk_size, request_below=int(p("request_below").value),
                max_chunk_age_s=float(p("max_chunk_age_s").value),
                aggregate="average" if mode == "ensemble" else "replace", decay=float(p("ensemble_decay").value))
        elif p("inference").value != "sync":
            raise ValueError(f"inference: 'async' or 'sync', got {p('inference').value!r}")
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._timer = self.create_timer(1.0 / rate, self._on_tick)
        self.verified, self.refusal = False, ""
        self._started = time.monotonic()
        self.policy.reset()
        self.chunker.reset()
        self._set_status("verifying", f"{self.source}: waiting for cameras {list(contract.observation.camera_names)}")

    def _verify(self) -> bool:
        """Check the running cameras against the contract; refuse (permanently) on a mismatch."""
        if self.verified or self.refusal:
            return self.verified
        spec = self.contract.observation
        for cam in spec.cameras:
            got = self.images.get(cam.name)
            if got is not None and got[0].shape != cam.shape:
                return self._refuse(
                    f"camera {cam.name!r} publishes {got[0].shape[1]}x{got[0].shape[0]} images but the bundle expects "
                    f"{cam.width}x{cam.height}; set the camera's width/height parameters or export for this camera"
                )
        missing = [c.name for c in spec.cameras if c.name not in self.images]
        if missing:
            if time.monotonic() - self._started > float(self.get_parameter("camera_timeout_s").value):
                running = sorted(
                    t.split("/")[3] for t, _ in self.get_topic_names_and_types()
                    if t.startswith("/simbridge/camera/") and t.endswith("/image_raw")
                )
                return self._refuse(f"the bundle needs camera(s) {missing} but the running cameras are {running}")
            return False
        self.verified = True
        self._set_status("running", f"{self.source}: cameras match the contract")
        return True

    def _refuse(self, reason: str) -> bool:
        self.refusal = reason
        self.get_logger().error(f"refusing bundle {self.source}: {reason}")
        self._set_status("refused", reason)
        return False

    # --- callbacks -------------------------------------------------------------------------------
    def _on_image(self, name: str, msg: Image) -> None:
        try:
            self.images[name] = (msg_to_image(msg), from_stamp(msg.header.stamp))
            self._received[name] = time.time()
        except ValueError as err:
            self.get_logger().error(f"camera {name}: {err}", throttle_duration_sec=5.0)

    def _on_joints(self, msg: JointState) -> None:
        self.state["joint_positions"], self.state["gripper_width"] = parse_joint_state(msg)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.state["ee_pose"] = parse_pose(msg)

    def _on_tick(self) -> None:
        start = time.monotonic()
        try:
            self._control_step()
        finally:
            self.ticks.append((start, time.monotonic() - start))

    def _control_step(self) -> None:
        if self.policy is None or not self._verify() or not self.get_parameter("enabled").value:
            return
        if self.runner is not None:
            self._tick_async()
            return
        obs = self._observation()
        if obs is None:
            return
        if self.chunker.needs_prediction():
            started = time.time()
            chunk = np.asarray(self.policy.predict(obs), dtype=np.float32)
            received, assembled = self._assembly.get(obs.timestamp, (NAN, NAN))
            self._chunk_timing = CommandTiming(obs.timestamp, received, assembled, started, time.time(), NAN)
            self.chunker.push(chunk)
            self.predictions += 1
            self._chunk_obs_time, self._chunk_step = obs.timestamp, 0
        action = self.chunker.next_action()
        self.steps += 1
        # Action k of a chunk was planned for its observation's time + k periods: stamped so, the
        # safety filter's observation-age bound means "how stale was the plan", whatever k is.
        stamp = self._chunk_obs_time + self._chunk_step * self._period
        self._chunk_step += 1
        published = time.time()
        self.trace.append(replace(self._chunk_timing, published=published, planned=stamp))
        self._publish(action, stamp, published)

    def _tick_async(self) -> None:
        """Take the next planned action (the worker thread computes chunks); never waits on the model."""
        planned = self.runner.tick(self._observation)
        if self.runner.stats.errors and self.runner.stats.last_error:
            self.get_logger().error(f"inference failed: {self.runner.stats.last_error}", throttle_duration_sec=5.0)
        if planned is None:
            return
        self.steps += 1
        self.predictions = planned.chunk
        published = time.time()
        received, assembled = self._assembly.get(planned.observed, (NAN, NAN))
        self.trace.append(CommandTiming(planned.observed, received, assembled, planned.inference_start,
                                        planned.inference_end, published, planned.planned_time))  # fmt: skip
        self._publish(planned.action, planned.planned_time, published)

    def _publish(self, action: np.ndarray, stamp: float, published: float) -> None:
        msg = action_to_msg(action, self.source, stamp, published=published)
        self.pub_policy_action.publish(msg)
        if self.get_parameter("publish_actions").value:
            self.pub_action.publish(msg)

    def _observation(self) -> Observation | None:
        instruction = self.get_parameter("instruction").value
        if not instruction or "ee_pose" not in self.state or "joint_positions" not in self.state:
            self._set_status("waiting", "no instruction" if not instruction else "no robot state yet")
            return None
        oldest_camera = min(self.images, key=lambda name: self.images[name][1])
        oldest = self.images[oldest_camera][1]
        now = time.time()
        age = now - oldest
        if age > float(self.get_parameter("max_observation_age_s").value):
            self._set_status("waiting", f"images are {age:.2f} s old: a camera stalled")
            return None
        if self.status_text != "running":
            self._set_status("running", self.source)
        self._assembly[oldest] = (self._received.get(oldest_camera, NAN), now)
        while len(self._assembly) > 64:  # only chunks in flight need theirs
            del self._assembly[next(iter(self._assembly))]
        return Observation(
            images={n: img for n, (img, _) in self.images.items()}, ee_pose=self.state["ee_pose"],
            gripper_width=self.state["gripper_width"], joint_positions=self.state["joint_positions"],
            instruction=instruction, timestamp=oldest,
        )

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.policy is None:
            response.success, response.message = False, "no policy loaded"
            return response
        self.policy.reset()
        self.chunker.reset()
        if self.runner is not None:
            self.runner.reset()
        self.steps = 0
        response.success, response.message = not self.refusal, self.refusal or f"reset {self.source}"
        return response

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "enabled" and not param.value and self.runner is not None:
                self.runner.reset()  # nothing queued survives a pause
            if param.name == "bundle" and param.value:
                try:
                    self._install(load_bundle_policy(param.value, trusted_keys=self._trusted_keys()))
                except Exception as err:
                    self.policy = None
                    self._set_status("refused", f"cannot load bundle {param.value}: {err}")
                    return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _set_status(self, state: str, detail: str) -> None:
        if (state, detail) == (self.status_text, getattr(self, "_detail", None)):
            return
        self.status_text, self._detail = state, detail
        self.pub_status.publish(json_msg(state=state, detail=detail, source=getattr(self, "source", "")))


    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        if self.policy is not None and hasattr(self.policy, "close"):
            self.policy.close()


def main(args=None) -> None:
    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
