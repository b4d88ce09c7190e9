"""``simbridge demos``: scripted-expert demonstrations in simulation, into an episode store.

    simbridge demos --episodes 100 --out runs/demos/train.zarr
    simbridge demos --episodes 50 --split train --seed 1000 --out runs/demos/train.zarr   # appends
    simbridge demos --episodes 20 --keep-failures --noise 0.1 --out runs/demos/noisy.zarr
    simbridge demos --episodes 100 --dart 0.01 --out runs/demos/dart.zarr   # train with data.action_label=policy_action
    simbridge demos --episodes 40 --expert-style gated --out runs/demos/gated.zarr   # the original expert

Episode ``i`` uses seed ``seed + i`` (failed seeds are skipped and counted unless
``--keep-failures``), so demos never overlap an evaluation that starts at a later seed
(``simbridge eval --seed 10000``). The store is what ``simbridge train sft data.store=...`` reads.

Options are :class:`DemosConfig`: ``--config FILE``, one flag per field (``simbridge demos --help``;
``--split``, ``--obs-mode``, ``--wrist-camera``, ``--max-steps`` and ``--camera-size PX`` set the
``env`` keys) and ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import field
from pathlib import Path
from typing import Literal

from simbridge.data.cli_config import add_config_arguments, config_from_args, field_dest
from simbridge.data.config import config
from simbridge.training.envs import SPLITS, SimEnvSpec
from simbridge.training.renamed_keys import renamed_keys, square


@config(kw_only=True)
class DemosConfig:
    """``simbridge demos``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: Episode store (.zarr) to create or append to.
    out: Path
    #: Successful episodes to write (seeds seed, seed+1, ...; failed seeds are skipped).
    episodes: int = 40
    #: First episode seed.
    seed: int = 0
    #: The environment the expert runs in: task, split, observation mode ("state": no rendering, black
    #: images, for smoke tests), cameras and episode length.
    env: SimEnvSpec = field(default_factory=SimEnvSpec)
    #: Also write failed episodes (labelled as failures).
    keep_failures: bool = False
    #: Std of Gaussian noise on the expert's actions (m / rad).
    noise: float = 0.0
    #: DART: execute the expert's action plus Gaussian noise of this std (m / rad) and record the clean one
    #: as policy_action (SFT: data.action_label=policy_action).
    dart: float = 0.0
    #: The scripted expert: "funnel" (labels that vary smoothly with the scene) or "gated" (the
    #: original hover-then-descend expert; stores recorded before 2026-12-03 used it).
    expert_style: Literal["funnel", "gated"] = "funnel"
    #: Show a progress bar.
    progress: bool = True

    #: The keys of the flags before ``env`` (split=..., camera_size=128) still load.
    _renamed = renamed_keys({"split": "env.split", "obs_mode": "env.obs_mode", "wrist_camera": "env.wrist_camera",
                             "max_steps": "env.max_episode_steps", "camera_size": ("env.camera_size", square)})  # fmt: skip

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("episodes: at least 1")
        if self.env.split not in SPLITS:
            raise ValueError(f"env: unknown split {self.env.split!r} (env.split); choose from {', '.join(SPLITS)}")
        if self.noise < 0 or self.dart < 0:
            raise ValueError("noise: --noise and --dart are standard deviations >= 0 (m / rad)")
        if min(self.env.camera_size) < 16:
            raise ValueError(f"env: env.camera_size at least 16 pixels, got {list(self.env.camera_size)}")


CONFIG = DemosConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The flags of before the env section stay the flags of its keys.
    add_config_arguments(parser, DemosConfig, aliases={
        "env.split": "--split",
        "env.obs_mode": "--obs-mode",
        "env.wrist_camera": "--wrist-camera",
        "env.max_episode_steps": "--max-steps",
    })  # fmt: skip
    # The old single-number form of a square camera (--env.camera-size H W takes both).
    parser.add_argument("--camera-size", type=int, metavar="PX",
                        help="square camera size in pixels: env.camera_size=[PX,PX] (default: 128)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from simbridge.training.envs import EnvUnavailable
    from simbridge.training.envs.demos import write_expert_demos

    if args.camera_size is not None:  # at the precedence of any flag: key=value still wins over it
        setattr(args, field_dest("env.camera_size"), [args.camera_size] * 2)
    cfg = config_from_args(args, DemosConfig)
    try:
        result = write_expert_demos(
            cfg.out, cfg.episodes, spec=cfg.env, seed=cfg.seed, keep_failures=cfg.keep_failures,
            expert_noise_std=cfg.noise, execution_noise_std=cfg.dart, progress=cfg.progress,
            expert_style=cfg.expert_style,
        )  # fmt: skip
    except EnvUnavailable as exc:
        print(f"simbridge demos: simulator unavailable: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {result['written']} episode(s) to {result['store']} "
        f"({result['successes']}/{result['attempted']} expert rollouts succeeded)"
    )
    return 0 if result["written"] == cfg.episodes else 1
