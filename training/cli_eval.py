"""``simbridge eval``: run a policy on the generalization splits and write a results table.

    simbridge eval --policy expert --suite all --episodes 20
    simbridge eval --policy runs/ppo/<stamp>/checkpoints/iter_000100 --suite ood --episodes 20 --video
    simbridge eval --policy exports/latest --suite vision --episodes 10 --out runs/eval/bundle
    simbridge eval --config launch/configs/eval_all.yaml episodes=5 env.max_episode_steps=120
    simbridge eval --policy <checkpoint> --suite train --execute-steps 1   # re-plan every step
    simbridge eval --policy <checkpoint> --suite train --chunking ensemble  # ACT temporal ensembling
    simbridge eval --list                      # splits and suites
    simbridge eval --policy exports/latest --trusted-key keys/exporter.pub   # signed bundles only

``--policy`` is ``expert``, a checkpoint directory or a bundle directory. ``--suite`` is a suite
(all, ood, train, vision, semantics, execution), a split name, or a comma-separated list of
splits. Results go to ``--out`` (default ``runs/eval/<policy>/<stamp>``): ``episodes.jsonl``,
``summary.json``, ``summary.png`` and, with ``--video``, ``videos/*.mp4``.

A bundle that is refused (corrupted, incompatible, or with ``--trusted-key``: unsigned or
signed by another key) ends the command with one line on stderr and exit code 1, before any
environment is created.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import field
from pathlib import Path

from simbridge.data.config import ConfigError, config, load_config
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.renamed_keys import renamed_keys

#: Keys that moved into the ``env`` section (SimEnvSpec); old files and overrides still load.
_ENV_KEYS = ("task", "obs_mode", "camera_size", "wrist_camera", "max_episode_steps", "chunking")


@config
class EvalConfig:
    policy: str = "expert"
    suite: str = "all"
    episodes: int = 10
    seed: int = 0
    video: bool = False
    video_episodes: int = 2
    #: The environment: task, observation mode, cameras, episode length and how action chunks
    #: are executed (as on the robot). A policy with a contract renders its own cameras.
    env: SimEnvSpec = field(default_factory=SimEnvSpec)
    out: str = ""

    _renamed = renamed_keys({k: f"env.{k}" for k in _ENV_KEYS})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("episodes: at least 1 per split")
        if self.env.split != SimEnvSpec.split:
            raise ValueError(f"env: env.split is {self.env.split!r}, but evaluation runs the splits of `suite`: "
                             "set suite=<split> instead")  # fmt: skip


#: command-line flag (dest) -> config key
_FLAGS = {
    "policy": "policy",
    "suite": "suite",
    "episodes": "episodes",
    "seed": "seed",
    "video": "video",
    "video_episodes": "video_episodes",
    "task": "env.task",
    "obs_mode": "env.obs_mode",
    "max_episode_steps": "env.max_episode_steps",
    "chunking": "env.chunking.mode",
    "execute_steps": "env.chunking.execute_steps",
    "out": "out",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="'expert', a checkpoint dir or a bundle dir (default: expert)")
    parser.add_argument(
        "--suite", help="all | ood | train | vision | semantics | execution | <split>[,<split>...]"
    )
    parser.add_argument("--episodes", type=int, help="episodes per split (seeds seed..seed+N-1; default 10)")
    parser.add_argument("--seed", type=int, help="first episode seed (default 0)")
    parser.add_argument(
        "--video", action="store_true", default=None, help="save mp4s of the first episodes per split"
    )
    parser.add_argument(
        "--video-episodes", dest="video_episodes", type=int, help="videos per split (default 2)"
    )
    parser.add_argument("--task", help="task name (default PutOnTarget-v1; LIBERO: libero_spatial, ...)")
    parser.add_argument(
        "--obs-mode",
        dest="obs_mode",
        choices=["rgb", "state"],
        help="state: no rendering (only for the expert)",
    )
    parser.add_argument(
        "--max-steps", dest="max_episode_steps", type=int, help="episode step limit (default 80)"
    )
    parser.add_argument(
        "--chunking", choices=("receding", "ensemble"),
        help="how chunks are executed: receding (default) or ensemble (ACT temporal ensembling)",
    )
    parser.add_argument(
        "--execute-steps", type=int,
        help="receding: actions executed per prediction (default 0 = the whole chunk)",
    )
    parser.add_argument("--out", help="output directory (default runs/eval/<policy>/<stamp>)")
    parser.add_argument(
        "--trusted-key",
        dest="trusted_keys",
        action="append",
        default=[],
        metavar="PUB",
        help="bundles: run only bundles signed by this ed25519 public key (PEM; repeatable)",
    )
    parser.add_argument("--config", help="an eval YAML (launch/configs/eval_*.yaml); flags override it")
    parser.add_argument("--list", action="store_true", help="list splits and suites and exit")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. episodes=5)")


def _list() -> int:
    from simbridge.training.envs import SPLITS, SUITES, list_tasks

    print("tasks:  " + ", ".join(list_tasks()))
    print("suites: " + "; ".join(f"{k} ({len(v)} splits)" for k, v in SUITES.items()))
    print("splits:")
    for s in SPLITS.values():
        print(f"  {s.name:32s} {s.category:10s} {s.description}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    overrides = list(args.overrides) + [
        f"{key}={getattr(args, flag)}" for flag, key in _FLAGS.items() if getattr(args, flag, None) is not None
    ]
    cfg = (
        load_config(EvalConfig, args.config, overrides=overrides)
        if args.config
        else load_config(EvalConfig, overrides=overrides)
    )
    from simbridge.deploy.bundle import BundleError, check_bundle
    from simbridge.training.envs import EnvUnavailable, resolve_suite
    from simbridge.training.evaluation import detect_policy_kind, evaluate, format_table, load_policy_source

    try:
        resolve_suite(cfg.suite)
    except KeyError as exc:
        raise ConfigError(f"suite: {exc.args[0]}") from None
    try:
        spec = cfg.policy
        trusted_keys = getattr(args, "trusted_keys", None) or []
        if trusted_keys:
            if detect_policy_kind(spec) != "bundle":
                raise ConfigError(f"--trusted-key: {spec!r} is not a bundle; signatures only exist on bundles")
            # The signature is checked here; the loader then opens the very directory checked.
            spec = str(check_bundle(spec, trusted_keys=trusted_keys).path)
        source = load_policy_source(spec)
    except (FileNotFoundError, KeyError) as exc:
        print(f"simbridge eval: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except BundleError as exc:
        print(f"simbridge eval: refused bundle: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    kind = source.kind or "policy"
    out = Path(cfg.out) if cfg.out else Path("runs") / "eval" / kind / time.strftime("%Y%m%d-%H%M%S")
    try:
        summary = evaluate(source, suite=cfg.suite, episodes=cfg.episodes, seed=cfg.seed, run_dir=out, video=cfg.video,
                           spec=cfg.env, video_episodes=cfg.video_episodes, progress=args.progress)  # fmt: skip
    except EnvUnavailable as exc:
        print(f"simbridge eval: simulator unavailable: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f"results: {out}/summary.json, {out}/episodes.jsonl, {out}/summary.png")
    return 0
