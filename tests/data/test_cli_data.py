"""`simbridge data ...` on real stores: info, validate (read-only), replay --steps, to-video, merge, split, label."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

from simbridge.data.cli import main
from simbridge.data.store import EpisodeStore

sys.path.insert(0, str(Path(__file__).parent))
from episode_factory import CAMS, make_store


def test_info_summarises_and_lists_episodes(tmp_path, capsys):
    store = make_store(tmp_path / "a.zarr")
    png = tmp_path / "summary.png"
    assert main(["data", "info", str(store), "--episodes", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "4 / 26" in out and "2/3 = 67%" in out and "scene 64x64" in out and "task 1" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_validate_ok_and_failing_store_untouched(tmp_path, capsys):
    store = make_store(tmp_path / "a.zarr")
    assert main(["data", "validate", str(store)]) == 0
    assert "valid" in capsys.readouterr().out
    (store / "data/gripper_width/c/0").unlink()
    before = sorted(p.name for p in store.rglob("*"))
    assert main(["data", "validate", str(store)]) == 1
    out = capsys.readouterr().out
    assert "missing chunk: data/gripper_width/c/0" in out and "not modified" in out
    assert sorted(p.name for p in store.rglob("*")) == before
    assert main(["data", "info", str(tmp_path / "nope.zarr")]) == 1
    assert "no episode store" in capsys.readouterr().err


def test_replay_steps_prints_who_acted(tmp_path, capsys):
    store = make_store(tmp_path / "a.zarr")
    assert main(["data", "replay", str(store), "--episode", "1", "--steps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].endswith("| operator") and lines[2].endswith("| policy") and len(lines) == 2 + 9
    assert main(["data", "replay", str(store), "--episode", "9", "--steps"]) == 1


def test_to_video_marks_operator_steps(tmp_path):
    store = make_store(tmp_path / "a.zarr")
    out = tmp_path / "ep1.mp4"
    assert main(["data", "to-video", str(store), "--episode", "1", "-o", str(out)]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (64, 64 + 48, 3)
    red = np.array([255, 0, 0])
    assert np.abs(frames[1][1, 30].astype(int) - red).max() < 60  # operator step: red border
    assert np.abs(frames[5][1, 30].astype(int) - red).max() > 60


def test_merge_split_and_label(tmp_path, capsys):
    a = make_store(tmp_path / "a.zarr")
    b = make_store(
        tmp_path / "b.zarr",
        lengths=(3, 5),
        success=(False, True),
        interventions=(True, False),
        splits=("train", "train"),
        seed=1,
    )
    merged = tmp_path / "m.zarr"
    assert main(["data", "merge", str(merged), str(a), str(b)]) == 0
    m = EpisodeStore(merged)
    assert len(m) == 6 and m.num_steps == 26 + 8
    np.testing.assert_array_equal(m.episode(5)["image_wrist"], EpisodeStore(b).episode(1)["image_wrist"])
    assert m.meta(4).extra["merged_from"].endswith("b.zarr#0")

    assert (
        main(
            ["data", "split", str(merged), "-o", str(tmp_path / "parts"), "--fractions", "train=0.5,val=0.5"]
        )
        == 0
    )
    train, val = EpisodeStore(tmp_path / "parts/train.zarr"), EpisodeStore(tmp_path / "parts/val.zarr")
    assert len(train) + len(val) == 6 and len(val) == 3
    assert {train.meta(i).partition for i in range(len(train))} == {"train"}  # the task split stays in .split
    originals = {tuple(m.episode(i)["action"][:, :2].ravel()) for i in range(6)}
    parts = {tuple(s.episode(i)["action"][:, :2].ravel()) for s in (train, val) for i in range(len(s))}
    assert parts == originals  # every episode lands in exactly one part, unchanged
    assert main(["data", "split", str(merged), "-o", str(tmp_path / "x"), "--fractions", "train"]) == 2

    assert main(["data", "label", str(a), "--episode", "3", "--failure", "--by", "operator:kim"]) == 0
    meta = EpisodeStore(a).meta(3)
    assert meta.success is False and meta.success_labeled_by == "operator:kim"
    assert EpisodeStore(a).cameras == CAMS
