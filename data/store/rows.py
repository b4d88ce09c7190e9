"""Rows of an episode store's ``data/`` arrays from what a writer is given, checked on the way in.

One step (an :class:`Observation`, the action executed from it, the policy's proposal and the
intervention flag) becomes one row of the writer's chunk buffer; a whole episode given as
``data/`` arrays (merge, split, converters) is checked against the step specs. Anything that
does not fit the store (a missing camera, a wrong image shape, a 6-value pose) raises
:class:`StoreError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from simbridge.data.spec import CameraSpec, Observation, image_key
from simbridge.data.store.layout import StoreError


def fill_step_row(
    buf: Mapping[str, np.ndarray],
    row: int,
    cameras: Sequence[CameraSpec],
    obs: Observation,
    action: np.ndarray,
    policy_action: np.ndarray | None,
    intervention: bool,
) -> None:
    """Write one step into row ``row`` of the chunk buffer ``buf`` (one array per ``data/`` key)."""
    for cam in cameras:
        img = obs.images.get(cam.name)
        if img is None:
            raise StoreError(
                f"observation lacks camera {cam.name!r}; this store records {[c.name for c in cameras]}"
            )
        if img.shape != cam.shape or img.dtype != np.uint8:
            raise StoreError(
                f"camera {cam.name!r}: expected uint8 {cam.shape}, got {img.dtype} {img.shape}"
            )
        buf[image_key(cam.name)][row] = img
    buf["ee_pose"][row] = _vector(obs.ee_pose, 7, "ee_pose")
    buf["gripper_width"][row] = float(obs.gripper_width)
    buf["joint_positions"][row] = _vector(obs.joint_positions, 7, "joint_positions")
    buf["action"][row] = _vector(action, 7, "action")
    buf["policy_action"][row] = (
        np.nan if policy_action is None else _vector(policy_action, 7, "policy_action")
    )
    buf["intervention"][row] = bool(intervention)
    buf["timestamp"][row] = float(obs.timestamp)


def check_episode_arrays(
    steps: Mapping[str, np.ndarray], specs: Mapping[str, tuple[tuple[int, ...], str]]
) -> int:
    """The number of steps of a whole episode given as ``data/`` arrays, after checking every key's shape."""
    missing = [k for k in specs if k not in steps]
    if missing:
        raise StoreError(f"add_episode: missing keys {missing}")
    n = len(steps["action"])
    for k, (shape, _dtype) in specs.items():
        arr = np.asarray(steps[k])
        if arr.shape != (n, *shape):
            raise StoreError(
                f"add_episode: '{k}' has shape {arr.shape}, expected {(n, *shape)} (mismatched lengths?)"
            )
    return n


def _vector(v: object, n: int, name: str) -> np.ndarray:
    """``v`` as a flat float32 vector of ``n`` values."""
    arr = np.asarray(v, dtype=np.float32).reshape(-1)
    if arr.shape != (n,):
        raise StoreError(f"{name} must have {n} values, got shape {np.shape(v)}")
    return arr
