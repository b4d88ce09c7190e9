"""``simbridge eval``: run a policy on the generalization splits and write a results table.

    simbridge eval --policy expert --suite all --episodes 20
    simbridge eval --policy runs/ppo/<stamp>/checkpoints/iter_000100 --suite ood --episodes 20 --video
    simbridge eval --policy exports/latest --suite vision --episodes 10 --out runs/eval/bundle
    simbridge eval --config launch/configs/eval_all.yaml episodes=5 env.max_episode_steps=120
    simbridge eval --policy <checkpoint> --suite train --execute-steps 1   # re-plan every step
    simbridge eval --policy <checkpoint> --suite train --chunking ensemble  # ACT temporal ensembling
    simbridge eval --list                      # splits and suites
    simbridge eval --policy exports/latest --trusted-key keys/exporter.pub   # signed bundles only
    simbridge eval --policy ws://127.0.0.1:8765 --suite train   # a checkpoint run by `simbridge serve`

``--policy`` is ``expert``, a checkpoint directory, a bundle directory or ``ws://host:port`` (a
policy served by ``simbridge serve``; an unreachable server is one line, exit 1). ``--suite`` is a suite
(all, ood, train, vision, semantics, execution), a split name, or a comma-separated list of
splits. Results go to ``--out`` (default ``<root>/eval/<policy>/<stamp>``, root ``runs``):
``episodes.jsonl``, ``summary.json``, ``summary.png`` and, with ``--video``, ``videos/*.mp4``.
On PutOnTarget every failed episode is classified (``never_reached``, ``closed_off_target``,
``closed_too_high``, ``dropped_in_transit``, ``released_off_target``, ``timed_out``; see
:mod:`simbridge.training.failure_analysis`) and the printed table counts each class per split.

Options are :class:`EvalConfig`: ``--config FILE`` (``launch/configs/eval_*.yaml``), one flag per
field (``simbridge eval --help``; ``--task``, ``--obs-mode``, ``--max-steps``, ``--chunking`` and
``--execute-steps`` set the ``env`` keys) and ``key=value`` overrides.

A bundle that is refused (corrupted, incompatible, or with ``--trusted-key``: unsigned or
signed by another key) ends the command with one line on stderr and exit code 1, before any
environment is created.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import field
from pathlib import Path

from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import ConfigError, config
from simbridge.data.runs import new_run_path
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.renamed_keys import renamed_keys

#: Keys that moved into the ``env`` section (SimEnvSpec); old files and overrides still load.
_ENV_KEYS = ("task", "obs_mode", "camera_size", "wrist_camera", "max_episode_steps", "chunking")


@config
class EvalConfig:
    """``simbridge eval``'s options (``--config FILE``, ``--<field>`` flags, ``key=value``)."""

    #: The policy: 'expert', a checkpoint directory, a policy bundle directory or ws://host:port (simbridge serve).
    policy: str = "expert"
    #: Splits to run: a suite (all, ood, train, vision, semantics, execution), a split, or a comma-separated
    #: list of splits.
    suite: str = "all"
    #: Episodes per split (seeds seed .. seed+N-1).
    episodes: int = 10
    #: First episode seed.
    seed: int = 0
    #: Save mp4s of the first episodes of each split.
    video: bool = False
    #: Videos per split (with --video).
    video_episodes: int = 2
    #: The environment: task, observation mode, cameras, episode length and how action chunks
    #: are executed (as on the robot). A policy with a contract renders its own cameras.
    env: SimEnvSpec = field(default_factory=SimEnvSpec)
    #: Output directory (default: a new run directory <root>/eval/<policy kind>/<stamp>).
    out: str = ""
    #: Where new run directories go.
    root: str = "runs"
    #: Bundles: run only bundles signed by one of these ed25519 public keys (PEM files).
    trusted_keys: list[str] = field(default_factory=list)
    #: Show a progress bar.
    progress: bool = True

    _renamed = renamed_keys({k: f"env.{k}" for k in _ENV_KEYS})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("episodes: at least 1 per split")
        if self.env.split != SimEnvSpec.split:
            raise ValueError(f"env: env.split is {self.env.split!r}, but evaluation runs the splits of `suite`: "
                             "set suite=<split> instead")  # fmt: skip


CONFIG = EvalConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The old short spellings stay the flags of the env keys they set.
    add_config_arguments(parser, EvalConfig, aliases={
        "env.task": "--task",
        "env.obs_mode": "--obs-mode",
        "env.max_episode_steps": "--max-steps",
        "env.chunking.mode": "--chunking",
        "env.chunking.execute_steps": "--execute-steps",
        "trusted_keys": "--trusted-key",
    })  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list tasks, splits and suites and exit")


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
    cfg = config_from_args(args, EvalConfig)
    from simbridge.deploy.bundle import BundleError, check_bundle
    from simbridge.training.envs import EnvUnavailable, resolve_suite
    from simbridge.training.evaluation import detect_policy_kind, evaluate, format_table, load_policy_source

    try:
        resolve_suite(cfg.suite)
    except KeyError as exc:
        raise ConfigError(f"suite: {exc.args[0]}") from None
    try:
        spec = cfg.policy
        if cfg.trusted_keys:
            if detect_policy_kind(spec) != "bundle":
                raise ConfigError(f"trusted_keys: {spec!r} is not a bundle; signatures only exist on bundles")
            # The signature is checked here; the loader then opens the very directory checked.
            spec = str(check_bundle(spec, trusted_keys=cfg.trusted_keys).path)
        source = load_policy_source(spec)
    except (FileNotFoundError, KeyError) as exc:
        print(f"simbridge eval: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except BundleError as exc:
        print(f"simbridge eval: refused bundle: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    kind = source.kind or "policy"
    out = Path(cfg.out) if cfg.out else new_run_path(cfg.root, f"eval/{kind}")
    try:
        summary = evaluate(source, suite=cfg.suite, episodes=cfg.episodes, seed=cfg.seed, run_dir=out, video=cfg.video,
                           spec=cfg.env, video_episodes=cfg.video_episodes, progress=cfg.progress)  # fmt: skip
    except EnvUnavailable as exc:
        print(f"simbridge eval: simulator unavailable: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f"results: {out}/summary.json, {out}/episodes.jsonl, {out}/summary.png")
    return 0
