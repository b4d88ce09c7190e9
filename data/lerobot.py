"""Export an episode store to the LeRobot dataset format (v3.0), for users of that ecosystem.

``lerobot`` itself cannot be installed next to this stack (it pins torch / numpy / opencv
below ours), so the v3.0 layout is written directly with pyarrow, pandas and PyAV::

    <out>/meta/info.json                                  codebase_version "v3.0", fps, features
    <out>/meta/stats.json                                 min/max/mean/std/count/q01..q99 per feature
    <out>/meta/tasks.parquet                              task string (index) -> task_index
    <out>/meta/episodes/chunk-000/file-000.parquet        one row per episode (lengths, offsets)
    <out>/data/chunk-000/file-000.parquet                 one row per frame
    <out>/videos/observation.images.<cam>/chunk-000/file-000.mp4   episodes concatenated

Feature mapping: ``observation.state`` = ee_pose xyz+quat(wxyz) + gripper width (8),
``observation.joint_positions`` (7), ``action`` (the executed action, 7),
``complementary_info.is_intervention`` (HIL-SERL's name), ``next.done``, ``next.reward``
(1.0 on the last frame of a successful episode). Timestamps are ``frame_index / fps`` as
LeRobot requires; the recorded wall-clock time is kept in ``observation.timestamp_s``.
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
) -> Path:
    """Write ``episodes`` (default: all) of ``store`` as a LeRobot v3.0 dataset in ``out_dir``."""
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

    cols: dict[str, list] = {k: [] for k in _FRAME_COLUMNS}
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
    image_samples: dict[str, list[np.ndarray]] = {cam.name: [] for cam in store.cameras}

    frame_total = 0
    iterator = indices
    if progress:
        from tqdm import tqdm

        iterator = tqdm(indices, desc="export lerobot", unit="episode")
    try:
        for new_idx, (i, meta) in enumerate(zip(iterator, metas, strict=True)):
            ep = store.episode(i)
            n = len(ep["action"])
            state = np.concatenate([ep["ee_pose"], ep["gripper_width"][:, None]], axis=1).astype(np.float32)
            reward = np.zeros(n, np.float32)
            if meta.success:
                reward[-1] = 1.0
            cols["observation.state"].extend(state)
            cols["observation.joint_positions"].extend(ep["joint_positions"].astype(np.float32))
            cols["action"].extend(ep["action"].astype(np.float32))
            cols["complementary_info.is_intervention"].extend(ep["intervention"].astype(np.float32))
            cols["observation.timestamp_s"].extend(ep["timestamp"].astype(np.float64))
            cols["next.reward"].extend(reward)
            cols["next.done"].extend(np.arange(n) == n - 1)
            cols["timestamp"].extend((np.arange(n) / fps_int).astype(np.float32))
            cols["frame_index"].extend(range(n))
            cols["episode_index"].extend([new_idx] * n)
            cols["index"].extend(range(frame_total, frame_total + n))
            cols["task_index"].extend([task_index[meta.instruction]] * n)
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
            }
            for cam in store.cameras:
                container, stream = writers[cam.name]
                frames = ep[f"image_{cam.name}"]
                for img in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                image_samples[cam.name].append(frames[:: max(1, n // 8)])
                key = video_key(cam.name)
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
    for name, (dtype, shape) in _FRAME_COLUMNS.items():
        values = np.asarray(cols[name], dtype=dtype)
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

    features = _features(store, fps_int, codec)
    stats = {name: _stats(np.asarray(cols[name], dtype=dtype)) for name, (dtype, _) in _FRAME_COLUMNS.items()}
    for cam in store.cameras:
        stats[video_key(cam.name)] = _image_stats(np.concatenate(image_samples[cam.name]))
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
    "observation.timestamp_s": ("float64", (1,)),
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
}


def _features(store: EpisodeStore, fps: int, codec: str) -> dict:
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
    for name, (dtype, shape) in _FRAME_COLUMNS.items():
        feats[name] = {"dtype": dtype, "shape": list(shape), "names": _NAMES.get(name)}
    return feats


def _stats(values: np.ndarray) -> dict:
    x = values.reshape(len(values), -1).astype(np.float64)
    out = {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [len(x)],
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0).tolist()
    return out


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel statistics of images scaled to [0, 1], shaped (3, 1, 1) as LeRobot stores them."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    out = {k: [[[v]] for v in vals] for k, vals in _stats(x).items() if k != "count"}
    out["count"] = [len(frames)]
    return out


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
