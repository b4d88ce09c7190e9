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
from simbridge.data.store import EpisodeStore, StoreError

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


# --- LeRobot's editing tools: stats.json rebuilt from the per-episode stats columns -------------

STATS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")


def _array(value) -> np.ndarray:
    """A parquet list cell as pandas returns it (nested lists come back as object arrays)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.stack([_array(v) for v in value])
    return np.asarray(value, dtype=np.float64)


def episode_stats(row: pd.Series) -> dict[str, dict[str, np.ndarray]]:
    """``stats/<feature>/<stat>`` columns of one episode row back into {feature: {stat: array}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in row.items():
        if key.startswith("stats/"):
            feature, stat = key.removeprefix("stats/").split("/")
            out.setdefault(feature, {})[stat] = _array(value)
    return out


def reaggregate(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """What delete_episodes / split_dataset do with the kept episodes: count-weighted mean, the
    parallel-variance std, min of mins, max of maxes, summed counts (quantiles: count-weighted)."""
    out = {}
    for feature in per_episode[0]:
        stats = [s[feature] for s in per_episode]
        counts = np.array([s["count"][0] for s in stats], np.float64)
        weights = (counts / counts.sum()).reshape(-1, *[1] * stats[0]["mean"].ndim)
        means = np.stack([s["mean"] for s in stats])
        mean = (weights * means).sum(0)
        var = (weights * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(0)
        agg = {
            "min": np.min([s["min"] for s in stats], 0),
            "max": np.max([s["max"] for s in stats], 0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([counts.sum()]),
        }
        for q in STATS[5:]:
            agg[q] = (weights * np.stack([s[q] for s in stats])).sum(0)
        out[feature] = agg
    return out


def test_deleting_episodes_rebuilds_correct_stats_from_the_episode_columns(tmp_path):
    store = EpisodeStore(make_store(tmp_path / "a.zarr"))
    out = export_lerobot(store, tmp_path / "lr", codec="h264")
    info = json.loads((out / "meta/info.json").read_text())
    episodes = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    frames = pd.read_parquet(out / "data/chunk-000/file-000.parquet")
    for feature in info["features"]:
        for stat in STATS:
            assert f"stats/{feature}/{stat}" in episodes.columns, (feature, stat)

    # Unedited: stats.json is what the per-episode columns aggregate to.
    written = json.loads((out / "meta/stats.json").read_text())
    whole = reaggregate([episode_stats(r) for _, r in episodes.iterrows()])
    for feature, stats in whole.items():
        for stat in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(stats[stat], written[feature][stat], rtol=1e-9, atol=1e-12)

    # "delete_episodes([1, 3])": rebuild stats.json from the kept rows only, as LeRobot does.
    kept = episodes[~episodes["episode_index"].isin([1, 3])]
    stats = {
        k: v
        for k, v in reaggregate([episode_stats(r) for _, r in kept.iterrows()]).items()
        if k in info["features"]
    }
    assert set(stats) == set(info["features"])  # nothing silently skipped by the normalizer
    rows = frames[frames["episode_index"].isin(kept["episode_index"])]
    assert stats["action"]["count"][0] == len(rows) == 6 + 4
    for feature in (
        "action",
        "observation.state",
        "observation.joint_positions",
        "observation.timestamp_s",
        "next.reward",
        "index",
    ):
        direct = np.stack(rows[feature].to_numpy()).reshape(len(rows), -1).astype(np.float64)
        np.testing.assert_allclose(
            stats[feature]["mean"], direct.mean(0), rtol=1e-6, atol=1e-9, err_msg=feature
        )
        np.testing.assert_allclose(
            stats[feature]["std"], direct.std(0), rtol=1e-6, atol=1e-9, err_msg=feature
        )
        np.testing.assert_array_equal(stats[feature]["min"], direct.min(0))
        np.testing.assert_array_equal(stats[feature]["max"], direct.max(0))
        assert np.all(stats[feature]["q01"] >= direct.min(0)) and np.all(
            stats[feature]["q99"] <= direct.max(0)
        )
    for cam in store.cameras:
        key = f"observation.images.{cam.name}"
        pixels = (
            np.concatenate([store.episode(i)[f"image_{cam.name}"] for i in (0, 2)]).reshape(-1, 3) / 255.0
        )
        assert np.shape(stats[key]["mean"]) == (3, 1, 1) and stats[key]["count"][0] == 10
        np.testing.assert_allclose(stats[key]["mean"].ravel(), pixels.mean(0), rtol=1e-9)
        np.testing.assert_allclose(stats[key]["std"].ravel(), pixels.std(0), rtol=1e-9)
        np.testing.assert_allclose(stats[key]["min"].ravel(), pixels.min(0))
        np.testing.assert_allclose(stats[key]["max"].ravel(), pixels.max(0))
    # Per episode, image quantiles are exact (from per-channel histograms).
    first = episode_stats(episodes.iloc[0])["observation.images.scene"]
    pixels = store.episode(0)["image_scene"].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(first["q10"].ravel(), np.quantile(pixels, 0.10, axis=0), atol=1e-12)
    np.testing.assert_allclose(first["q50"].ravel(), np.quantile(pixels, 0.50, axis=0), atol=1e-12)


def test_timestamps_are_relative_float32_with_the_absolute_start_in_the_episode_row(tmp_path):
    t0 = 1_760_000_000.123  # epoch seconds: float32 would round these to 128 s
    store = EpisodeStore(make_store(tmp_path / "a.zarr", lengths=(5, 300), t0=t0))
    out = export_lerobot(store, tmp_path / "lr", codec="h264")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.timestamp_s"]["dtype"] == "float32"
    frames = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pandas()
    episodes = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    assert frames["observation.timestamp_s"].dtype == np.float32
    for e in range(2):
        ts = store.episode(e)["timestamp"]
        rel = frames[frames["episode_index"] == e]["observation.timestamp_s"].to_numpy()
        np.testing.assert_array_equal(rel, (ts - ts[0]).astype(np.float32))  # exact, to float32
        assert rel[0] == 0.0 and np.abs(rel - 0.1 * np.arange(len(rel))).max() < 1e-5
        assert episodes.iloc[e]["simbridge/start_time_s"] == ts[0] == t0  # float64, to the microsecond


def test_policy_action_label_and_incomplete_episodes(tmp_path, capsys):
    path = make_store(tmp_path / "a.zarr", incomplete=(3,))  # episode 1 has operator steps: no policy action
    store = EpisodeStore(path)
    assert len(store) == 3  # the incomplete episode is left out

    out = export_lerobot(store, tmp_path / "clean", episodes=[0, 2], codec="h264")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["complementary_info.policy_action"]["shape"] == [7]
    assert not any(k.startswith("action.") for k in info["features"])  # LeRobot would take it as an action
    frames = pd.read_parquet(out / "data/chunk-000/file-000.parquet")
    expected = np.concatenate([store.episode(i)["action"] for i in (0, 2)]) * 0.5
    np.testing.assert_array_equal(np.stack(frames["complementary_info.policy_action"]), expected)
    assert "complementary_info.policy_action" in json.loads((out / "meta/stats.json").read_text())

    mixed = export_lerobot(store, tmp_path / "mixed", codec="h264")  # auto: not every step has one
    assert (
        "complementary_info.policy_action"
        not in json.loads((mixed / "meta/info.json").read_text())["features"]
    )
    with pytest.raises(StoreError, match=r"episodes \[1\] have steps without one"):
        export_lerobot(store, tmp_path / "req", policy_action=True, codec="h264")
    never = export_lerobot(store, tmp_path / "never", episodes=[0], policy_action=False, codec="h264")
    assert (
        "complementary_info.policy_action"
        not in json.loads((never / "meta/info.json").read_text())["features"]
    )

    both = tmp_path / "both"
    args = ["data", "to-lerobot", str(path), "-o", str(both), "--codec", "h264", "--include-incomplete"]
    assert main([*args, "--policy-action", "never"]) == 0
    episodes = pd.read_parquet(both / "meta/episodes/chunk-000/file-000.parquet")
    assert list(episodes["simbridge/incomplete"]) == [False, False, False, True]
    assert list(episodes["simbridge/source_episode"]) == [0, 1, 2, 3]
