"""Writer subprocess for the store's crash and concurrency tests (not a test module).

Appends deterministic episodes (see :func:`expected_episode`) to a store, continuing after
whatever is committed, printing ``committed <index>`` after each commit. The test kills it
with SIGKILL at random moments or lets it finish (``--episodes``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import EpisodeStore, EpisodeWriter

CAMERAS = (CameraSpec("scene", 48, 64), CameraSpec("wrist", 24, 24))
CHUNK_STEPS = 8


def episode_length(e: int) -> int:
    return 5 + (e * 7) % 19


def expected_episode(e: int) -> dict[str, np.ndarray]:
    n = episode_length(e)
    t = np.arange(n)
    out = {
        "action": np.stack([np.full(n, e), t, *(np.zeros(n),) * 4, np.where(t % 2, 1.0, -1.0)], 1).astype(
            np.float32
        ),
        "timestamp": (e * 1000 + t * 0.1).astype(np.float64),
        "intervention": (t % 5) == 3,
        "ee_pose": np.tile(np.arange(7, dtype=np.float32), (n, 1)) + t[:, None].astype(np.float32),
    }
    for cam in CAMERAS:
        vals = ((e * 31 + t) % 251).astype(np.uint8)
        out[f"image_{cam.name}"] = np.broadcast_to(vals[:, None, None, None], (n, *cam.shape)).copy()
    return out


def write(store: str, episodes: int, announce=lambda line: None) -> int:
    """Append ``episodes`` deterministic episodes after the committed ones; returns how many are committed."""
    with EpisodeWriter(store, CAMERAS, chunk_steps=CHUNK_STEPS, robot="test-proc", software_version="t") as w:
        first = w.num_episodes
        announce(f"ready {first}")
        for e in range(first, first + episodes):
            exp = expected_episode(e)
            for t in range(episode_length(e)):
                obs = Observation(
                    images={c.name: exp[f"image_{c.name}"][t] for c in CAMERAS},
                    ee_pose=exp["ee_pose"][t],
                    gripper_width=0.04,
                    joint_positions=np.zeros(7),
                    instruction="crash test",
                    timestamp=float(exp["timestamp"][t]),
                )
                w.add_step(obs, exp["action"][t], intervention=bool(exp["intervention"][t]))
            idx = w.end_episode(EpisodeMeta(instruction="crash test", seed=e))
            assert idx == e, (idx, e)
            announce(f"committed {idx}")
        return w.num_episodes


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--episodes", type=int, default=10**6)
    args = p.parse_args()
    write(args.store, args.episodes, announce=lambda line: print(line, flush=True))
    EpisodeStore(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
