"""Record the reference trajectories of ``envs_reference_pre25.npz`` (test_envs_batched.py).

Recorded once with the code *before* issue #25 (the batched task and wrapper), so the batched
code must reproduce it exactly for ``num_envs=1``. Re-running it overwrites the reference: only
do that on purpose, when the task's behaviour is meant to change.

    nice -n 19 .venv/bin/python tests/training/data/record_envs_reference.py tests/training/data/envs_reference_pre25.npz
"""

from __future__ import annotations

import sys

import numpy as np

from simbridge.training.envs import make_env

#: (split, seed) of the state-mode trajectories: plain, the mid-episode move, per-step colour jitter.
CASES = [("train", 3), ("execution_moved_object", 5), ("vision_dynamic", 7)]
#: (split, seed) of the rgb frames (colours through render materials: texture, jitter).
RGB_CASES = [("vision_texture", 2), ("vision_dynamic", 4)]
STEPS = 10


def actions(seed: int) -> np.ndarray:
    """Fixed contract actions: random small moves, gripper open/closed, one blocked push down."""
    rng = np.random.default_rng(seed)
    scale = np.array([0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 1], np.float32)
    a = rng.uniform(-1, 1, (STEPS, 7)).astype(np.float32) * scale
    a[:, 6] = np.where(a[:, 6] > -0.3, 1.0, -1.0)
    a[4, :3] = [0.0, 0.0, -0.12]  # into the table: the anti-windup clamps the target
    return a


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    env = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="state", camera_size=(32, 32))
    for split, seed in CASES:
        acts = actions(seed)
        obs, info = env.reset(seed=seed, options={"split": split})
        rec: dict[str, list] = {
            "ee": [obs.ee_pose], "q": [obs.joint_positions], "g": [obs.gripper_width],
            "state": [info["state"]], "rew": [], "succ": [], "moved": [info["object_moved"]], "ctrl": [],
        }  # fmt: skip
        for a in acts:
            obs, r, term, _, info = env.step(a)
            rec["ctrl"].append(np.concatenate([env._target_p, env._target_q], axis=-1).reshape(-1))
            rec["ee"].append(obs.ee_pose)
            rec["q"].append(obs.joint_positions)
            rec["g"].append(obs.gripper_width)
            rec["state"].append(info["state"])
            rec["rew"].append(r)
            rec["succ"].append(term)
            rec["moved"].append(info["object_moved"])
        for k, v in rec.items():
            out[f"{split}/{k}"] = np.asarray(v)
        out[f"{split}/actions"] = acts
        out[f"{split}/instruction"] = np.asarray(info["instruction"])
    env.close()
    env = make_env("PutOnTarget-v1", split="vision_texture", seed=0, obs_mode="rgb", camera_size=(32, 32))
    for split, seed in RGB_CASES:
        obs, _ = env.reset(seed=seed, options={"split": split})
        imgs = [obs.images["scene"]]
        for a in actions(seed)[:3]:
            obs, *_ = env.step(a)
            imgs.append(obs.images["scene"])
        out[f"rgb_{split}/images"] = np.asarray(imgs)
    env.close()
    return out


if __name__ == "__main__":
    np.savez_compressed(sys.argv[1], **record())
