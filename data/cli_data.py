"""``simbridge data``: inspect, check, convert and edit episode stores.

simbridge data info STORE [--episodes]             incomplete episodes (writer killed mid-episode) marked
simbridge data validate STORE [--quick]            reports only, never modifies (exit 1 on errors)
simbridge data validate STORE --repair [--yes]     says what a repair does; --yes does it
simbridge data replay STORE --episode I [--env TASK] [--steps]
simbridge data to-video STORE --episode I [-o out.mp4]
simbridge data merge OUT SRC [SRC ...]
simbridge data split STORE -o DIR [--fractions train=0.9,val=0.1] [--seed 0]
simbridge data label STORE --episode I (--success | --failure) --by NAME
simbridge data to-lerobot STORE -o DIR [--fps 10] [--codec av1|h264] [--episodes 0 3 5]

Episode indices are those of ``info --episodes``: complete episodes first (the same numbers
training uses), then incomplete ones. Each command's options are a config dataclass
(:mod:`simbridge.data.cli_data_options`, listed in :data:`COMMANDS`): ``--config FILE``, one
flag per field, ``key=value``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from simbridge.data.cli_config import add_config_arguments, config_from_args, field_dest
from simbridge.data.cli_data_options import (
    InfoCommand,
    LabelCommand,
    MergeCommand,
    ReplayCommand,
    SplitCommand,
    StoreCommand,
    ToLerobotCommand,
    ToVideoCommand,
    ValidateCommand,
)
from simbridge.data.config import ConfigError
from simbridge.data.store import (
    EpisodeStore,
    StoreError,
    apply_repair,
    merge_stores,
    plan_repair,
    split_store,
    store_size_bytes,
    validate_store,
)
from simbridge.data.store_media import plot_store_summary, write_episode_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Not required at parse time: an unknown flag is then reported as such, a missing command in run().
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    parser.set_defaults(_print_help=parser.print_help)
    for name, (schema, summary, _) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        on_store = issubclass(schema, StoreCommand)
        aliases = {"out": "-o"} if on_store and "out" in {f.name for f in fields(schema)} else None
        add_config_arguments(p, schema, positional=("store",) if on_store else ("out", "sources"), aliases=aliases)
        if name == "label":
            p.add_argument("--failure", dest=field_dest("success"), action="store_const", const=False,
                           default=argparse.SUPPRESS, help="the same as --no-success")


def run(args: argparse.Namespace) -> int:
    if args.command is None:
        args._print_help(sys.stderr)
        print(f"simbridge data: choose a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    schema, _, handler = COMMANDS[args.command]
    cfg = config_from_args(args, schema)
    try:
        return handler(cfg)
    except (StoreError, IndexError, FileExistsError) as exc:
        print(f"simbridge data {args.command}: {exc}", file=sys.stderr)
        return 1


# --- commands ---------------------------------------------------------------------------------


def cmd_info(cmd: InfoCommand) -> int:
    from rich.console import Console
    from rich.table import Table

    full = EpisodeStore(cmd.store, include_incomplete=True)
    store = EpisodeStore(cmd.store)  # what training sees: complete episodes only
    all_metas = full.metas()
    metas = all_metas[: len(store)]
    lengths = store.episode_lengths()
    labelled = [m.success for m in metas if m.success is not None]
    console = Console()
    summary = Table(title=f"episode store {store.path}", show_header=False)
    summary.add_row("episodes / steps", f"{len(store)} / {store.num_steps}")
    if full.num_incomplete:
        is_open = f", 1 still open ({full.open_episode_steps} committed)" if full.open_episode_steps else ""
        steps = full.num_steps - store.num_steps
        summary.add_row(
            "incomplete episodes", f"{full.num_incomplete} / {steps} steps{is_open}; not for training"
        )
    summary.add_row("cameras", ", ".join(f"{c.name} {c.height}x{c.width}" for c in store.cameras))
    summary.add_row("robot", str(store.info.get("robot", "")))
    summary.add_row("schema / commits", f"v{store.schema_version} / {store.commit_counter}")
    summary.add_row("size on disk", f"{store_size_bytes(store.path) / 1e6:.1f} MB")
    if len(store):
        summary.add_row(
            "episode length", f"min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}"
        )
        summary.add_row(
            "success (labelled)",
            f"{sum(labelled)}/{len(labelled)}" + (f" = {np.mean(labelled):.0%}" if labelled else ""),
        )
        summary.add_row("episodes with interventions", str(sum(m.num_interventions > 0 for m in metas)))
        splits = Counter(m.split or "-" for m in metas)
        summary.add_row("splits", ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())))
        summary.add_row(
            "policies", ", ".join(f"{k}: {v}" for k, v in Counter(m.policy_id or "-" for m in metas).items())
        )
    console.print(summary)
    if cmd.episodes:
        table = Table(title="episodes", caption="* incomplete (left out of training), ** still open")
        for col in ("#", "steps", "success", "by", "interv.", "policy", "split", "seed", "instruction"):
            table.add_column(col)
        for i, (m, n) in enumerate(zip(all_metas, full.episode_lengths(), strict=True)):
            ok = "-" if m.success is None else ("yes" if m.success else "no")
            table.add_row(
                f"{i}{'*' * (int(m.incomplete) + int(bool(m.extra.get('open'))))}",
                str(n),
                ok,
                m.success_labeled_by,
                str(m.num_interventions),
                m.policy_id,
                m.split,
                str(m.seed),
                m.instruction,
            )
        console.print(table)
    if cmd.plot and len(store):
        plot_store_summary(store, metas, lengths, cmd.plot)
        console.print(f"plot: {cmd.plot}")
    return 0


def cmd_validate(cmd: ValidateCommand) -> int:
    if cmd.yes and not cmd.repair:
        raise StoreError("--yes only confirms --repair; add --repair")
    if cmd.repair:
        return repair(cmd)
    report = validate_store(cmd.store, deep=not cmd.quick, progress=True)
    incomplete = f" ({report.incomplete_episodes} incomplete)" if report.incomplete_episodes else ""
    print(f"{report.path}: {report.episodes} committed episodes{incomplete}, {report.steps} steps")
    for w in report.warnings:
        print(f"  warning: {w}")
    for e in report.errors:
        print(f"  ERROR: {e}")
    print("valid" if report.ok else f"INVALID: {len(report.errors)} problem(s); the store was not modified")
    return 0 if report.ok else 1


def repair(cmd: ValidateCommand) -> int:
    plan = plan_repair(cmd.store, deep=not cmd.quick)
    for problem in plan.unrepairable:
        print(f"  ERROR (not repairable; restore from a backup): {problem}")
    if not plan.actions:
        print(f"{plan.path}: nothing to repair" + ("" if plan.unrepairable else "; the store is valid"))
        return 1 if plan.unrepairable else 0
    print(f"{plan.path}: the repair will")
    for action in plan.actions:
        print(f"  - {action}")
    if plan.unrepairable:
        print("not repaired: restore the store from a backup first")
        return 1
    if not cmd.yes:
        print(f"nothing was changed; to repair, run: simbridge data validate {plan.path} --repair --yes")
        return 1
    apply_repair(plan)
    if plan.remove_store:
        print(f"removed {plan.path}")
        return 0
    report = validate_store(plan.path, deep=not cmd.quick)
    print(
        f"repaired: {report.episodes} committed episodes ({report.incomplete_episodes} incomplete), {report.steps} steps"
    )
    return 0 if report.ok else 1


def cmd_replay(cmd: ReplayCommand) -> int:
    store = EpisodeStore(cmd.store, include_incomplete=True)
    meta = store.meta(cmd.episode)
    ep = store.episode(cmd.episode, keys=["ee_pose", "action", "policy_action", "intervention", "timestamp"])
    if cmd.steps:
        print(
            f"episode {cmd.episode}: {meta.instruction!r} task={meta.task} seed={meta.seed} success={meta.success}"
        )
        print("   t   time      x       y       z    | action dx dy dz ... gripper        | who")
        for t in range(len(ep["action"])):
            p, a = ep["ee_pose"][t], ep["action"][t]
            who = (
                "operator"
                if ep["intervention"][t]
                else ("policy" if np.isfinite(ep["policy_action"][t, 0]) else "-")
            )
            print(
                f"{t:4d} {ep['timestamp'][t]:7.2f} {p[0]:7.3f} {p[1]:7.3f} {p[2]:7.3f} | "
                f"{' '.join(f'{v:+.3f}' for v in a)} | {who}"
            )
        return 0
    task = cmd.env or meta.task
    if not task:
        raise ConfigError("replay: the episode records no task; pass --env <task> (or --steps to print it)")
    try:
        from simbridge.training.envs import make_env
    except ImportError as exc:
        print(
            f"simbridge data replay: simulation environments are unavailable ({exc}); use --steps",
            file=sys.stderr,
        )
        return 1
    cam = store.cameras[0]
    env = make_env(
        task=task,
        split=meta.split or "train",
        seed=meta.seed or 0,
        obs_mode="state",
        camera_size=(cam.height, cam.width),
        max_episode_steps=len(ep["action"]) + 1,
    )
    try:
        obs, _ = env.reset(seed=meta.seed)
        drift, success = [], False
        for t, action in enumerate(ep["action"]):
            obs, _, terminated, truncated, info = env.step(action)
            success = success or bool(info.get("success", False))
            if t + 1 < len(ep["ee_pose"]):
                drift.append(float(np.linalg.norm(np.asarray(obs.ee_pose)[:3] - ep["ee_pose"][t + 1, :3])))
            if terminated or truncated:
                break
    finally:
        env.close()
    print(
        f"replayed {t + 1} steps of episode {cmd.episode} in {task} (seed {meta.seed}): success {success} "
        f"(recorded {meta.success}); end-effector drift max {max(drift, default=0):.4f} m, "
        f"mean {np.mean(drift) if drift else 0:.4f} m"
    )
    return 0


def cmd_to_video(cmd: ToVideoCommand) -> int:
    store = EpisodeStore(cmd.store, include_incomplete=True)
    out = cmd.out or Path(f"{str(store.path).rstrip('/').removesuffix('.zarr')}_ep{cmd.episode}.mp4")
    n = write_episode_video(store, cmd.episode, out, fps=cmd.fps)
    print(f"wrote {out} ({n} frames)")
    return 0


def cmd_merge(cmd: MergeCommand) -> int:
    n = merge_stores(cmd.sources, cmd.out, progress=True)
    print(
        f"merged {n} episodes from {len(cmd.sources)} store(s) into {cmd.out} (now {len(EpisodeStore(cmd.out))})"
    )
    return 0


def cmd_split(cmd: SplitCommand) -> int:
    paths = split_store(cmd.store, cmd.out, cmd.parts(), seed=cmd.seed)
    for name, path in paths.items():
        print(f"{name}: {len(EpisodeStore(path))} episodes -> {path}")
    return 0


def cmd_label(cmd: LabelCommand) -> int:
    meta = EpisodeStore(cmd.store, include_incomplete=True).label(
        cmd.episode, success=cmd.success, by=cmd.by
    )
    print(f"episode {cmd.episode}: success={meta.success} (labelled by {meta.success_labeled_by})")
    return 0


def cmd_to_lerobot(cmd: ToLerobotCommand) -> int:
    from simbridge.data.lerobot import export_lerobot

    store = EpisodeStore(cmd.store, include_incomplete=cmd.include_incomplete)
    episodes = list(range(len(store))) if cmd.episodes is None else cmd.episodes
    if cmd.successful_only or cmd.split is not None:
        metas = store.metas()
        episodes = [
            i
            for i in episodes
            if (not cmd.successful_only or metas[i].success is True)
            and (cmd.split is None or metas[i].split == cmd.split)
        ]
    out = export_lerobot(
        store,
        cmd.out,
        episodes=episodes,
        fps=cmd.fps,
        robot_type=cmd.robot_type,
        codec=cmd.codec,
        overwrite=cmd.overwrite,
        progress=True,
        policy_action={"auto": None, "always": True, "never": False}[cmd.policy_action],
    )
    print(f"wrote LeRobot v3.0 dataset to {out}")
    return 0


#: Command -> (its options, help line, what runs it).
COMMANDS: dict[str, tuple[type, str, Callable[[Any], int]]] = {
    "info": (InfoCommand, "summary of a store (episodes, steps, success, interventions, splits)", cmd_info),
    "validate": (ValidateCommand, "check layout, lengths, metadata and chunk checksums (read-only)", cmd_validate),
    "replay": (ReplayCommand, "replay an episode's executed actions in simulation (or print them)", cmd_replay),
    "to-video": (ToVideoCommand, "write an episode's cameras side by side as MP4 (red border = operator)",
                 cmd_to_video),
    "merge": (MergeCommand, "append the episodes of several stores to OUT (same cameras)", cmd_merge),
    "split": (SplitCommand, "randomly partition episodes into DIR/<name>.zarr stores", cmd_split),
    "label": (LabelCommand, "set the operator's success label of an episode", cmd_label),
    "to-lerobot": (ToLerobotCommand, "export to the LeRobot v3.0 dataset format", cmd_to_lerobot),
}
