"""Export an episode store to the LeRobot dataset format (v3.0), for users of that ecosystem.

``lerobot`` itself cannot be installed next to this stack (it pins torch / numpy / opencv
below ours), so the v3.0 layout is written directly with pyarrow, pandas and PyAV::

    <out>/meta/info.json                                  codebase_version "v3.0", fps, features
    <out>/meta/stats.json                                 min/max/mean/std/count/q01..q99 per feature
    <out>/meta/tasks.parquet                              task string (index) -> task_index
    <out>/meta/episodes/chunk-000/file-000.parquet        one row per episode (lengths, offsets,
                                                          stats/<feature>/<stat>, simbridge/...)
    <out>/data/chunk-000/file-000.parquet                 one row per frame
    <out>/videos/observation.images.<cam>/chunk-000/file-000.mp4   episodes concatenated

Feature mapping: ``observation.state`` = ee_pose xyz+quat(wxyz) + gripper width (8),
``observation.joint_positions`` (7), ``action`` (the executed action, 7),
``complementary_info.is_intervention`` (HIL-SERL's name), ``next.done``, ``next.reward``
(1.0 on the last frame of a successful episode), and ``complementary_info.policy_action`` (7,
what the policy or expert proposed: DART's clean label) when every exported step has one.
It is not an ``action.*`` key on purpose: LeRobot would hand that to policies as a second action.

Timestamps: ``timestamp`` is ``frame_index / fps`` as LeRobot requires; the recorded time is
``observation.timestamp_s``, float32 seconds since the episode's first step (exact to float32,
where absolute epoch seconds would round to 128 s); the absolute start is the episode column
``simbridge/start_time_s`` (float64).

Statistics: like LeRobot's own writer, every episode row carries ``stats/<feature>/<stat>``
columns (min, max, mean, std, count, q01, q10, q50, q90, q99; images per channel in [0, 1],
shaped (3, 1, 1)), so LeRobot's editing tools (``delete_episodes``, ``split_dataset``,
``aggregate_datasets``) can rebuild ``stats.json`` from the episodes they keep. ``stats.json``
itself is computed from all exported frames.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simbridge.data.spec import ACTION_NAMES, SCHEMA_VERSION
from simbridge.data.store import EpisodeStore, StoreError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
STATE_NAMES = ["x", "y", "z", "qw", "qx", "qy", "qz", "gripper_width"]
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
POLICY_ACTION = "complementary_info.policy_action"
VIDEO_CODECS = {"av1": "libsvtav1", "h264": "h264"}


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def export_lerobot(
    store: EpisodeStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    episodes: Sequence[int] | None = None,
    fps: float | None = None,
    robot_type: str = "franka",
    codec: str = "av1",
    overwrite: bool = False,
    progress: bool = False,
    policy_action: bool | None = None,
) -> Path:
    """Write ``episodes`` (default: all of the view) of ``store`` as a LeRobot v3.0 dataset in ``out_dir``.

    A path opens the complete episodes only; pass ``EpisodeStore(path, include_incomplete=True)``
    to export incomplete ones too. ``policy_action``: export ``complementary_info.policy_action``
    (None: when every exported step recorded one; True: require it; False: never).
    """
    import av
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise: errors only
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    out = Path(out_dir)
    if codec not in VIDEO_CODECS:
        raise ValueError(f"codec: choose from {sorted(VIDEO_CODECS)}, got {codec!r}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; pass overwrite=True (--overwrite) or choose another directory"
            )
        shutil.rmtree(out)
    indices = list(range(len(store))) if episodes is None else [store._index(i) for i in episodes]
    if not indices:
        raise StoreError(
            f"nothing to export: {store.path} has {len(store)} committed episode(s), none selected (check the filters)"
        )
    if fps is None:
        fps = _infer_fps(store, indices)
    fps_int = round(fps)

    metas = [store.meta(i) for i in indices]
    tasks = list(dict.fromkeys(m.instruction for m in metas))
    task_index = {t: k for k, t in enumerate(tasks)}
    columns = dict(_FRAME_COLUMNS)
    if _want_policy_action(store, indices, policy_action):
        columns[POLICY_ACTION] = ("float32", (7,))

    cols: dict[str, list] = {k: [] for k in columns}
    episode_rows = []
    writers = {}
    for cam in store.cameras:
        path = out / VIDEO_PATH.format(video_key=video_key(cam.name), chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(path), "w")
        stream = container.add_stream(VIDEO_CODECS[codec], rate=fps_int)
        stream.width, stream.height, stream.pix_fmt = cam.width, cam.height, "yuv420p"
        stream.options = (
            {"g": "2", "crf": "30", "preset": "10"} if codec == "av1" else {"g": "2", "crf": "18"}
        )
        writers[cam.name] = (container, stream)
    image_hists = {cam.name: np.zeros((3, 256), np.int64) for cam in store.cameras}

    frame_total = 0
    iterator = indices
    if progress:
        from tqdm import tqdm

        iterator = tqdm(indices, desc="export lerobot", unit="episode")
    try:
        for new_idx, (i, meta) in enumerate(zip(iterator, metas, strict=True)):
            ep = store.episode(i)
            n = len(ep["action"])
            reward = np.zeros(n, np.float32)
            if meta.success:
                reward[-1] = 1.0
            frame = {
                "observation.state": np.concatenate([ep["ee_pose"], ep["gripper_width"][:, None]], axis=1),
                "observation.joint_positions": ep["joint_positions"],
                "action": ep["action"],
                "complementary_info.is_intervention": ep["intervention"],
                # Relative to the first step in float64 first: epoch seconds in float32 keep 128 s steps.
                "observation.timestamp_s": ep["timestamp"] - ep["timestamp"][0],
                "next.reward": reward,
                "next.done": np.arange(n) == n - 1,
                "timestamp": np.arange(n) / fps_int,
                "frame_index": np.arange(n),
                "episode_index": np.full(n, new_idx),
                "index": np.arange(frame_total, frame_total + n),
                "task_index": np.full(n, task_index[meta.instruction]),
                POLICY_ACTION: ep["policy_action"],
            }
            row = {
                "episode_index": new_idx,
                "tasks": [meta.instruction],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": frame_total,
                "dataset_to_index": frame_total + n,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                "simbridge/source_episode": i,
                "simbridge/success": meta.success,
                "simbridge/split": meta.split,
                "simbridge/policy_id": meta.policy_id,
                "simbridge/start_time_s": float(ep["timestamp"][0]),
                "simbridge/incomplete": bool(meta.incomplete),
            }
            for name, (dtype, _) in columns.items():
                values = np.asarray(frame[name]).astype(dtype)
                cols[name].append(values)
                row.update(stat_columns(name, feature_stats(values)))
            for cam in store.cameras:
                container, stream = writers[cam.name]
                frames = ep[f"image_{cam.name}"]
                for img in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                hist = channel_histograms(frames)
                image_hists[cam.name] += hist
                key = video_key(cam.name)
                row.update(stat_columns(key, image_stats(hist, len(frames))))
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = 0
                row[f"videos/{key}/from_timestamp"] = frame_total / fps_int
                row[f"videos/{key}/to_timestamp"] = (frame_total + n) / fps_int
            episode_rows.append(row)
            frame_total += n
    finally:
        for container, stream in writers.values():
            for packet in stream.encode():
                container.mux(packet)
            container.close()

    # Frame table: vectors as fixed-size float32 lists, scalars as plain columns.
    arrays, fields = [], []
    for name, (dtype, shape) in columns.items():
        values = np.concatenate(cols[name]).astype(dtype)
        if shape == (1,):
            arr = pa.array(values)
        else:
            arr = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), shape[0])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    data_path = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), data_path)

    (out / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(episode_rows).to_parquet(out / EPISODES_PATH, index=False)
    pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task")).to_parquet(
        out / "meta/tasks.parquet"
    )

    features = _features(store, fps_int, codec, columns)
    stats = {name: _to_lists(feature_stats(np.concatenate(cols[name]))) for name in columns}
    for cam in store.cameras:
        stats[video_key(cam.name)] = _to_lists(image_stats(image_hists[cam.name], frame_total))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(indices),
        "total_frames": frame_total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps_int,
        "splits": {"train": f"0:{len(indices)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
        "simbridge": {"source": str(store.path), "schema_version": SCHEMA_VERSION},
    }
    (out / "meta/info.json").write_text(json.dumps(info, indent=2))
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=2))
    return out


_FRAME_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "observation.state": ("float32", (8,)),
    "observation.joint_positions": ("float32", (7,)),
    "action": ("float32", (7,)),
    "complementary_info.is_intervention": ("float32", (1,)),
    "observation.timestamp_s": ("float32", (1,)),
    "next.reward": ("float32", (1,)),
    "next.done": ("bool", (1,)),
    "timestamp": ("float32", (1,)),
    "frame_index": ("int64", (1,)),
    "episode_index": ("int64", (1,)),
    "index": ("int64", (1,)),
    "task_index": ("int64", (1,)),
}
_NAMES = {
    "observation.state": STATE_NAMES,
    "observation.joint_positions": [f"joint_{i}" for i in range(7)],
    "action": list(ACTION_NAMES),
    POLICY_ACTION: list(ACTION_NAMES),
}


def _features(store: EpisodeStore, fps: int, codec: str, columns: dict) -> dict:
    feats: dict[str, dict] = {}
    for cam in store.cameras:
        feats[video_key(cam.name)] = {
            "dtype": "video",
            "shape": [cam.height, cam.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": cam.height,
                "video.width": cam.width,
                "video.codec": codec,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    for name, (dtype, shape) in columns.items():
        feats[name] = {"dtype": dtype, "shape": list(shape), "names": _NAMES.get(name)}
    return feats


def _want_policy_action(store: EpisodeStore, indices: Sequence[int], wanted: bool | None) -> bool:
    if wanted is False:
        return False
    missing = [
        i for i in indices if not np.isfinite(store.read("policy_action", store.episode_slice(i))).all()
    ]
    if wanted and missing:
        raise StoreError(
            f"policy_action requested, but episodes {missing[:10]} have steps without one (NaN: no policy "
            "ran there, e.g. teleoperation); leave those episodes out or export without it"
        )
    return not missing


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics over frames: one value per dimension, ``count`` = frames."""
    x = np.asarray(values).reshape(len(values), -1).astype(np.float64)
    out = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),  # population std, as LeRobot's writer and aggregate_stats use
        "count": np.array([len(x)]),
    }
    for q in QUANTILES:
        out[_qkey(q)] = np.quantile(x, q, axis=0)
    return out


def channel_histograms(frames: np.ndarray) -> np.ndarray:
    """(3, 256) pixel counts per RGB channel: exact image statistics without sorting millions of pixels."""
    px = np.asarray(frames, np.uint8).reshape(-1, 3)
    return np.stack([np.bincount(px[:, c], minlength=256) for c in range(3)])


def image_stats(hist: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel statistics of pixels scaled to [0, 1], shaped (3, 1, 1) as LeRobot stores them;
    ``count`` is the number of frames, as in LeRobot."""
    levels = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = hist @ levels / n
    out = {
        "min": np.array([levels[np.flatnonzero(h)[0]] for h in hist]),
        "max": np.array([levels[np.flatnonzero(h)[-1]] for h in hist]),
        "mean": mean,
        "std": np.sqrt(((levels[None, :] - mean[:, None]) ** 2 * hist).sum(1) / n),
    }
    cum = np.cumsum(hist, axis=1)
    for q in QUANTILES:  # np.quantile's linear interpolation between the sorted pixels around q * (n - 1)
        pos = q * (n - 1)
        lo, hi = np.floor(pos), np.ceil(pos)
        v_lo = np.array([np.searchsorted(c, k, side="right") for c, k in zip(cum, lo, strict=True)])
        v_hi = np.array([np.searchsorted(c, k, side="right") for c, k in zip(cum, hi, strict=True)])
        out[_qkey(q)] = (v_lo + (pos - lo) * (v_hi - v_lo)) / 255.0
    out = {k: v.reshape(3, 1, 1) for k, v in out.items()}
    out["count"] = np.array([frames])
    return out


def stat_columns(feature: str, stats: dict[str, np.ndarray]) -> dict[str, list]:
    """``stats/<feature>/<stat>`` episode columns, the names LeRobot's writer flattens its stats to."""
    return {f"stats/{feature}/{k}": v for k, v in _to_lists(stats).items()}


def _to_lists(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def _qkey(q: float) -> str:
    return f"q{round(q * 100):02d}"


def _infer_fps(store: EpisodeStore, indices: Sequence[int]) -> float:
    dts = []
    for i in indices[:5]:
        ts = store.read("timestamp", store.episode_slice(i))
        if len(ts) > 1:
            dts.append(np.median(np.diff(ts)))
    dt = float(np.median(dts)) if dts else 0.0
    if not dt > 0:
        raise StoreError("cannot infer the frame rate from the timestamps; pass fps (--fps)")
    return 1.0 / dt
