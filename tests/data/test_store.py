"""Episode store: round trip, commit semantics, crash safety (kill -9), concurrent reads, bad stores."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from simbridge.data.spec import SCHEMA_VERSION, CameraSpec, EpisodeMeta, Observation, ObservationSpec
from simbridge.data.store import EpisodeStore, EpisodeWriter, StoreError, validate_store

sys.path.insert(0, str(Path(__file__).parent))
from store_writer_proc import CAMERAS as PROC_CAMERAS
from store_writer_proc import episode_length, expected_episode, expected_steps, write

WRITER_SCRIPT = Path(__file__).parent / "store_writer_proc.py"
CAMS = (CameraSpec("scene", 32, 40), CameraSpec("wrist", 16, 16))


def make_obs(t: int, rng: np.random.Generator) -> Observation:
    return Observation(
        images={c.name: rng.integers(0, 256, c.shape, dtype=np.uint8) for c in CAMS},
        ee_pose=rng.normal(size=7).astype(np.float32),
        gripper_width=float(rng.uniform(0, 0.08)),
        joint_positions=rng.normal(size=7).astype(np.float32),
        instruction="put the cube on the plate",
        timestamp=t * 0.1,
    )


def write_episodes(path, lengths, seed=0, chunk_steps=8, policy=False):
    """Write episodes; return what was written, per episode, for comparison."""
    rng = np.random.default_rng(seed)
    written = []
    with EpisodeWriter(path, CAMS, chunk_steps=chunk_steps, robot="unit", software_version="test") as w:
        for e, n in enumerate(lengths):
            steps = {
                k: []
                for k in (
                    "ee_pose",
                    "action",
                    "policy_action",
                    "intervention",
                    "timestamp",
                    "image_scene",
                    "image_wrist",
                )
            }
            for t in range(n):
                obs = make_obs(t, rng)
                act = rng.uniform(-0.01, 0.01, 7).astype(np.float32)
                pa = rng.uniform(-0.01, 0.01, 7).astype(np.float32) if policy else None
                flag = bool(policy and 2 <= t < 4)
                w.add_step(obs, act, policy_action=pa, intervention=flag)
                steps["ee_pose"].append(obs.ee_pose)
                steps["action"].append(act)
                steps["policy_action"].append(pa if pa is not None else np.full(7, np.nan, np.float32))
                steps["intervention"].append(flag)
                steps["timestamp"].append(obs.timestamp)
                for c in CAMS:
                    steps[f"image_{c.name}"].append(obs.images[c.name])
            w.end_episode(
                EpisodeMeta(
                    instruction="put the cube on the plate", task="PutOnTarget-v1", seed=e, split="train"
                )
            )
            written.append({k: np.asarray(v) for k, v in steps.items()})
    return written


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


def test_round_trip_returns_exactly_what_was_written(tmp_path):
    path = tmp_path / "ep.zarr"
    written = write_episodes(path, [5, 17, 8], policy=True)  # 17 > chunk: spans several flushes
    store = EpisodeStore(path)
    assert len(store) == 3 and store.num_steps == 30 and store.cameras == CAMS
    assert store.episode_slice(1) == slice(5, 22)
    for i, exp in enumerate(written):
        ep = store.episode(i)
        for key, value in exp.items():
            np.testing.assert_array_equal(ep[key], value, err_msg=key)
        meta = store.meta(i)
        assert meta.seed == i and meta.task == "PutOnTarget-v1" and meta.robot == "unit"
        assert meta.num_interventions == 1 and meta.success is None
    assert set(store.episode(0)) == {
        "ee_pose",
        "gripper_width",
        "joint_positions",
        "action",
        "policy_action",
        "intervention",
        "timestamp",
        "image_scene",
        "image_wrist",
    }


def test_steps_are_invisible_until_the_episode_commits(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [4])
    rng = np.random.default_rng(1)
    with EpisodeWriter(path, ObservationSpec(cameras=CAMS), chunk_steps=4, software_version="t") as w:
        for t in range(10):  # flushes twice to disk, not committed
            w.add_step(make_obs(t, rng), np.zeros(7))
        store = EpisodeStore(path)
        assert len(store) == 1 and store.num_steps == 4
        assert zarr.open_array(str(path / "data/action"), mode="r").shape[0] == 12  # flushed, but uncommitted
        with pytest.raises(IndexError, match="1 committed"):
            store.episode(1)
        w.discard_episode()
        for t in range(3):
            w.add_step(make_obs(t, rng), np.ones(7))
        assert w.end_episode(EpisodeMeta(instruction="x")) == 1
    store.refresh()
    assert len(store) == 2 and store.episode(1)["action"].tolist() == [[1.0] * 7] * 3


def test_reopen_appends_and_rejects_other_cameras_and_second_writer(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [3])
    with EpisodeWriter(path, CAMS, software_version="t") as w:
        with pytest.raises(StoreError, match="another EpisodeWriter"):
            EpisodeWriter(path, CAMS, software_version="t")
        w.add_step(make_obs(0, np.random.default_rng(0)), np.zeros(7))
        assert w.end_episode(EpisodeMeta(instruction="x")) == 1
    with pytest.raises(StoreError, match="cameras"):
        EpisodeWriter(path, (CameraSpec("scene", 32, 40),), software_version="t")
    with pytest.raises(StoreError, match="no steps"), EpisodeWriter(path, CAMS, software_version="t") as w:
        w.end_episode(EpisodeMeta(instruction="x"))
    assert len(EpisodeStore(path)) == 2


def test_bad_steps_are_refused_with_the_field_named(tmp_path):
    with EpisodeWriter(tmp_path / "ep.zarr", CAMS, software_version="t") as w:
        obs = make_obs(0, np.random.default_rng(0))
        with pytest.raises(StoreError, match="action must have 7"):
            w.add_step(obs, np.zeros(6))
        obs.images["wrist"] = np.zeros((16, 16), np.uint8)
        with pytest.raises(StoreError, match="camera 'wrist'"):
            w.add_step(obs, np.zeros(7))
        del obs.images["wrist"]
        with pytest.raises(StoreError, match="lacks camera 'wrist'"):
            w.add_step(obs, np.zeros(7))


def test_label_is_the_only_edit_and_persists(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [3, 3])
    store = EpisodeStore(path)
    store.label(1, success=True, by="operator:ana")
    assert EpisodeStore(path).meta(1).success is True
    assert EpisodeStore(path).meta(1).success_labeled_by == "operator:ana"
    assert EpisodeStore(path).meta(0).success is None
    with pytest.raises(StoreError, match="who labels"):
        store.label(0, success=False, by="")


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [2])
    meta_file = path / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["attributes"]["simbridge"]["schema_version"] = SCHEMA_VERSION + 1
    meta_file.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"newer.*upgrade"):
        EpisodeStore(path)
    with pytest.raises(StoreError, match="newer"):
        EpisodeWriter(path, CAMS, software_version="t")
    report = validate_store(path)
    assert not report.ok and "newer" in report.errors[0]


def test_not_a_store_and_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no episode store"):
        EpisodeStore(tmp_path / "nothing.zarr")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeWriter(tmp_path / "other", CAMS, software_version="t")


def test_missing_key_is_named_and_validate_does_not_modify(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [3, 4])
    for p in sorted((path / "data/joint_positions").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (path / "data/joint_positions").rmdir()
    with pytest.raises(StoreError, match="'data/joint_positions' is missing"):
        EpisodeStore(path)
    before = tree_digest(path)
    report = validate_store(path)
    assert "missing key: data/joint_positions" in report.errors
    assert tree_digest(path) == before


def test_mismatched_lengths_are_named(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [3, 4])
    zarr.open_array(str(path / "data/timestamp"), mode="r+").resize((5,))
    with pytest.raises(StoreError, match="data/timestamp has 5 rows but 7"):
        EpisodeStore(path)
    report = validate_store(path)
    assert any("mismatched lengths: data/timestamp has 5 rows" in e for e in report.errors)


def test_corrupt_chunk_is_named_in_reads_and_validate(tmp_path):
    path = tmp_path / "ep.zarr"
    write_episodes(path, [6, 6], chunk_steps=4)
    chunk = path / "data/image_scene/c/1/0/0/0"  # shard 1: rows 4..7
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store = EpisodeStore(path)
    with pytest.raises(StoreError, match=r"corrupt chunk in data/image_scene \(episode 0\)"):
        store.episode(0)
    assert store.episode(1, keys=["action"])["action"].shape == (6, 7)  # the rest stays readable
    before = tree_digest(path)
    report = validate_store(path)
    assert not report.ok
    assert any(e.startswith("corrupt chunk: data/image_scene/c/1/0/0/0 (rows 4..7)") for e in report.errors)
    assert tree_digest(path) == before
    (path / "data/action/c/0/0").unlink()
    assert any(e.startswith("missing chunk: data/action/c/0/0") for e in validate_store(path).errors)


def _check_committed(path: Path) -> int:
    """Complete episodes are exactly as written; incomplete ones (killed mid-episode) are exact prefixes."""
    store = EpisodeStore(path)
    for e in range(len(store)):
        ep = store.episode(e)
        for key, value in expected_episode(e).items():
            np.testing.assert_array_equal(ep[key], value, err_msg=f"episode {e} {key}")
        assert store.meta(e).seed == e and not store.meta(e).incomplete
    full = EpisodeStore(path, include_incomplete=True)
    complete_at = [full.storage_index(i) for i in range(len(store))]
    for i in range(len(store), len(full)):
        e = sum(s < full.storage_index(i) for s in complete_at)  # the episode its writer was writing
        ep = full.episode(i)
        n = len(ep["action"])
        assert 0 < n <= episode_length(e) and full.meta(i).incomplete
        for key, value in expected_steps(e, 0, n).items():
            np.testing.assert_array_equal(ep[key], value, err_msg=f"incomplete episode {i} {key}")
    return len(store)


def test_kill_minus_9_at_random_moments_loses_only_uncommitted_steps(tmp_path):
    """Each round a fresh writer recovers the store, appends, and is SIGKILLed at a random moment."""
    path = tmp_path / "crash.zarr"
    rng = random.Random(1234)
    reported = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER_SCRIPT), str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().startswith("ready")
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
        reported += sum(1 for line in out.splitlines() if line.startswith("committed"))
        committed = _check_committed(path)
        assert committed >= reported  # every reported commit survived (one more may have landed)
        reported = committed
    assert reported > 0
    assert validate_store(path).ok
    # A writer after the crashes truncates the torn tail and appends cleanly.
    assert write(str(path), episodes=2) == reported + 2
    assert _check_committed(path) == reported + 2
    report = validate_store(path)
    assert report.ok and report.uncommitted_steps == 0 and report.open_steps == 0
    assert all("incomplete episode" in w for w in report.warnings)  # killed mid-episode: kept prefixes


def test_reader_reads_consistent_episodes_while_a_writer_writes(tmp_path):
    path = tmp_path / "live.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), str(path), "--episodes", "10"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().startswith("ready")
        seen, reads, deadline = [], 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            store = EpisodeStore(path)
            seen.append(len(store))
            if len(store):  # read the newest committed episode while the next one is being appended
                e = len(store) - 1
                ep = store.episode(e)
                np.testing.assert_array_equal(ep["image_scene"], expected_episode(e)["image_scene"])
                np.testing.assert_array_equal(ep["action"], expected_episode(e)["action"])
                reads += 1
            if proc.poll() is not None:
                break
            time.sleep(0.02)  # leave the (2-core) machine to the writer
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert seen == sorted(seen) and reads >= 3 and len(set(seen)) >= 3
    assert _check_committed(path) == 10
    assert EpisodeStore(path).cameras == PROC_CAMERAS


def _drop_commit(path: Path) -> None:
    doc = json.loads((path / "zarr.json").read_text())
    del doc["attributes"]["commit"]
    (path / "zarr.json").write_text(json.dumps(doc))


def test_interrupted_creation_is_redone_but_a_lost_commit_with_data_is_refused(tmp_path):
    fresh = tmp_path / "fresh.zarr"
    EpisodeWriter(fresh, CAMS, software_version="t").close()
    assert (fresh / ".writer.lock").exists()  # creating the group kept the lock file
    _drop_commit(fresh)  # as if the writer died before its first commit
    with pytest.raises(StoreError, match=r"half-created episode store.*--repair --yes"):
        EpisodeStore(fresh)
    write_episodes(fresh, [3])  # a new writer recreates the empty store
    assert len(EpisodeStore(fresh)) == 1

    _drop_commit(fresh)  # now rows exist: never wipe them
    with pytest.raises(StoreError, match=r"commit record is missing.*restore"):
        EpisodeWriter(fresh, CAMS, software_version="t")
    assert zarr.open_array(str(fresh / "data/action"), mode="r").shape[0] == 3


def test_split_store_writes_the_partition_and_keeps_the_task_split(tmp_path):
    from simbridge.data.store import meta_from_json, split_store

    write_episodes(tmp_path / "all.zarr", [3, 4, 5, 6])  # recorded in the task split "train"
    parts = split_store(tmp_path / "all.zarr", tmp_path / "parts", {"fit": 0.5, "val": 0.5}, seed=0)
    for name, path in parts.items():
        metas = EpisodeStore(path).metas()
        assert len(metas) == 2 and {(m.split, m.partition) for m in metas} == {("train", name)}
    # A store written before ``partition`` existed has only ``split``: it reads as not partitioned.
    old = meta_from_json(json.dumps({"instruction": "put the cube on the plate", "split": "val"}))
    assert (old.split, old.partition) == ("val", "")
