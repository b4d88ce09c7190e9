"""Why a PutOnTarget episode failed: a per-step tracker and a classifier over privileged state.

``simbridge eval`` (:mod:`simbridge.training.evaluation`) feeds one :class:`StepRecord` per
control step into a :class:`FailureTracker`; at the end of a failed episode
:func:`classify_failure` puts it into exactly one class, checked in this order:

1. ``dropped_in_transit`` / ``released_off_target`` / ``timed_out`` — the object was grasped
   at some step. Still grasped at the end: ``timed_out`` (it never let go). Otherwise look at the
   *last* step the grasp was lost: if the gripper was commanded open at that step or in the
   ``release_window_steps`` before it, the policy let go (``released_off_target``: the episode
   failed, so the object does not rest on the receptacle); with the gripper still commanded
   closed the object slipped out (``dropped_in_transit``).
2. ``never_reached`` — never grasped, and the TCP never came within ``reach_m`` of the object's
   centre.
3. ``closed_off_target`` / ``closed_too_high`` — never grasped, the TCP did reach, and the
   gripper was closed at least once. A *close attempt* is a step whose command turns the gripper
   closed (open -> closed, or closed on the first step). The attempt with the TCP nearest the
   object is judged: horizontal TCP-object error above ``grasp_xy_m`` -> ``closed_off_target``;
   else TCP more than ``grasp_height_m`` above the object's centre -> ``closed_too_high``.
4. ``timed_out`` — anything else: hovering without closing, or a close in place that did not
   hold (e.g. fingers not across the object's narrow side).

Thresholds (:class:`FailureThresholds`) come from the task's geometry (``training/envs/splits.py``
and the Panda gripper):

* ``reach_m = 0.06``: the Panda's fingers open to 8 cm (4 cm either side of the TCP) and the
  objects' half extents are 1.5-3.5 cm, so within 6 cm of the object's centre the open fingers
  overlap the object's bounding box; farther away nothing the gripper does can touch it.
* ``grasp_xy_m = 0.02``: the fingers still straddle the object when the TCP is off by at most
  the half opening (4 cm) minus the largest half width across the closing direction (2 cm).
* ``grasp_height_m = 0.02``: the scripted expert grasps with the TCP 3 mm below the object's
  centre; the fingertips reach ~1.5 cm below the TCP and the objects' half heights are
  1.5-2 cm, so with the TCP more than 2 cm above the centre the pads close over the object's
  top at best.
* ``release_window_steps = 3``: the fingers take 1-3 control steps (10 Hz) to open far enough
  for the contact-based grasp test to turn false.

The classifier is pure (numbers in, class out); :func:`read_step` is the one adapter that reads
a :class:`StepRecord` from a ManiSkill PutOnTarget contract env (``None`` for any other env,
whose failures are ``unclassified``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEVER_REACHED = "never_reached"
CLOSED_OFF_TARGET = "closed_off_target"
CLOSED_TOO_HIGH = "closed_too_high"
DROPPED_IN_TRANSIT = "dropped_in_transit"
RELEASED_OFF_TARGET = "released_off_target"
TIMED_OUT = "timed_out"
UNCLASSIFIED = "unclassified"

#: Every failure class, in the order tables and plots show them (``unclassified``: not PutOnTarget).
FAILURE_CLASSES: tuple[str, ...] = (
    NEVER_REACHED,
    CLOSED_OFF_TARGET,
    CLOSED_TOO_HIGH,
    DROPPED_IN_TRANSIT,
    RELEASED_OFF_TARGET,
    TIMED_OUT,
    UNCLASSIFIED,
)


@dataclass(frozen=True)
class FailureThresholds:
    """The classifier's distances (metres) and release window (steps); see the module docstring."""

    reach_m: float = 0.06
    grasp_xy_m: float = 0.02
    grasp_height_m: float = 0.02
    release_window_steps: int = 3


@dataclass(frozen=True)
class StepRecord:
    """Privileged state after one control step (task frame, metres).

    ``gripper_cmd`` is the contract's command of that step (+1 open ... -1 closed; closed when
    negative), ``gripper_width`` the measured finger opening after it.
    """

    tcp: np.ndarray  # (3,)
    obj: np.ndarray  # (3,) target object's centre
    goal: np.ndarray  # (3,) the object's centre when resting on the target receptacle
    gripper_cmd: float
    gripper_width: float
    is_grasped: bool

    @property
    def closed(self) -> bool:
        return self.gripper_cmd < 0.0


@dataclass(frozen=True)
class FailureReport:
    """A failure class and the numbers it was decided from (for episodes.jsonl)."""

    failure: str
    detail: dict[str, float | int] = field(default_factory=dict)


def _xy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a[:2]) - np.asarray(b[:2])))


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def close_attempts(steps: Sequence[StepRecord]) -> list[int]:
    """Indices of the steps whose command turns the gripper closed (the first step counts if closed)."""
    return [i for i, s in enumerate(steps) if s.closed and (i == 0 or not steps[i - 1].closed)]


def classify_failure(
    steps: Sequence[StepRecord], success: bool, thresholds: FailureThresholds | None = None
) -> FailureReport | None:
    """The failure class of an episode (``None`` on success); see the module docstring for the rules."""
    if success:
        return None
    th = thresholds or FailureThresholds()
    if not steps:
        return FailureReport(TIMED_OUT, {"steps": 0})
    last = steps[-1]
    min_reach = min(_dist(s.tcp, s.obj) for s in steps)
    detail: dict[str, float | int] = {
        "min_tcp_obj_m": round(min_reach, 4),
        "final_obj_goal_xy_m": round(_xy(last.obj, last.goal), 4),
    }
    grasped = [i for i, s in enumerate(steps) if s.is_grasped]
    if grasped:
        detail["grasped_steps"] = len(grasped)
        if last.is_grasped:
            return FailureReport(TIMED_OUT, detail)
        lost = max(i for i in range(1, len(steps)) if steps[i - 1].is_grasped and not steps[i].is_grasped)
        detail["lost_at_step"] = lost
        detail["lost_obj_goal_xy_m"] = round(_xy(steps[lost].obj, steps[lost].goal), 4)
        window = steps[max(0, lost - th.release_window_steps) : lost + 1]
        released = any(not s.closed for s in window)
        return FailureReport(RELEASED_OFF_TARGET if released else DROPPED_IN_TRANSIT, detail)
    if min_reach > th.reach_m:
        return FailureReport(NEVER_REACHED, detail)
    attempts = close_attempts(steps)
    if not attempts:
        return FailureReport(TIMED_OUT, detail)
    best = min(attempts, key=lambda i: _dist(steps[i].tcp, steps[i].obj))
    s = steps[best]
    xy_err, height = _xy(s.tcp, s.obj), float(s.tcp[2] - s.obj[2])
    detail.update(close_attempts=len(attempts), close_step=best, close_xy_m=round(xy_err, 4),
                  close_height_m=round(height, 4))  # fmt: skip
    if xy_err > th.grasp_xy_m:
        return FailureReport(CLOSED_OFF_TARGET, detail)
    if height > th.grasp_height_m:
        return FailureReport(CLOSED_TOO_HIGH, detail)
    return FailureReport(TIMED_OUT, detail)


class FailureTracker:
    """Collects the :class:`StepRecord` of one episode; :meth:`classify` at its end."""

    def __init__(self, thresholds: FailureThresholds | None = None):
        self.thresholds = thresholds or FailureThresholds()
        self.steps: list[StepRecord] = []

    def reset(self) -> None:
        self.steps = []

    def add(self, step: StepRecord) -> None:
        self.steps.append(step)

    def classify(self, success: bool) -> FailureReport | None:
        return classify_failure(self.steps, success, self.thresholds)


# --- the one adapter to the simulator ---------------------------------------------------------


def supports(env: Any) -> bool:
    """Whether ``env`` is a PutOnTarget contract env whose failures can be classified."""
    ms = getattr(env, "unwrapped_ms", None)
    return ms is not None and hasattr(ms, "target_info") and hasattr(ms, "agent")


def read_step(env: Any, action: np.ndarray, info: dict) -> StepRecord:
    """The :class:`StepRecord` after ``env.step(action)`` returned ``info`` (a PutOnTarget env)."""
    ms = env.unwrapped_ms
    t = ms.target_info()
    qpos = ms.agent.robot.get_qpos()

    def first(x: Any) -> np.ndarray:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        return np.asarray(x, np.float64).reshape(-1, x.shape[-1])[0]

    return StepRecord(
        tcp=first(ms.agent.tcp_pose.p),
        obj=first(t["obj_pose"])[:3],
        goal=first(t["goal_pos"]),
        gripper_cmd=float(np.asarray(action).reshape(-1)[6]),
        gripper_width=float(first(qpos)[7:9].sum()),
        is_grasped=bool(info["is_grasped"]),
    )
