"""``simbridge demos``: scripted-expert demonstrations in simulation, into an episode store.

    simbridge demos --episodes 100 --out runs/demos/train.zarr
    simbridge demos --episodes 50 --split train --seed 1000 --out runs/demos/train.zarr   # appends
    simbridge demos --episodes 20 --keep-failures --noise 0.1 --out runs/demos/noisy.zarr
    simbridge demos --episodes 100 --dart 0.01 --out runs/demos/dart.zarr   # train with data.action_label=policy_action

Episode ``i`` uses seed ``seed + i`` (failed seeds are skipped and counted unless
``--keep-failures``), so demos never overlap an evaluation that starts at a later seed
(``simbridge eval --seed 10000``). The store is what ``simbridge train sft data.store=...`` reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="episode store (.zarr) to create or append to")
    parser.add_argument("--episodes", type=int, default=40, help="successful episodes to write (default 40)")
    parser.add_argument("--split", default="train", help="split to record in (default train)")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    parser.add_argument("--camera-size", dest="camera_px", type=int, default=128,
                        help="square camera size in pixels (default 128): env.camera_size [N, N]")
    parser.add_argument("--obs-mode", choices=["rgb", "state"], default="rgb",
                        help="state: no rendering, black images (smoke tests only; default rgb)")
    parser.add_argument("--wrist-camera", action="store_true", help="also render the wrist camera")
    parser.add_argument("--max-steps", type=int, default=80, help="episode step limit (default 80)")
    parser.add_argument("--keep-failures", action="store_true", help="also write failed episodes (labelled)")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the expert's actions")
    parser.add_argument("--dart", type=float, default=0.0, metavar="STD",
                        help="DART: execute the expert's action plus Gaussian noise of this std (m / rad), "
                        "record the clean one as policy_action (SFT: data.action_label=policy_action)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from simbridge.data.config import ConfigError
    from simbridge.training.envs import SPLITS, EnvUnavailable, SimEnvSpec
    from simbridge.training.envs.demos import write_expert_demos

    if args.episodes < 1:
        raise ConfigError("--episodes: at least 1")
    if args.split not in SPLITS:
        raise ConfigError(f"--split: unknown split {args.split!r}; choose from {', '.join(SPLITS)}")
    if args.noise < 0 or args.dart < 0:
        raise ConfigError("--noise / --dart: a standard deviation >= 0 (m / rad)")
    if args.camera_px < 16:
        raise ConfigError("--camera-size: at least 16 pixels")
    if args.max_steps < 1:
        raise ConfigError("--max-steps: at least 1")
    spec = SimEnvSpec(split=args.split, obs_mode=args.obs_mode, camera_size=(args.camera_px, args.camera_px),
                      wrist_camera=args.wrist_camera, max_episode_steps=args.max_steps)  # fmt: skip
    try:
        result = write_expert_demos(
            args.out, args.episodes, spec=spec, seed=args.seed, keep_failures=args.keep_failures,
            expert_noise_std=args.noise, execution_noise_std=args.dart, progress=args.progress,
        )  # fmt: skip
    except EnvUnavailable as exc:
        print(f"simbridge demos: simulator unavailable: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {result['written']} episode(s) to {result['store']} "
        f"({result['successes']}/{result['attempted']} expert rollouts succeeded)"
    )
    return 0 if result["written"] == args.episodes else 1
