"""Episode store recovery: kill -9 in a long episode keeps its committed part as an incomplete episode
(left out of training unless asked), fsync before the commit record, and half-created stores
detected and removed by ``simbridge data validate --repair``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from simbridge.data.cli import main
from simbridge.data.dataset import EpisodeDataset
from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import (
    LOCK_FILE,
    EpisodeStore,
    EpisodeWriter,
    StoreError,
    store_state,
    validate_store,
)
from simbridge.data.store.layout import lock_store, unlock_store

sys.path.insert(0, str(Path(__file__).parent))
from store_writer_proc import CHUNK_STEPS, LONG_META, episode_length, expected_steps, write

WRITER_SCRIPT = Path(__file__).parent / "store_writer_proc.py"
CAMS = (CameraSpec("c", 8, 8),)


def obs(t: int) -> Observation:
    img = np.full((8, 8, 3), t % 256, np.uint8)
    return Observation({"c": img}, np.full(7, t, np.float32), 0.04, np.zeros(7), "pick", 100.0 + t)


def crash(w: EpisodeWriter) -> None:
    """What kill -9 leaves: no close(), the kernel drops the lock."""
    os.close(w._lock_fd)
    w._closed = True


def kill_long_writer(path: Path, commit_every: int, commits: int) -> int:
    """Run the long-episode writer until it reported ``commits`` in-episode commits, SIGKILL it;
    returns the last committed step count it reported."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), str(path), "--long", "--commit-every", str(commit_every)],
        stdout=subprocess.PIPE,
        text=True,
    )
    reported = 0
    try:
        assert proc.stdout.readline().startswith("ready")
        deadline = time.monotonic() + 120
        while reported < commits * CHUNK_STEPS * commit_every and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("open-committed"):
                reported = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return reported


def test_kill_minus_9_in_a_long_episode_keeps_its_committed_steps(tmp_path, capsys):
    path = tmp_path / "long.zarr"
    assert write(str(path), episodes=2) == 2
    reported = kill_long_writer(path, commit_every=2, commits=5)
    assert reported >= 5 * 2 * CHUNK_STEPS

    # Training sees the two complete episodes only; the open episode is there on request.
    store = EpisodeStore(path)
    assert len(store) == 2 and store.num_incomplete == 1 and store.open_episode_steps >= reported
    complete_windows = sum(episode_length(e) for e in range(2))
    assert len(EpisodeDataset(path)) == complete_windows
    full = EpisodeStore(path, include_incomplete=True)
    assert len(full) == 3
    n = full.episode_length(2)
    assert n >= reported and n % (2 * CHUNK_STEPS) == 0  # whole commits only, nothing torn
    ep = full.episode(2)
    for key, value in expected_steps(2, 0, n).items():
        np.testing.assert_array_equal(ep[key], value, err_msg=key)
    meta = full.meta(2)
    assert meta.incomplete and meta.extra["open"] and meta.seed == 2  # begin_episode's metadata
    assert (meta.instruction, meta.policy_id) == (LONG_META["instruction"], LONG_META["policy_id"])
    with pytest.raises(StoreError, match="still open"):
        full.label(2, success=False, by="operator:x")

    ds = EpisodeDataset(full)
    assert len(ds) == complete_windows + n and ds.episodes[2].meta.incomplete
    ds._stores = None  # as in a DataLoader worker: reopened by path, rows still readable
    item = ds[complete_windows + n - 1]
    assert item["episode"] == 2 and item["step"] == n - 1
    np.testing.assert_array_equal(
        item["images"]["scene"].numpy(), expected_steps(2, n - 1, n)["image_scene"][0]
    )

    report = validate_store(path)
    assert report.ok and report.open_steps == n
    assert any("open episode has" in w for w in report.warnings)
    assert main(["data", "info", str(path), "--episodes"]) == 0
    out = capsys.readouterr().out
    assert "incomplete episodes" in out and f"1 still open ({n} committed)" in out and "│ 2**" in out

    # The next writer seals it as an incomplete episode and goes on; complete indices do not move.
    assert write(str(path), episodes=1) == 3
    store, full = EpisodeStore(path), EpisodeStore(path, include_incomplete=True)
    assert len(store) == 3 and len(full) == 4 and store.open_episode_steps == 0
    np.testing.assert_array_equal(
        store.episode(2)["action"], expected_steps(2, 0, episode_length(2))["action"]
    )
    sealed = full.meta(3)
    assert sealed.incomplete and sealed.extra["recovered_steps"] == n and sealed.seed == 2
    assert full.episode_length(3) == n and full.storage_index(3) == 2  # on disk before the new episode
    full.label(3, success=False, by="operator:kim")  # sealed: labels like any episode
    assert EpisodeStore(path, include_incomplete=True).meta(3).success is False
    assert len(EpisodeDataset(path)) == complete_windows + episode_length(2)
    assert main(["data", "info", str(path), "--episodes"]) == 0
    out = capsys.readouterr().out
    assert "│ 3* │" in out and "│ 2  │" in out and f"1 / {n} steps; not for training" in out
    report = validate_store(path)
    assert report.ok and report.incomplete_episodes == 1 and report.uncommitted_steps == 0


def test_close_mid_episode_keeps_it_and_commit_every_zero_is_all_or_nothing(tmp_path):
    path = tmp_path / "c.zarr"
    with EpisodeWriter(path, CAMS, chunk_steps=4, software_version="t", fsync=False) as w:
        for t in range(10):
            w.add_step(obs(t), np.zeros(7))
        assert w.committed_open_steps == 8
    full = EpisodeStore(path, include_incomplete=True)
    assert len(EpisodeStore(path)) == 0 and len(full) == 1
    assert full.episode_length(0) == 10 and full.meta(0).instruction == "pick"  # from the observation
    assert full.meta(0).extra["closed_mid_episode"]

    path0 = tmp_path / "zero.zarr"
    w = EpisodeWriter(path0, CAMS, chunk_steps=4, software_version="t", commit_every_chunks=0, fsync=False)
    for t in range(10):
        w.add_step(obs(t), np.zeros(7))
    assert w.committed_open_steps == 0
    crash(w)
    with EpisodeWriter(path0, CAMS, chunk_steps=4, software_version="t", commit_every_chunks=0) as w:
        assert w.recovered_steps == 0 and w.num_incomplete == 0
        w.add_step(obs(0), np.zeros(7))
    assert len(EpisodeStore(path0, include_incomplete=True)) == 0


def test_discard_uncommits_first(tmp_path):
    path = tmp_path / "d.zarr"
    with EpisodeWriter(path, CAMS, chunk_steps=2, software_version="t", fsync=False) as w:
        for t in range(5):
            w.add_step(obs(t), np.zeros(7))
        assert EpisodeStore(path).open_episode_steps == 4
        w.discard_episode()
        assert EpisodeStore(path, include_incomplete=True).num_incomplete == 0
        w.add_step(obs(0), np.ones(7))
        assert w.end_episode(EpisodeMeta(instruction="x")) == 0
    assert EpisodeStore(path).episode(0)["action"].tolist() == [[1.0] * 7]


def test_fsync_covers_the_rows_before_the_commit_record(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the fsynced files")
    path = tmp_path / "f.zarr"
    with EpisodeWriter(path, CAMS, chunk_steps=4, software_version="t") as w:
        monkeypatch.setattr(os, "fsync", spy)
        for t in range(4):  # one chunk: an in-episode commit
            w.add_step(obs(t), np.zeros(7))
        root = synced.index(str(path / "zarr.json"))
        before = synced[:root]
        for key in ("action", "timestamp", "image_c"):
            assert any(f.startswith(str(path / "data" / key / "c")) for f in before), key
            assert str(path / "data" / key / "zarr.json") in before
        assert str(path) in synced[root:]  # the directory entry of the renamed commit record
        synced.clear()
        w.add_step(obs(4), np.zeros(7))
        w.end_episode(EpisodeMeta(instruction="pick"))
        assert any(f.startswith(str(path / "meta/episodes/c")) for f in synced)
    monkeypatch.setattr(os, "fsync", real_fsync)
    synced.clear()
    monkeypatch.setattr(os, "fsync", spy)
    with EpisodeWriter(tmp_path / "nf.zarr", CAMS, chunk_steps=4, software_version="t", fsync=False) as w:
        for t in range(8):
            w.add_step(obs(t), np.zeros(7))
        w.end_episode(EpisodeMeta(instruction="pick"))
    assert synced == []


KILL_AT_CREATION = textwrap.dedent(
    """
    import os, signal, sys
    from simbridge.data.spec import CameraSpec
    from simbridge.data.store import writer

    def die(self, bump=True):  # the first commit is the last step of creating a store
        os.kill(os.getpid(), signal.SIGKILL)

    writer.EpisodeWriter._write_commit = die
    writer.EpisodeWriter(sys.argv[1], (CameraSpec("c", 8, 8),), software_version="t")
    """
)


def test_store_killed_during_creation_is_named_and_removed_by_validate_repair(tmp_path, capsys):
    path = tmp_path / "new.zarr"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_CREATION, str(path)], capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL
    assert store_state(path) == "half-created" and (path / "data/action/zarr.json").exists()
    fix = f"simbridge data validate {path} --repair --yes"

    assert main(["data", "info", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} is a half-created episode store" in err and fix in err
    assert main(["data", "validate", str(path)]) == 1
    assert fix in capsys.readouterr().out

    assert (
        main(["data", "validate", str(path), "--repair"]) == 1
    )  # says what it would remove, changes nothing
    out = capsys.readouterr().out
    assert f"remove {path} and its" in out and "zarr.json" in out and f"run: {fix}" in out
    assert store_state(path) == "half-created"

    fd = lock_store(path)  # a writer still creating it holds the lock: refuse
    try:
        assert main(["data", "validate", str(path), "--repair", "--yes"]) == 1
        assert "another EpisodeWriter" in capsys.readouterr().err
    finally:
        unlock_store(fd)
    assert main(["data", "validate", str(path), "--repair", "--yes"]) == 0
    assert f"removed {path}" in capsys.readouterr().out and not path.exists()

    # Killed even earlier (only the lock file): the same diagnosis; a new writer just creates the store.
    path.mkdir()
    (path / LOCK_FILE).touch()
    with pytest.raises(StoreError, match="half-created"):
        EpisodeStore(path)
    with EpisodeWriter(path, CAMS, software_version="t") as w:
        w.add_step(obs(0), np.zeros(7))
        w.end_episode(EpisodeMeta(instruction="pick"))
    assert len(EpisodeStore(path)) == 1


def test_validate_repair_keeps_an_open_episode_and_drops_the_torn_tail(tmp_path, capsys):
    path = tmp_path / "r.zarr"
    w = EpisodeWriter(path, CAMS, chunk_steps=4, software_version="t", commit_every_chunks=2, fsync=False)
    for t in range(13):  # chunks flushed at 4, 8 (committed), 12 (not committed); 1 step buffered
        w.add_step(obs(t), np.full(7, t, np.float32))
    crash(w)
    assert main(["data", "validate", str(path)]) == 0  # valid, with warnings
    out = capsys.readouterr().out
    assert "open episode has 8 committed step(s)" in out and "4 step(s) after the last commit" in out

    assert main(["data", "validate", str(path), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "keep the 8 committed step(s) of the open episode as an incomplete episode" in out
    assert "drop 4 uncommitted step(s)" in out and "nothing was changed" in out
    assert EpisodeStore(path).open_episode_steps == 8

    assert main(["data", "validate", str(path), "--repair", "--yes"]) == 0
    assert "repaired: 1 committed episodes (1 incomplete), 8 steps" in capsys.readouterr().out
    full = EpisodeStore(path, include_incomplete=True)
    assert full.episode(0)["action"][:, 0].tolist() == list(range(8)) and full.meta(0).incomplete
    assert validate_store(path).uncommitted_steps == 0
    assert main(["data", "validate", str(path), "--repair"]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(["data", "validate", str(path), "--yes"]) == 1
    assert "--yes only confirms --repair" in capsys.readouterr().err
