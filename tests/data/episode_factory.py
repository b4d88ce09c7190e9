"""Builds small episode stores for the data tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import EpisodeWriter

CAMS = (CameraSpec("scene", 64, 64), CameraSpec("wrist", 32, 48))


def make_store(
    path: Path,
    lengths=(6, 9, 4, 7),
    success=(True, False, True, None),
    interventions=(False, True, False, False),
    splits=("train", "train", "val", "train"),
    cameras=CAMS,
    seed: int = 0,
    t0: float = 100.0,
    incomplete: tuple[int, ...] = (),
) -> Path:
    """Episode e: action[t] = [e, t, 0.001 t, 0, 0, 0, +-1]; images: smooth gradients varying with t;
    timestamps ``t0 + 0.1 t``; episodes in ``incomplete`` are ended as incomplete."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij")
    with EpisodeWriter(path, cameras, chunk_steps=16, robot="unit-test", software_version="test") as w:
        for e, n in enumerate(lengths):
            for t in range(n):
                images = {}
                for c in cameras:
                    base = (np.stack([yy, xx, (yy + xx) / 2], -1) * 200 + 5 * t + 20 * e).astype(np.uint8)
                    images[c.name] = np.ascontiguousarray(base[: c.height, : c.width])
                obs = Observation(
                    images=images,
                    ee_pose=np.array([0.4 + 0.01 * t, 0.0, 0.3, 1, 0, 0, 0], np.float32),
                    gripper_width=0.08 - 0.005 * t,
                    joint_positions=rng.normal(size=7).astype(np.float32),
                    instruction=f"task {e % 2}",
                    timestamp=t0 + 0.1 * t,
                )
                action = np.array([e, t, 0.001 * t, 0, 0, 0, 1 if t % 2 else -1], np.float32)
                flag = bool(interventions[e] and 1 <= t < 3)
                w.add_step(obs, action, policy_action=None if flag else action * 0.5, intervention=flag)
            w.end_episode(
                EpisodeMeta(
                    instruction=f"task {e % 2}",
                    task="PutOnTarget-v1",
                    success=success[e],
                    success_labeled_by="env" if success[e] is not None else "",
                    split=splits[e],
                    seed=e,
                    policy_id="teleop",
                    incomplete=e in incomplete,
                )
            )
    return path
