"""LeRobot v3.0 export, read back the way LeRobot reads it (pyarrow / pandas / PyAV)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from simbridge.data.cli import main
from simbridge.data.lerobot import export_lerobot
from simbridge.data.store import EpisodeStore

sys.path.insert(0, str(Path(__file__).parent))
from episode_factory import make_store


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_export_reads_back_with_the_v3_layout(tmp_path):
    store = EpisodeStore(make_store(tmp_path / "a.zarr"))
    out = export_lerobot(store, tmp_path / "lr", episodes=[0, 1, 3])
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == 3 and info["total_frames"] == 6 + 9 + 7 and info["total_tasks"] == 2
    feats = info["features"]
    assert feats["observation.images.scene"]["dtype"] == "video"
    assert feats["observation.images.wrist"]["shape"] == [32, 48, 3]
    assert feats["action"]["shape"] == [7] and feats["action"]["names"][-1] == "gripper"
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in feats

    table = pq.read_table(out / info["data_path"].format(chunk_index=0, file_index=0))
    df = table.to_pandas()
    assert len(df) == 22 and list(df["index"]) == list(range(22))
    episodes = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert list(tasks.index) == ["task 0", "task 1"] and list(tasks["task_index"]) == [0, 1]
    for new, src in enumerate([0, 1, 3]):
        row = episodes.iloc[new]
        rows = df.iloc[row["dataset_from_index"] : row["dataset_to_index"]]
        ep = store.episode(src)
        assert row["length"] == len(ep["action"]) == len(rows)
        assert (rows["episode_index"] == new).all() and list(rows["frame_index"]) == list(range(len(rows)))
        np.testing.assert_allclose(np.stack(rows["timestamp"]), np.arange(len(rows)) / 10, atol=1e-6)
        np.testing.assert_array_equal(np.stack(rows["action"]), ep["action"])
        np.testing.assert_array_equal(np.stack(rows["observation.state"])[:, 7], ep["gripper_width"])
        np.testing.assert_array_equal(
            rows["complementary_info.is_intervention"].to_numpy(), ep["intervention"]
        )
        assert list(row["tasks"]) == [store.meta(src).instruction]
        assert tasks.loc[store.meta(src).instruction, "task_index"] == rows["task_index"].iloc[0]
        assert rows["next.reward"].iloc[-1] == (1.0 if store.meta(src).success else 0.0)
    assert df["next.done"].sum() == 3

    for cam in store.cameras:
        key = f"observation.images.{cam.name}"
        frames = decode(out / info["video_path"].format(video_key=key, chunk_index=0, file_index=0))
        assert len(frames) == 22 and frames[0].shape == cam.shape
        for new, src in enumerate([0, 1, 3]):
            row = episodes.iloc[new]
            first = round(row[f"videos/{key}/from_timestamp"] * 10)
            assert round(row[f"videos/{key}/to_timestamp"] * 10) - first == row["length"]
            original = store.episode(src)[f"image_{cam.name}"]
            decoded = np.stack(frames[first : first + len(original)])
            assert np.abs(decoded.astype(int) - original).mean() < 6  # lossy AV1, but the same frames

    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["action"]["max"][1] == 8.0 and stats["action"]["count"] == [22]
    assert np.array(stats["observation.images.scene"]["mean"]).shape == (3, 1, 1)
    for q in ("q01", "q10", "q50", "q90", "q99"):
        assert q in stats["observation.state"]


def test_cli_export_h264_and_refuses_to_overwrite(tmp_path, capsys):
    store = make_store(
        tmp_path / "a.zarr",
        lengths=(3, 4),
        success=(True, False),
        interventions=(False, False),
        splits=("train", "val"),
    )
    out = tmp_path / "lr"
    assert main(["data", "to-lerobot", str(store), "-o", str(out), "--codec", "h264"]) == 0
    assert len(decode(out / "videos/observation.images.wrist/chunk-000/file-000.mp4")) == 7
    assert main(["data", "to-lerobot", str(store), "-o", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    ok = tmp_path / "ok"
    assert (
        main(["data", "to-lerobot", str(store), "-o", str(ok), "--successful-only", "--codec", "h264"]) == 0
    )
    assert json.loads((ok / "meta/info.json").read_text())["total_frames"] == 3  # episode 0 only
    assert main(["data", "to-lerobot", str(store), "-o", str(tmp_path / "none"), "--split", "test"]) == 1
    assert "nothing to export" in capsys.readouterr().err
    with pytest.raises(ValueError, match="codec"):
        export_lerobot(store, tmp_path / "x", codec="mjpeg")
