"""Writer subprocess for the store's crash and concurrency tests (not a test module).

Appends deterministic episodes (see :func:`expected_episode`) to a store, continuing after
whatever is committed, printing ``committed <index>`` after each commit. The test kills it
with SIGKILL at random moments or lets it finish (``--episodes``).

``--long``: instead, one endless episode (a long teleop demonstration), committed every
``--commit-every`` chunks; prints ``open-committed <steps>`` after each in-episode commit.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import EpisodeStore, EpisodeWriter

CAMERAS = (CameraSpec("scene", 48, 64), CameraSpec("wrist", 24, 24))
CHUNK_STEPS = 8
LONG_META = {"instruction": "long demonstration", "policy_id": "teleop", "task": "PutOnTarget-v1"}


def episode_length(e: int) -> int:
    return 5 + (e * 7) % 19


def expected_steps(e: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """Steps ``start..stop-1`` of episode ``e`` (they depend only on ``e`` and the step)."""
    t = np.arange(start, stop)
    n = len(t)
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


def expected_episode(e: int) -> dict[str, np.ndarray]:
    return expected_steps(e, 0, episode_length(e))


def _add(w: EpisodeWriter, exp: dict[str, np.ndarray], t: int) -> None:
    obs = Observation(
        images={c.name: exp[f"image_{c.name}"][t] for c in CAMERAS},
        ee_pose=exp["ee_pose"][t],
        gripper_width=0.04,
        joint_positions=np.zeros(7),
        instruction="crash test",
        timestamp=float(exp["timestamp"][t]),
    )
    w.add_step(obs, exp["action"][t], intervention=bool(exp["intervention"][t]))


def write(store: str, episodes: int, announce=lambda line: None) -> int:
    """Append ``episodes`` deterministic episodes after the committed ones; returns how many are committed."""
    with EpisodeWriter(store, CAMERAS, chunk_steps=CHUNK_STEPS, robot="test-proc", software_version="t") as w:
        first = w.num_episodes
        announce(f"ready {first}")
        for e in range(first, first + episodes):
            exp = expected_episode(e)
            for t in range(episode_length(e)):
                _add(w, exp, t)
            idx = w.end_episode(EpisodeMeta(instruction="crash test", seed=e))
            assert idx == e, (idx, e)
            announce(f"committed {idx}")
        return w.num_episodes


def write_long(store: str, commit_every: int, announce=lambda line: None) -> None:
    """One endless episode (seeded with the number of complete episodes), until killed."""
    w = EpisodeWriter(
        store, CAMERAS, chunk_steps=CHUNK_STEPS, robot="test-proc", software_version="t",
        commit_every_chunks=commit_every,
    )  # fmt: skip
    e = w.num_episodes
    w.begin_episode(EpisodeMeta(seed=e, **LONG_META))
    announce(f"ready {e}")
    block, committed = 256, 0
    for start in range(0, 10**9, block):
        exp = expected_steps(e, start, start + block)
        for t in range(block):
            _add(w, exp, t)
            if w.committed_open_steps > committed:
                committed = w.committed_open_steps
                announce(f"open-committed {committed}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--episodes", type=int, default=10**6)
    p.add_argument("--long", action="store_true", help="one endless episode with in-episode commits")
    p.add_argument("--commit-every", type=int, default=1, help="commit the open episode every N chunks")
    args = p.parse_args()
    announce = lambda line: print(line, flush=True)  # noqa: E731
    if args.long:
        write_long(args.store, args.commit_every, announce)
        return 0
    write(args.store, args.episodes, announce)
    EpisodeStore(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
