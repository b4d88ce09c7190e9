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
training uses), then incomplete ones.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Not required at parse time: an unknown flag is then reported as such, a missing command in run().
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    parser.set_defaults(_print_help=parser.print_help)

    p = sub.add_parser("info", help="summary of a store (episodes, steps, success, interventions, splits)")
    p.add_argument("store")
    p.add_argument("--episodes", action="store_true", help="also list every episode")
    p.add_argument(
        "--plot", default=None, metavar="PNG", help="also plot lengths, success per split, interventions"
    )

    p = sub.add_parser("validate", help="check layout, lengths, metadata and chunk checksums (read-only)")
    p.add_argument("store")
    p.add_argument("--quick", action="store_true", help="skip reading every chunk")
    p.add_argument(
        "--repair",
        action="store_true",
        help="say what a repair would do: remove a half-created store, keep a killed writer's open "
        "episode as incomplete, drop uncommitted steps and temp files (changes nothing without --yes)",
    )
    p.add_argument("--yes", action="store_true", help="with --repair: carry the repair out")

    p = sub.add_parser("replay", help="replay an episode's executed actions in simulation (or print them)")
    p.add_argument("store")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("--env", default=None, help="task to replay in (default: the episode's task)")
    p.add_argument("--steps", action="store_true", help="print the recorded steps instead of simulating")

    p = sub.add_parser(
        "to-video", help="write an episode's cameras side by side as MP4 (red border = operator)"
    )
    p.add_argument("store")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("-o", "--out", default=None, help="output .mp4 (default: <store>_ep<I>.mp4)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: from the timestamps)")

    p = sub.add_parser("merge", help="append the episodes of several stores to OUT (same cameras)")
    p.add_argument("out")
    p.add_argument("sources", nargs="+")

    p = sub.add_parser("split", help="randomly partition episodes into DIR/<name>.zarr stores")
    p.add_argument("store")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument(
        "--fractions", default="train=0.9,val=0.1", help="name=fraction,... (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("label", help="set the operator's success label of an episode")
    p.add_argument("store")
    p.add_argument("--episode", type=int, required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--success", dest="success", action="store_true")
    g.add_argument("--failure", dest="success", action="store_false")
    p.add_argument("--by", required=True, help="who labels, e.g. 'operator:alice'")

    p = sub.add_parser("to-lerobot", help="export to the LeRobot v3.0 dataset format")
    p.add_argument("store")
    p.add_argument("-o", "--out", required=True, help="output dataset directory")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: from the timestamps)")
    p.add_argument("--codec", choices=["av1", "h264"], default="av1")
    p.add_argument("--episodes", type=int, nargs="*", default=None)
    p.add_argument("--successful-only", action="store_true", help="only episodes labelled successful")
    p.add_argument("--split", default=None, help="only episodes of this split")
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also export incomplete episodes (left out by default)",
    )
    p.add_argument(
        "--policy-action",
        choices=["auto", "always", "never"],
        default="auto",
        help="export the proposed/clean action (e.g. DART's) as complementary_info.policy_action; "
        "auto: when every exported step has one (default)",
    )
    p.add_argument("--robot-type", default="franka")
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.command is None:
        args._print_help(sys.stderr)
        print(f"simbridge data: choose a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except (StoreError, IndexError, FileExistsError) as exc:
        print(f"simbridge data {args.command}: {exc}", file=sys.stderr)
        return 1


# --- commands ---------------------------------------------------------------------------------


def cmd_info(args) -> int:
    from rich.console import Console
    from rich.table import Table

    full = EpisodeStore(args.store, include_incomplete=True)
    store = EpisodeStore(args.store)  # what training sees: complete episodes only
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
    if args.episodes:
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
    if args.plot and len(store):
        plot_store_summary(store, metas, lengths, Path(args.plot))
        console.print(f"plot: {args.plot}")
    return 0


def plot_store_summary(store: EpisodeStore, metas, lengths: np.ndarray, out: Path) -> None:
    """Episode lengths, labelled success rate per split, and operator steps per episode, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist(lengths, bins=min(30, max(5, len(lengths) // 2)), color="#4477aa")
    axes[0].set(title="episode length", xlabel="steps", ylabel="episodes")
    splits = sorted({m.split or "-" for m in metas})
    rates, counts = [], []
    for sp in splits:
        labels = [m.success for m in metas if (m.split or "-") == sp and m.success is not None]
        rates.append(np.mean(labels) if labels else 0.0)
        counts.append(len(labels))
    bars = axes[1].bar(splits, rates, color="#228833")
    for bar, n in zip(bars, counts, strict=True):
        axes[1].annotate(
            f"n={n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
        )
    axes[1].set(title="success rate (labelled)", ylim=(0, 1.1))
    operator = [int(store.read("intervention", store.episode_slice(i)).sum()) for i in range(len(store))]
    axes[2].bar(range(len(store)), operator, color="#ee6677")
    axes[2].set(title="operator steps per episode", xlabel="episode", ylabel="steps")
    fig.suptitle(f"{store.path.name}: {len(store)} episodes, {store.num_steps} steps")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def cmd_validate(args) -> int:
    if args.yes and not args.repair:
        raise StoreError("--yes only confirms --repair; add --repair")
    if args.repair:
        return repair(args)
    report = validate_store(args.store, deep=not args.quick, progress=True)
    incomplete = f" ({report.incomplete_episodes} incomplete)" if report.incomplete_episodes else ""
    print(f"{report.path}: {report.episodes} committed episodes{incomplete}, {report.steps} steps")
    for w in report.warnings:
        print(f"  warning: {w}")
    for e in report.errors:
        print(f"  ERROR: {e}")
    print("valid" if report.ok else f"INVALID: {len(report.errors)} problem(s); the store was not modified")
    return 0 if report.ok else 1


def repair(args) -> int:
    plan = plan_repair(args.store, deep=not args.quick)
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
    if not args.yes:
        print(f"nothing was changed; to repair, run: simbridge data validate {plan.path} --repair --yes")
        return 1
    apply_repair(plan)
    if plan.remove_store:
        print(f"removed {plan.path}")
        return 0
    report = validate_store(plan.path, deep=not args.quick)
    print(
        f"repaired: {report.episodes} committed episodes ({report.incomplete_episodes} incomplete), {report.steps} steps"
    )
    return 0 if report.ok else 1


def cmd_replay(args) -> int:
    store = EpisodeStore(args.store, include_incomplete=True)
    meta = store.meta(args.episode)
    ep = store.episode(args.episode, keys=["ee_pose", "action", "policy_action", "intervention", "timestamp"])
    if args.steps:
        print(
            f"episode {args.episode}: {meta.instruction!r} task={meta.task} seed={meta.seed} success={meta.success}"
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
    task = args.env or meta.task
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
        f"replayed {t + 1} steps of episode {args.episode} in {task} (seed {meta.seed}): success {success} "
        f"(recorded {meta.success}); end-effector drift max {max(drift, default=0):.4f} m, "
        f"mean {np.mean(drift) if drift else 0:.4f} m"
    )
    return 0


def cmd_to_video(args) -> int:
    store = EpisodeStore(args.store, include_incomplete=True)
    out = (
        Path(args.out)
        if args.out
        else Path(f"{str(store.path).rstrip('/').removesuffix('.zarr')}_ep{args.episode}.mp4")
    )
    n = write_episode_video(store, args.episode, out, fps=args.fps)
    print(f"wrote {out} ({n} frames)")
    return 0


def cmd_merge(args) -> int:
    n = merge_stores(args.sources, args.out, progress=True)
    print(
        f"merged {n} episodes from {len(args.sources)} store(s) into {args.out} (now {len(EpisodeStore(args.out))})"
    )
    return 0


def cmd_split(args) -> int:
    fractions = {}
    for item in args.fractions.split(","):
        name, _, value = item.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"--fractions: expected name=fraction,... (e.g. train=0.9,val=0.1), got {args.fractions!r}"
            ) from None
    paths = split_store(args.store, args.out, fractions, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {len(EpisodeStore(path))} episodes -> {path}")
    return 0


def cmd_label(args) -> int:
    meta = EpisodeStore(args.store, include_incomplete=True).label(
        args.episode, success=args.success, by=args.by
    )
    print(f"episode {args.episode}: success={meta.success} (labelled by {meta.success_labeled_by})")
    return 0


def cmd_to_lerobot(args) -> int:
    from simbridge.data.lerobot import export_lerobot

    store = EpisodeStore(args.store, include_incomplete=args.include_incomplete)
    episodes = list(range(len(store))) if args.episodes is None else args.episodes
    if args.successful_only or args.split is not None:
        metas = store.metas()
        episodes = [
            i
            for i in episodes
            if (not args.successful_only or metas[i].success is True)
            and (args.split is None or metas[i].split == args.split)
        ]
    out = export_lerobot(
        store,
        args.out,
        episodes=episodes,
        fps=args.fps,
        robot_type=args.robot_type,
        codec=args.codec,
        overwrite=args.overwrite,
        progress=True,
        policy_action={"auto": None, "always": True, "never": False}[args.policy_action],
    )
    print(f"wrote LeRobot v3.0 dataset to {out}")
    return 0


COMMANDS = {
    "info": cmd_info,
    "validate": cmd_validate,
    "replay": cmd_replay,
    "to-video": cmd_to_video,
    "merge": cmd_merge,
    "split": cmd_split,
    "label": cmd_label,
    "to-lerobot": cmd_to_lerobot,
}


# --- video ------------------------------------------------------------------------------------


def episode_frames(store: EpisodeStore, i: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the cameras side by side; steps where the operator acted get a red border."""
    ep = store.episode(i, keys=[f"image_{c.name}" for c in store.cameras] + ["intervention"])
    height = max(c.height for c in store.cameras)
    height += height % 2
    panels = []
    for cam in store.cameras:
        imgs = ep[f"image_{cam.name}"]
        panels.append(np.pad(imgs, ((0, 0), (0, height - cam.height), (0, 0), (0, 0))))
    frames = np.concatenate(panels, axis=2)
    if frames.shape[2] % 2:
        frames = np.pad(frames, ((0, 0), (0, 0), (0, 1), (0, 0)))
    border = 3
    for t in np.flatnonzero(ep["intervention"]):
        f = frames[t]
        f[:border], f[-border:], f[:, :border], f[:, -border:] = (
            (255, 0, 0),
            (255, 0, 0),
            (255, 0, 0),
            (255, 0, 0),
        )
    return frames


def write_episode_video(store: EpisodeStore, i: int, out: Path, fps: float | None = None) -> int:
    import av

    frames = episode_frames(store, i)
    if fps is None:
        ts = store.read("timestamp", store.episode_slice(i))
        dt = float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0
        fps = 1.0 / dt if dt > 0 else 10.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("h264", rate=max(1, round(fps)))
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(frames)
