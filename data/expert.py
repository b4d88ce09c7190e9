"""Scripted expert for ``PutOnTarget``: end-effector waypoints, no motion planner.

The expert reads privileged state (:class:`ExpertState`: target object and receptacle poses in the
robot base frame, whether the object is in the hand) from a simulator through a ``state_fn`` and
drives the contract action through a sequence of phases; ``phase`` is the current one and
``phases`` lists the phase of every ``predict`` since ``reset`` (the demo store has no per-step
column for it). The same logic drives both simulators: the ManiSkill task
(:func:`simbridge.training.envs.expert.make_expert`) and the franky-sim twin
(:func:`simbridge.deploy.twin_expert.make_twin_expert`). Plain numpy: no simulator import here.
Two styles:

``funnel`` (default; labels vary smoothly with what the cameras see)
    ``approach`` / ``descend`` are one funnel: the waypoint is over the object at a height
    ``grasp_z + clip(funnel_slope * (xy_err + 5 * width_excess - flat), 0, top)``
    (:func:`funnel_height`; ``flat``: the 4 mm the grasp tolerates), so centring and descending
    happen together with no hover gate; ``descend`` only names the steps below the funnel's top.
    ``width_excess`` is how much the object's footprint across the fingers exceeds the opening
    (minus a margin) at the current yaw; it is always 0 for shapes that fit the opening in every
    orientation (:func:`needs_yaw`), and for those the hand keeps its yaw. Otherwise the yaw
    turns toward the narrow side at a rate proportional to its error (clipped). ``grasp`` closes
    as soon as the fingers are at grasp height and centred. After ``lift``, ``move`` / ``lower``
    are the same funnel over the receptacle (1.5 cm flat), and ``release`` opens once the object
    is at its resting height.
``gated`` (the original; existing demo stores were recorded with it)
    ``approach`` (hover until xy < 8 mm, z < 2 cm, yaw < 0.06 rad) -> ``descend`` -> ``grasp``
    (close, wait) -> ``lift`` -> ``move`` (above the receptacle) -> ``lower`` -> ``release``.

Both end with ``retreat``. Each step commands a proportional move toward the phase's waypoint,
clipped to the contract's per-step limits, so the same actions are valid on the real robot. If
the object moves before it is grasped (the moved-object split) the expert re-approaches; a failed
grasp is retried (at most ``max_retries`` times). It needs no mplib (mplib 0.1.1 segfaults with
numpy 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from simbridge.data.geometry import quat_multiply as quat_mul
from simbridge.data.geometry import quat_to_matrix
from simbridge.data.scene import OBJECT_SHAPES
from simbridge.data.spec import GRIPPER_CLOSED, GRIPPER_OPEN, Observation, PolicyContract

#: TCP pointing straight down (the Panda's rest orientation): 180 deg about x; fingers close along y.
_Q_DOWN = np.array([0.0, 1.0, 0.0, 0.0])
#: The Panda hand's maximal finger opening (m).
GRIPPER_OPENING = 0.08
#: Clearance kept between the object's footprint and the open fingers (m, both sides together): the
#: grasp's xy tolerance plus room to close square on a box's faces. The 3.6 x 6 cm block (7.0 cm
#: diagonal) is thus turned like the brick and the capsule; the cube and the can never need to.
WIDTH_MARGIN = 0.015

#: Flat bottoms of the funnels (m of xy error): over the object (once the footprint fits, the
#: margin leaves the fingers >= 7.5 mm on each side) and over the receptacle (>= 10 cm across).
_GRASP_FLAT = 0.004
_PLACE_FLAT = 0.015
#: Metres of xy error a metre of width excess counts as: a misaligned footprint keeps the hand high.
_YAW_WEIGHT = 5.0

ExpertStyle = Literal["funnel", "gated"]
STYLES: tuple[str, ...] = ("funnel", "gated")


def _wrap_half_pi(a: float) -> float:
    """Wrap an angle to [-pi/2, pi/2): the parallel gripper is symmetric under a half turn."""
    return (a + math.pi / 2) % math.pi - math.pi / 2


def _rotvec(q: np.ndarray) -> np.ndarray:
    q = q if q[0] >= 0 else -q
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-9:
        return np.zeros(3)
    return q[1:] / s * 2.0 * math.atan2(s, q[0])


def grasp_yaw(shape: str, object_yaw: float) -> list[float]:
    """World angles (mod pi) along which the fingers may close on ``shape`` rotated by ``object_yaw``."""
    kind, size = OBJECT_SHAPES[shape]
    if kind == "cylinder":
        return []  # any
    if kind == "capsule":
        return [object_yaw + math.pi / 2]  # across the capsule's axis (local x)
    if abs(size[0] - size[1]) < 1e-6:
        return [object_yaw, object_yaw + math.pi / 2]  # square: either side
    return [object_yaw if size[0] < size[1] else object_yaw + math.pi / 2]  # across the narrow side


def footprint_width(shape: str, angle: float) -> float:
    """Width (m) of ``shape``'s footprint along a direction at ``angle`` to the object's local x."""
    kind, size = OBJECT_SHAPES[shape]
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    if kind == "box":
        return 2 * (size[0] * c + size[1] * s)
    if kind == "capsule":  # (radius, half length), axis along local x
        return 2 * (size[0] + size[1] * c)
    return 2 * size[0]  # cylinder: (radius, half height)


def width_excess(shape: str, angle: float, opening: float = GRIPPER_OPENING, margin: float = WIDTH_MARGIN) -> float:
    """How much (m) the footprint across the fingers exceeds ``opening - margin``; 0 when it fits."""
    return max(0.0, footprint_width(shape, angle) + margin - opening)


def needs_yaw(shape: str, opening: float = GRIPPER_OPENING, margin: float = WIDTH_MARGIN) -> bool:
    """Whether some yaw of ``shape`` does not fit between the open fingers (then the hand must turn)."""
    return any(width_excess(shape, a, opening, margin) > 0 for a in np.linspace(0, math.pi, 181))


def funnel_height(err: float, slope: float, top: float, flat: float = 0.0) -> float:
    """Height above the grasp (or place) point of the funnel's waypoint: ``clip(slope * (err - flat), 0, top)``.

    ``flat`` is the radius of the funnel's flat bottom: errors the grasp (or placement) tolerates."""
    return float(np.clip(slope * (err - flat), 0.0, top))


@dataclass(frozen=True)
class ExpertState:
    """Privileged simulator state the expert reads each step (robot base frame, metres / radians)."""

    obj: np.ndarray  # target object's centre (x, y, z)
    obj_yaw: float  # its rotation about z
    goal: np.ndarray  # where the object's centre rests when placed: receptacle top + its half height
    obj_half: float  # object centre height above what it rests on
    grasped: bool  # the object is held by the fingers
    shape: str  # key of simbridge.data.scene.OBJECT_SHAPES


def yaw_of(quat_wxyz: np.ndarray) -> float:
    """Rotation about z of a ``(w, x, y, z)`` quaternion."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class WaypointExpert:
    """Waypoint expert implementing :class:`simbridge.data.spec.Policy` (``predict -> (1, 7)``).

    ``state_fn(obs)`` returns the current :class:`ExpertState` (called once per ``predict``)."""

    def __init__(
        self,
        contract: PolicyContract,
        state_fn: Callable[[Observation], ExpertState],
        *,
        style: ExpertStyle = "funnel",
        gain: float = 0.7,
        approach_height: float = 0.08,
        lift_height: float = 0.12,
        funnel_slope: float = 2.0,
        max_retries: int = 3,
        noise_std: float = 0.0,
        seed: int = 0,
    ):
        if style not in STYLES:
            raise ValueError(f"expert style: one of {', '.join(STYLES)}, got {style!r}")
        self.contract = contract
        self.state_fn = state_fn
        self.style = style
        self.gain = gain
        self.approach_height = approach_height
        self.lift_height = lift_height
        self.funnel_slope = funnel_slope
        self.max_retries = max_retries
        self.noise_std = noise_std  # optional Gaussian action noise (m / rad) for more diverse demos
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.phases: list[str] = []
        self._wait = 0
        self._retries = 0
        self._grasp_xy: np.ndarray | None = None
        self._yaw_target: float | None = None
        self._last_pos: np.ndarray | None = None

    # --- policy -------------------------------------------------------------------------
    def predict(self, obs: Observation) -> np.ndarray:
        s = self.state_fn(obs)
        tcp = np.asarray(obs.ee_pose, np.float64)
        pos, quat = tcp[:3], tcp[3:]
        step = self._funnel if self.style == "funnel" else self._gated
        target, gripper = step(s, pos, quat)
        self.phases.append(self.phase)
        self._last_pos = pos.copy()
        return self._action(pos, quat, target, gripper)[None, :]

    def _funnel(self, s: ExpertState, pos: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, float]:
        obj, goal = s.obj, s.goal
        grasp_z = max(obj[2] - 0.003, 0.02)  # fingertips reach ~1.5 cm below the TCP: stay off the table
        moved = self._grasp_xy is not None and np.linalg.norm(obj[:2] - self._grasp_xy) > 0.02
        if self.phase in ("approach", "descend", "grasp") and moved and not s.grasped:
            self.phase = "approach"  # the object was moved: follow it
        if self.phase in ("approach", "descend"):
            self._grasp_xy = obj[:2].copy()
            self._yaw_target = self._choose_yaw(s, quat)
            err = float(np.linalg.norm(pos[:2] - obj[:2]))
            excess = width_excess(s.shape, self._closing_angle(quat) - s.obj_yaw)
            top = obj[2] + self.approach_height - grasp_z
            h = funnel_height(err + _YAW_WEIGHT * excess, self.funnel_slope, top, _GRASP_FLAT)
            self.phase = "descend" if h < top else "approach"
            target = self._funnel_target(pos, obj[:2], grasp_z + h)
            at_grasp = abs(pos[2] - grasp_z) < 0.008 and err < _GRASP_FLAT + 0.003 and excess == 0.0
            stalled = self._last_pos is not None and np.linalg.norm(pos - self._last_pos) < 0.001
            near = np.linalg.norm(pos - np.array([obj[0], obj[1], grasp_z])) < 0.015
            if at_grasp or (stalled and near and excess == 0.0):
                self.phase, self._wait = "grasp", 0
            else:
                return target, GRIPPER_OPEN
        if self.phase == "grasp":
            self._wait += 1
            if self._wait >= 4:
                self.phase = "lift"
            else:
                return np.array([obj[0], obj[1], grasp_z]), GRIPPER_CLOSED
        if self.phase == "lift":
            target = np.array([pos[0], pos[1], self.lift_height])
            if pos[2] > obj[2] + 0.03 and not s.grasped:  # the grasp slipped: try again
                self._retry()
                return pos.copy(), GRIPPER_OPEN
            if not self._reached(pos, target, 0.02):
                return target, GRIPPER_CLOSED
            self.phase = "move"
        if self.phase in ("move", "lower"):
            # TCP where the object rests on the receptacle (+1 cm to drop it gently)
            place_z = goal[2] + (pos[2] - obj[2]) + 0.01
            err = float(np.linalg.norm(pos[:2] - goal[:2]))
            top = max(self.lift_height - place_z, 0.0)
            h = funnel_height(err, self.funnel_slope, top, _PLACE_FLAT)
            if not s.grasped:
                if self.phase == "move":
                    self._retry()
                    return pos.copy(), GRIPPER_OPEN
                self.phase, self._wait = "release", 0  # it is (nearly) down: let go
            else:
                self.phase = "lower" if h < top else "move"
                if abs(pos[2] - place_z) < 0.008 and err < _PLACE_FLAT + 0.005:
                    self.phase, self._wait = "release", 0
                else:
                    return self._funnel_target(pos, goal[:2], place_z + h), GRIPPER_CLOSED
        if self.phase == "release":
            self._wait += 1
            if self._wait >= 3:
                self.phase = "retreat"
            return pos.copy(), GRIPPER_OPEN
        return np.array([pos[0], pos[1], self.lift_height]), GRIPPER_OPEN  # retreat

    @staticmethod
    def _funnel_target(pos: np.ndarray, xy: np.ndarray, z: float) -> np.ndarray:
        """Waypoint toward ``(xy, z)``; sideways motion fades out while the TCP is >1 cm below ``z``
        (after a retry or a moved object), so it rises before sweeping across the table."""
        below = z - pos[2]
        scale = float(np.clip(1.0 - (below - 0.01) / 0.03, 0.0, 1.0))
        return np.array([*(pos[:2] + scale * (xy - pos[:2])), z])

    def _gated(self, s: ExpertState, pos: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, float]:
        gripper = GRIPPER_OPEN
        obj, goal = s.obj, s.goal
        above_obj = obj + np.array([0.0, 0.0, self.approach_height])
        grasp_z = max(obj[2] - 0.003, 0.02)  # fingertips reach ~1.5 cm below the TCP: stay off the table

        moved = self._grasp_xy is not None and np.linalg.norm(obj[:2] - self._grasp_xy) > 0.02
        if self.phase in ("approach", "descend") and moved:  # the object was moved: start over
            self.phase = "approach"
        target = above_obj
        if self.phase == "approach":
            self._grasp_xy = obj[:2].copy()
            self._yaw_target = self._choose_yaw(s, quat)
            if pos[2] < above_obj[2] - 0.03 and np.linalg.norm(pos[:2] - obj[:2]) > 0.02:
                target = np.array([pos[0], pos[1], above_obj[2]])  # rise before moving sideways
            over = np.linalg.norm(pos[:2] - obj[:2]) < 0.008 and abs(pos[2] - above_obj[2]) < 0.02
            if np.linalg.norm(target - above_obj) < 1e-9 and over and self._aligned(quat):
                self.phase = "descend"
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], grasp_z])
            stalled = self._last_pos is not None and np.linalg.norm(pos - self._last_pos) < 0.001
            if self._reached(pos, target, 0.006) or (stalled and self._reached(pos, target, 0.015)):
                self.phase, self._wait = "grasp", 0
        if self.phase == "grasp":
            target, gripper = np.array([obj[0], obj[1], grasp_z]), GRIPPER_CLOSED
            self._wait += 1
            if self._wait >= 4:
                self.phase = "lift"
        if self.phase == "lift":
            gripper = GRIPPER_CLOSED
            target = np.array([pos[0], pos[1], self.lift_height])
            if pos[2] > obj[2] + 0.03 and not s.grasped:  # the grasp slipped: try again
                self._retry()
            elif self._reached(pos, target, 0.02):
                self.phase = "move"
        if self.phase == "move":
            gripper = GRIPPER_CLOSED
            target = np.array([goal[0], goal[1], self.lift_height])
            if not s.grasped:
                self._retry()
            elif self._reached(pos, target, 0.012):
                self.phase = "lower"
        if self.phase == "lower":
            gripper = GRIPPER_CLOSED
            # TCP at the object's centre when it rests on the receptacle (+1 cm to drop it gently)
            target = (
                np.array([goal[0], goal[1], goal[2] + (grasp_z - obj[2]) + 0.01]) if s.grasped else pos
            )
            if self._reached(pos, target, 0.008) or not s.grasped:
                self.phase, self._wait = "release", 0
        if self.phase == "release":
            target, gripper = pos.copy(), GRIPPER_OPEN
            self._wait += 1
            if self._wait >= 3:
                self.phase = "retreat"
        if self.phase == "retreat":
            target = np.array([pos[0], pos[1], self.lift_height])
        return target, gripper

    def _retry(self) -> None:
        self._retries += 1
        self.phase = "approach" if self._retries <= self.max_retries else "retreat"

    @staticmethod
    def _reached(pos: np.ndarray, target: np.ndarray, tol: float) -> bool:
        return bool(np.linalg.norm(pos - target) < tol)

    def _desired_quat(self) -> np.ndarray:
        yaw = self._yaw_target or 0.0
        return quat_mul(np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]), _Q_DOWN)

    def _aligned(self, quat: np.ndarray) -> bool:
        err = quat_mul(self._desired_quat(), quat * np.array([1, -1, -1, -1]))
        return float(np.linalg.norm(_rotvec(err))) < 0.06

    @staticmethod
    def _closing_angle(quat: np.ndarray) -> float:
        """World angle of the direction the fingers close along (the hand's y axis)."""
        closing = quat_to_matrix(quat)[:, 1]
        return math.atan2(closing[1], closing[0])

    def _choose_yaw(self, s: ExpertState, quat: np.ndarray) -> float:
        """Yaw about base z to apply to the straight-down orientation so the fingers close across the object.

        The funnel style keeps the current yaw for shapes that fit the opening in every orientation."""
        current = self._closing_angle(quat)
        # _Q_DOWN has its closing axis along -y (angle -pi/2): yaw so that axis points along theta
        options = grasp_yaw(s.shape, s.obj_yaw)
        if self.style == "funnel" and not needs_yaw(s.shape):
            options = []
        best = min(options or [current], key=lambda th: abs(_wrap_half_pi(th - current)))
        return _wrap_half_pi(best + math.pi / 2)

    def _action(self, pos: np.ndarray, quat: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
        spec = self.contract.action
        d = self.gain * (target - pos)
        n = float(np.linalg.norm(d))
        if n > spec.max_translation_m:
            d *= spec.max_translation_m / n
        err = quat_mul(self._desired_quat(), quat * np.array([1, -1, -1, -1]))
        rot = np.clip(self.gain * _rotvec(err), -spec.max_rotation_rad, spec.max_rotation_rad)
        a = np.concatenate([d, rot, [gripper]])
        if self.noise_std > 0:
            a[:6] += self._rng.normal(0, self.noise_std, 6)
        return spec.clip(a.astype(np.float32))

