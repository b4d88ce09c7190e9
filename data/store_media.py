"""Pictures of an episode store: a summary plot and an episode's cameras as MP4
(``simbridge data info --plot``, ``simbridge data to-video``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simbridge.data.store import EpisodeStore


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
