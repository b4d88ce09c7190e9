"""Topic names, QoS and message <-> contract conversions shared by every SimBridge node.

Only standard messages are used (std_msgs, sensor_msgs, geometry_msgs, std_srvs), so the nodes
work with the ROS 2 wheels from PyPI and with any apt-installed distribution.

Actions travel as ``sensor_msgs/JointState`` on ``/simbridge/action``: ``name`` holds the
contract's ``ACTION_NAMES`` (plus an optional ``"intervention"`` entry, 1.0 when a human produced
the action), ``position`` the values, ``header.stamp`` the time of the **observation** the action was computed
from (its oldest image), a ``"published"`` entry the wall-clock time the command was sent (the
safety filter bounds the observation's age and the transport age separately, so a slow inference
cannot hide an old image) and ``header.frame_id`` the **command source**
(``"policy:<bundle-id>"``, ``"teleop:keyboard"``...). The franka node locks onto one source per
episode and ignores every other one: this is how "one commander at a time" is enforced.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header, String

from simbridge.data.spec import (
    ACTION_DIM,
    ACTION_NAMES,
    NUM_JOINTS,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
)

# --- topics (absolute, so that node namespaces do not split the graph) ---------------------------
ACTION_TOPIC = "/simbridge/action"  # commands to the arm (JointState, see module docstring)
POLICY_ACTION_TOPIC = "/simbridge/policy_action"  # what the policy proposed (logged; teleop mux input)
EXECUTED_ACTION_TOPIC = "/simbridge/executed_action"  # what the franka node actually sent
JOINT_STATES_TOPIC = "/simbridge/joint_states"
EE_POSE_TOPIC = "/simbridge/ee_pose"
FRANKA_STATUS_TOPIC = "/simbridge/franka/status"  # std_msgs/String JSON
POLICY_STATUS_TOPIC = "/simbridge/policy/status"
TWIN_SUCCESS_TOPIC = "/simbridge/twin/success"  # std_msgs/Bool
TWIN_STATUS_TOPIC = "/simbridge/twin/status"  # latched JSON: {"ready": true, "hostname": ...} once franky-sim serves
EVAL_STATUS_TOPIC = "/simbridge/eval/status"


def image_topic(camera: str) -> str:
    return f"/simbridge/camera/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/simbridge/camera/{camera}/camera_info"


def camera_diagnostics_topic(camera: str) -> str:
    return f"/simbridge/camera/{camera}/diagnostics"


JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, NUM_JOINTS + 1))
FINGER_NAMES = ("fr3_finger_joint1", "fr3_finger_joint2")
INTERVENTION = "intervention"
PUBLISHED = "published"

# Reliable, shallow queues: on loopback reliability costs nothing and a late joiner must not miss
# the one command that matters. Status topics are latched (transient local) for late subscribers.
RELIABLE = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


# --- time ----------------------------------------------------------------------------------------
def to_stamp(seconds: float):
    """Wall-clock seconds -> builtin_interfaces/Time (the contract's timestamps are time.time())."""
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def from_stamp(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def header(seconds: float, frame_id: str) -> Header:
    return Header(stamp=to_stamp(seconds), frame_id=frame_id)


# --- images ----------------------------------------------------------------------------------------
def image_to_msg(rgb: np.ndarray, stamp: float, frame_id: str) -> Image:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    return Image(
        header=header(stamp, frame_id), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
        data=np.ascontiguousarray(rgb).tobytes(),
    )


def msg_to_image(msg: Image) -> np.ndarray:
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding {msg.encoding!r} unsupported; publish rgb8 (or bgr8)")
    arr = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
    arr = arr.reshape(msg.height, msg.width, 3)
    return np.ascontiguousarray(arr[..., ::-1] if msg.encoding == "bgr8" else arr)


def camera_info_msg(
    width: int, height: int, stamp: float, frame_id: str, k: Sequence[float] | None = None,
    dist: Sequence[float] | None = None, distortion_model: str = "plumb_bob",
) -> CameraInfo:
    """CameraInfo from intrinsics ``k`` (3x3, row major); without calibration fx=fy=width, centred."""
    if k is None:
        k = [float(width), 0.0, width / 2.0, 0.0, float(width), height / 2.0, 0.0, 0.0, 1.0]
    k = [float(v) for v in np.asarray(k, dtype=np.float64).reshape(9)]
    d = [float(v) for v in (dist if dist is not None else [0.0] * 5)]
    p = [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return CameraInfo(
        header=header(stamp, frame_id), width=int(width), height=int(height), distortion_model=distortion_model,
        d=d, k=k, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=p,
    )


# --- actions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionCommand:
    action: np.ndarray  # (7,) float32
    source: str
    stamp: float  # the time of the observation behind the command (wall clock)
    intervention: bool = False
    published: float | None = None  # when the command was sent; None from senders that do not say


def action_to_msg(action: np.ndarray, source: str, stamp: float, intervention: bool = False,
                  published: float | None = None) -> JointState:
    """``stamp``: the observation time behind the action; ``published``: the send time (None: omitted)."""
    a = np.asarray(action, dtype=np.float64).reshape(ACTION_DIM)
    extra_names, extra = ([PUBLISHED], [float(published)]) if published is not None else ([], [])
    return JointState(
        header=header(stamp, source),
        name=[*ACTION_NAMES, INTERVENTION, *extra_names],
        position=[*map(float, a), 1.0 if intervention else 0.0, *extra],
    )


def msg_to_action(msg: JointState) -> ActionCommand:
    """Parse an action message; raises ValueError naming what is wrong (missing names, source)."""
    if not msg.header.frame_id:
        raise ValueError("action message has an empty header.frame_id: set it to the command source")
    values = dict(zip(msg.name, msg.position, strict=False))
    missing = [n for n in ACTION_NAMES if n not in values]
    if missing:
        raise ValueError(f"action message lacks {missing}; expected names {list(ACTION_NAMES)}")
    action = np.array([values[n] for n in ACTION_NAMES], dtype=np.float32)
    published = values.get(PUBLISHED)
    return ActionCommand(action, msg.header.frame_id, from_stamp(msg.header.stamp),
                         values.get(INTERVENTION, 0.0) > 0.5, None if published is None else float(published))


# --- robot state -----------------------------------------------------------------------------------
def joint_state_msg(joints: np.ndarray, gripper_width: float, stamp: float) -> JointState:
    q = [float(v) for v in np.asarray(joints, dtype=np.float64).reshape(NUM_JOINTS)]
    half = float(gripper_width) / 2.0
    return JointState(header=header(stamp, "fr3_link0"), name=[*JOINT_NAMES, *FINGER_NAMES], position=[*q, half, half])


def parse_joint_state(msg: JointState) -> tuple[np.ndarray, float]:
    values = dict(zip(msg.name, msg.position, strict=False))
    joints = np.array([values[n] for n in JOINT_NAMES], dtype=np.float32)
    width = float(sum(values.get(n, 0.0) for n in FINGER_NAMES))
    return joints, width


def pose_msg(ee_pose: np.ndarray, stamp: float) -> PoseStamped:
    """(7,) xyz + quat wxyz (contract) -> PoseStamped in the base frame."""
    msg = PoseStamped(header=header(stamp, "fr3_link0"))
    x, y, z = (float(v) for v in ee_pose[:3])
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
    qx, qy, qz, qw = quat_wxyz_to_xyzw(ee_pose[3:7])
    msg.pose.orientation.x, msg.pose.orientation.y = float(qx), float(qy)
    msg.pose.orientation.z, msg.pose.orientation.w = float(qz), float(qw)
    return msg


def parse_pose(msg: PoseStamped) -> np.ndarray:
    p, o = msg.pose.position, msg.pose.orientation
    return np.concatenate([[p.x, p.y, p.z], quat_xyzw_to_wxyz([o.x, o.y, o.z, o.w])]).astype(np.float32)


def json_msg(**fields) -> String:
    return String(data=json.dumps(fields, default=str))


# --- running ---------------------------------------------------------------------------------------
def spin_nodes(nodes: Sequence[Node], context=None, threads: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> None:
    """Spin ``nodes`` until shutdown (Ctrl-C) or ``should_stop()``.

    Several nodes, or a node with ``concurrent_callbacks = True`` (franka: the e-stop must run while
    a motion callback blocks; orchestrator: it awaits services from a callback), get a
    MultiThreadedExecutor. A lone node whose callbacks share the default mutually exclusive group
    gets a SingleThreadedExecutor: the same ordering, and no busy loop. (rclpy's multi-threaded
    spin_once re-yields a task that a pool thread has not started yet, so a process whose pool
    threads are starved of CPU spins at 100% resubmitting it; seen with the policy and logger
    processes under a loaded machine.)

    On the way out every node's ``close()`` runs (stop the arm, join capture threads, commit the
    open episode) while the executor still exists, then the executor shuts down."""
    if len(nodes) > 1 or any(getattr(n, "concurrent_callbacks", False) for n in nodes):
        executor = MultiThreadedExecutor(num_threads=threads or max(4, len(nodes) + 2), context=context)
    else:
        executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    try:
        while executor.context.ok() and not (should_stop and should_stop()):
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass  # SIGINT/SIGTERM shut the context down between the check and the wait: a normal stop
    except _rclpy.RCLError:
        # The same race one step earlier: the context went down while spin_once built its wait set.
        if executor.context.ok():
            raise
    finally:
        for node in reversed(list(nodes)):
            executor.remove_node(node)
            try:
                close_node(node)
            except Exception as err:  # keep closing the others (the arm must still be stopped)
                node.get_logger().error(f"close failed: {err}")
        executor.shutdown(timeout_sec=5.0)


def close_node(node: Node) -> None:
    """Run ``node.close()`` once: spin_nodes closes on its way out, and whoever built the nodes
    (``simbridge deploy``) closes them again in its own cleanup; the second call does nothing."""
    if getattr(node, "_simbridge_closed", False):
        return
    node._simbridge_closed = True
    close = getattr(node, "close", None)
    if close is not None:
        close()


def run_node(factory: Callable[..., Node], args: Sequence[str] | None = None,
             finished: Callable[[Node], bool] | None = None,
             exit_code: Callable[[Node], int] | None = None) -> None:
    """Entry point body of a ``ros2 run`` executable: init, spin one node, close it, shut down.

    The process exits when ROS shuts down (Ctrl-C, launch stopping) or ``finished(node)`` is true,
    with ``exit_code(node)`` (default 0). A node that cannot start (robot unreachable, bad parameter)
    exits 1 with one line naming the problem: launch then reports it and stops the evaluation."""
    import rclpy

    rclpy.init(args=list(args) if args is not None else sys.argv)
    name = getattr(factory, "__name__", "node")
    try:
        node = factory()
    except (Exception, KeyboardInterrupt) as err:
        what = "interrupted while starting" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
        print(f"[{name}] cannot start: {what}", file=sys.stderr, flush=True)
        if rclpy.ok():
            rclpy.shutdown()
        raise SystemExit(1) from None
    try:
        spin_nodes([node], should_stop=(lambda: finished(node)) if finished else None)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    raise SystemExit(exit_code(node) if exit_code else 0)


def monotonic() -> float:
    return time.monotonic()


def expand(path: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(path)))
