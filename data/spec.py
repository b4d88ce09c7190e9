"""The observation / action / episode contract shared by every SimBridge layer.

Simulator environments, policies, the ONNX bundle, the robot runtime and the episode store
all speak this contract, so a policy trained in simulation runs unchanged on a real Franka.
Everything here is plain numpy: importing it costs nothing and needs no torch.

Conventions (the same in simulation and on the robot):

* Frames: positions are in metres in the robot **base** frame; orientations are unit
  quaternions in **wxyz** order (SAPIEN's convention; franky's ``Affine`` uses xyzw, the
  driver converts).
* Images: ``uint8``, ``H x W x 3``, **RGB** channel order (OpenCV captures BGR: cameras convert).
* Action: 7 floats ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` applied once per control
  period (default 10 Hz). ``dx..dz`` is the end-effector translation in metres in the base
  frame; ``droll..dyaw`` are extrinsic XYZ Euler angles (radians) of a rotation about
  base-aligned axes, applied at the end-effector; ``gripper`` is +1 open ... -1 closed.
* Timestamps: float64 seconds. ``time.time()`` on the robot, simulated time in simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Version of the contract and of the on-disk formats built on it (episode store, bundle
#: manifest). Bump when a field changes meaning; readers refuse newer versions.
SCHEMA_VERSION = 1

ACTION_DIM = 7
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = -1.0

NUM_JOINTS = 7
#: End-effector pose: xyz (m) + quaternion wxyz.
EE_POSE_DIM = 7
#: Proprio vector fed to policies: xyz (3) + quaternion wxyz (4) + gripper width (1).
PROPRIO_DIM = EE_POSE_DIM + 1

#: Franka Panda / FR3 hand: fully open finger distance in metres.
MAX_GRIPPER_WIDTH_M = 0.08


class ContractError(ValueError):
    """An observation or action does not match the contract. The message names the field."""


@dataclass(frozen=True)
class CameraSpec:
    """One RGB camera of the observation: ``uint8`` images of shape ``(height, width, 3)``.

    Frames of another size (a 640 x 480 camera) become these images by
    :func:`simbridge.data.images.center_crop_resize`: the centred window of this aspect ratio,
    resized with ``cv2.INTER_AREA`` (cropped, never stretched), on the robot and in simulation.
    """

    name: str
    height: int = 128
    width: int = 128

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ContractError(f"camera name {self.name!r} must be a Python identifier (e.g. 'scene', 'wrist')")
        if self.height <= 0 or self.width <= 0:
            raise ContractError(f"camera {self.name!r}: height and width must be positive, got {self.height}x{self.width}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


@dataclass(frozen=True)
class ActionSpec:
    """The 7-D end-effector delta action and its per-step limits at ``control_rate_hz``.

    The limits are the contract's outer bound; the robot's safety filter may be tighter.
    """

    control_rate_hz: float = 10.0
    max_translation_m: float = 0.05  # per step: 0.5 m/s at 10 Hz
    max_rotation_rad: float = 0.25  # per step, per axis

    def __post_init__(self) -> None:
        if not (self.control_rate_hz > 0 and self.max_translation_m > 0 and self.max_rotation_rad > 0):
            raise ContractError(f"ActionSpec values must be positive, got {self}")

    @property
    def low(self) -> np.ndarray:
        t, r = self.max_translation_m, self.max_rotation_rad
        return np.array([-t, -t, -t, -r, -r, -r, GRIPPER_CLOSED], dtype=np.float32)

    @property
    def high(self) -> np.ndarray:
        t, r = self.max_translation_m, self.max_rotation_rad
        return np.array([t, t, t, r, r, r, GRIPPER_OPEN], dtype=np.float32)

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def validate(self, action: np.ndarray) -> np.ndarray:
        """Return ``action`` as float32 (7,) or raise :class:`ContractError` (NaN, shape)."""
        arr = np.asarray(action, dtype=np.float32)
        if arr.shape != (ACTION_DIM,):
            raise ContractError(f"action must have shape ({ACTION_DIM},) {ACTION_NAMES}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            bad = [ACTION_NAMES[i] for i in np.flatnonzero(~np.isfinite(arr))]
            raise ContractError(f"action has non-finite values in {bad}")
        return arr

    def clip(self, action: np.ndarray) -> np.ndarray:
        """Validate and clip to the contract's limits (the safety filter does more)."""
        return np.clip(self.validate(action), self.low, self.high)


@dataclass(frozen=True)
class ObservationSpec:
    """What a policy sees: named cameras, proprioception and the language instruction."""

    cameras: tuple[CameraSpec, ...] = (CameraSpec("scene"),)
    use_proprio: bool = True

    def __post_init__(self) -> None:
        names = [c.name for c in self.cameras]
        if not names:
            raise ContractError("an observation needs at least one camera")
        if len(set(names)) != len(names):
            raise ContractError(f"camera names must be unique, got {names}")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise ContractError(f"no camera named {name!r}; this spec has {list(self.camera_names)}")

    def to_dict(self) -> dict:
        return {
            "cameras": [{"name": c.name, "height": c.height, "width": c.width} for c in self.cameras],
            "use_proprio": self.use_proprio,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ObservationSpec:
        return cls(cameras=tuple(CameraSpec(**c) for c in d["cameras"]), use_proprio=bool(d.get("use_proprio", True)))


@dataclass
class Observation:
    """One time step as seen by a policy (simulation and robot alike)."""

    images: dict[str, np.ndarray]
    ee_pose: np.ndarray  # (7,) xyz + quaternion wxyz, base frame
    gripper_width: float  # metres between the fingers
    joint_positions: np.ndarray  # (7,) radians
    instruction: str
    timestamp: float = 0.0

    def proprio(self) -> np.ndarray:
        """The policy's proprio vector: ``[x, y, z, qw, qx, qy, qz, gripper_width]`` float32."""
        return np.concatenate([np.asarray(self.ee_pose, np.float32), [np.float32(self.gripper_width)]])

    def validate(self, spec: ObservationSpec) -> Observation:
        """Raise :class:`ContractError` naming the first field that does not match ``spec``."""
        missing = [n for n in spec.camera_names if n not in self.images]
        if missing:
            raise ContractError(
                f"observation lacks camera(s) {missing}; the spec expects {list(spec.camera_names)}, "
                f"got {sorted(self.images)}"
            )
        for cam in spec.cameras:
            img = self.images[cam.name]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != cam.shape:
                got = (getattr(img, "dtype", type(img).__name__), getattr(img, "shape", None))
                raise ContractError(
                    f"camera {cam.name!r}: expected uint8 image of shape {cam.shape}, got dtype/shape {got}"
                )
        pose = np.asarray(self.ee_pose)
        if pose.shape != (EE_POSE_DIM,) or not np.all(np.isfinite(pose)):
            raise ContractError(f"ee_pose must be 7 finite floats (xyz + quat wxyz), got {pose!r}")
        joints = np.asarray(self.joint_positions)
        if joints.shape != (NUM_JOINTS,) or not np.all(np.isfinite(joints)):
            raise ContractError(f"joint_positions must be {NUM_JOINTS} finite floats, got {joints!r}")
        if not math.isfinite(float(self.gripper_width)):
            raise ContractError(f"gripper_width must be finite, got {self.gripper_width!r}")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ContractError("instruction must be a non-empty string")
        return self


@dataclass(frozen=True)
class PolicyContract:
    """Observation + action spec: what a trained policy expects and emits.

    ``chunk_size`` is the number of future actions a policy predicts per call (1 for
    step-by-step policies, K for OFT-style action chunking).
    """

    observation: ObservationSpec = field(default_factory=ObservationSpec)
    action: ActionSpec = field(default_factory=ActionSpec)
    chunk_size: int = 1

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "observation": self.observation.to_dict(),
            "action": {
                "dim": ACTION_DIM,
                "names": list(ACTION_NAMES),
                "control_rate_hz": self.action.control_rate_hz,
                "max_translation_m": self.action.max_translation_m,
                "max_rotation_rad": self.action.max_rotation_rad,
            },
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> PolicyContract:
        version = int(d.get("schema_version", SCHEMA_VERSION))
        check_schema_version(version, what="policy contract")
        a = d["action"]
        return cls(
            observation=ObservationSpec.from_dict(d["observation"]),
            action=ActionSpec(
                control_rate_hz=float(a["control_rate_hz"]),
                max_translation_m=float(a["max_translation_m"]),
                max_rotation_rad=float(a["max_rotation_rad"]),
            ),
            chunk_size=int(d.get("chunk_size", 1)),
        )


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a contract observation to a chunk of contract actions.

    Implemented by the scripted expert (simulation), torch checkpoints (training) and ONNX
    bundles (deploy), so evaluation and the robot runtime treat them alike.
    """

    contract: PolicyContract

    def reset(self) -> None:
        """Forget per-episode state (action queues, caches) before a new episode."""
        ...

    def predict(self, obs: Observation) -> np.ndarray:
        """Return a float32 ``(chunk_size, 7)`` array of actions in physical units."""
        ...


def check_schema_version(version: int, what: str) -> None:
    """Refuse data written by a newer SimBridge (older versions are read as they are)."""
    if version > SCHEMA_VERSION:
        raise ContractError(
            f"{what} has schema version {version}, newer than this SimBridge understands "
            f"({SCHEMA_VERSION}); upgrade simbridge (pip install -U simbridge) to read it"
        )


# --- Episode store keys (used by simbridge.data.store and every writer) -------------------

#: Per-step arrays stored under ``data/`` besides one ``image_<camera>`` array per camera.
STEP_KEYS: dict[str, tuple[tuple[int, ...], str]] = {
    "ee_pose": ((EE_POSE_DIM,), "float32"),
    "gripper_width": ((), "float32"),
    "joint_positions": ((NUM_JOINTS,), "float32"),
    "action": ((ACTION_DIM,), "float32"),  # the action actually executed (after safety / operator)
    "policy_action": ((ACTION_DIM,), "float32"),  # what the policy proposed (NaN when no policy ran)
    "intervention": ((), "bool"),  # True when a human operator produced the executed action
    "timestamp": ((), "float64"),
}


def image_key(camera: str) -> str:
    return f"image_{camera}"


@dataclass
class EpisodeMeta:
    """Per-episode metadata stored next to the steps (``meta/episodes``)."""

    instruction: str
    task: str = ""
    success: bool | None = None  # None: not labelled yet
    success_labeled_by: str = ""  # "env" (simulator), "operator:<name>", "script"
    policy_id: str = ""  # bundle or checkpoint id, "expert", "teleop"
    num_interventions: int = 0
    calibration_id: str = ""
    robot: str = ""  # "maniskill:PutOnTarget-v1", "franka:fr3@172.16.0.2", "franky-sim"
    software_version: str = ""
    split: str = ""  # the task split / evaluation condition it was recorded in ("train", "vision_noise")
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    # True: the writer stopped before end_episode (killed, or closed mid-episode); the steps are
    # what it had committed. Kept, but training datasets and exports leave it out by default.
    incomplete: bool = False
    # The train / validation partition ``simbridge data split`` put it in ("" if never partitioned).
    # Separate from ``split``, which stays the task split. Stores written before this field have
    # only ``split``: it reads as "" there (and a store partitioned then has the partition in split).
    partition: str = ""


def quat_wxyz_to_xyzw(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([x, y, z, w], dtype=np.float64)


def quat_xyzw_to_wxyz(q: Sequence[float]) -> np.ndarray:
    x, y, z, w = q
    return np.array([w, x, y, z], dtype=np.float64)
