"""EpisodeWriter: append episodes to an episode store, committing as it goes, and recover after a crash.

The one process that writes a store (an advisory lock enforces it). It buffers ``chunk_steps``
steps, appends them to every ``data/`` array at once, and every ``commit_every_chunks``
chunks commits the open episode's rows so far, so ``kill -9`` in a long teleop demonstration
loses at most the steps since that commit. The next writer (or ``simbridge data validate
--repair``) keeps such a committed prefix as an *incomplete* episode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation, ObservationSpec
from simbridge.data.store.layout import (
    WRITE_CFG,
    Commit,
    StoreError,
    as_cameras,
    chunk_files,
    fsync_files,
    lock_store,
    meta_from_dict,
    meta_to_dict,
    meta_to_json,
    open_array,
    step_array_specs,
    store_state,
    unlock_store,
)
from simbridge.data.store.opening import clear_except_lock, create_group, open_group, truncate_to_commit
from simbridge.data.store.rows import check_episode_arrays, fill_step_row

log = logging.getLogger(__name__)


class EpisodeWriter:
    """Append episodes to a store (created if missing). Use as a context manager.

    ``commit_every_chunks``: commit the open episode every this many flushed chunks
    (``chunk_steps`` steps each); a crash then keeps its committed prefix as an incomplete
    episode, and :meth:`close` keeps all of its steps so. 0: episodes are all-or-nothing (a
    crash or ``close()`` mid-episode drops the open episode, as before in-episode commits).

    ``fsync``: make every commit durable against power loss, not only against a killed
    process: the files written since the previous commit, then the commit record, are fsynced.
    On by default (robot logging); simulators and conversions may turn it off for speed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cameras: Sequence[CameraSpec] | ObservationSpec,
        chunk_steps: int = 64,
        robot: str = "",
        software_version: str | None = None,
        compression_level: int = 1,
        *,
        commit_every_chunks: int = 1,
        fsync: bool = True,
    ) -> None:
        if chunk_steps < 1:
            raise StoreError(f"chunk_steps must be >= 1, got {chunk_steps}")
        if commit_every_chunks < 0:
            raise StoreError(
                f"commit_every_chunks must be >= 0 (0: only at end_episode), got {commit_every_chunks}"
            )
        self.path = Path(path)
        self.cameras = as_cameras(cameras)
        self.chunk_steps = int(chunk_steps)
        self.commit_every_chunks = int(commit_every_chunks)
        self.fsync = bool(fsync)
        self.robot = robot
        if software_version is None:
            from simbridge.data.runs import software_version as _sv

            software_version = _sv()
        self.software_version = software_version
        #: Steps of an open episode a killed writer had committed, kept here as an incomplete episode.
        self.recovered_steps = 0
        self._specs = step_array_specs(self.cameras)
        self._lock_fd: int | None = None
        self._closed = False
        self._dirty: set[Path] = set()  # files written since the last commit (fsynced before it)
        self._commit = Commit()
        self._open_meta: EpisodeMeta | None = None
        self._chunks_since_commit = 0
        state = store_state(self.path)
        if state == "foreign":
            raise StoreError(f"{self.path} exists and is not an episode store; choose an empty or new path")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_fd = lock_store(self.path)
            state = store_state(self.path)  # again, under the lock
            if state in ("missing", "empty", "half-created"):
                clear_except_lock(self.path)  # a writer died while creating it: nothing was recorded
                self._create(compression_level)
            else:
                self._open_existing()
        except BaseException:
            self._unlock()
            raise
        self._buffer: dict[str, np.ndarray] = {
            k: np.empty((self.chunk_steps, *shape), dtype=dtype) for k, (shape, dtype) in self._specs.items()
        }
        self._buffered = 0  # rows in self._buffer
        if self._commit.open_steps:
            self._recover_open_episode()

    # --- lifecycle ---------------------------------------------------------------------------------
    def _create(self, level: int) -> None:
        self.group = create_group(
            self.path, self.cameras, self._specs, self.chunk_steps, level, self.robot, self.software_version
        )
        self._bind_arrays()
        self._dirty.update(self.path / name / "zarr.json" for name in self._array_names())
        self._write_commit(bump=False)  # last: the store exists once this is on disk (counter 0)

    def _array_names(self) -> list[str]:
        return [f"data/{k}" for k in self._specs] + ["meta/episode_ends", "meta/episodes"]

    def _bind_arrays(self) -> None:
        # write_empty_chunks is a runtime setting, not stored: set it on every handle we write with.
        self._arrays = {
            k: open_array(self.group, f"data/{k}", self.path).with_config(WRITE_CFG) for k in self._specs
        }
        self._ends = open_array(self.group, "meta/episode_ends", self.path).with_config(WRITE_CFG)
        self._metas = open_array(self.group, "meta/episodes", self.path).with_config(WRITE_CFG)
        self._flushed = self._commit.rows  # rows in data/ that belong to us (sealed + open episode)

    def _open_existing(self) -> None:
        self.group, self._commit = open_group(self.path, self.cameras)
        self._bind_arrays()
        # Crash recovery: drop everything after the last commit (and leftover temp files).
        self._dirty |= truncate_to_commit(self.path, self._arrays, self._ends, self._metas, self._commit)

    def _recover_open_episode(self) -> None:
        """A writer died mid-episode after committing part of it: keep that part as an incomplete episode."""
        c = self._commit
        try:
            meta = meta_from_dict(c.open_meta or {"instruction": ""})
        except (ValueError, TypeError):
            meta = EpisodeMeta(instruction="")
        self.recovered_steps = c.open_steps
        meta.extra = {**meta.extra, "recovered_at": time.time(), "recovered_steps": self.recovered_steps}
        index = self._seal(meta, incomplete=True)
        log.warning(
            "%s: kept the %d committed step(s) of an episode whose writer stopped before end_episode "
            "as incomplete episode %d (excluded from training by default)", self.path, self.recovered_steps, index,
        )  # fmt: skip

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the store. An open episode is kept as an incomplete episode (all its steps)
        when in-episode commits are on, and dropped when ``commit_every_chunks`` is 0."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            if self.open_episode_steps and self.commit_every_chunks:
                self._flush()
                meta = self._open_meta or EpisodeMeta(instruction="")
                self._seal(dataclasses.replace(meta, extra={**meta.extra, "closed_mid_episode": True}), True)
            elif self.open_episode_steps:
                self.discard_episode()
        self._unlock()
        self._closed = True

    def _unlock(self) -> None:
        unlock_store(self._lock_fd)
        self._lock_fd = None

    # --- state ---------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """Complete episodes (the indices :meth:`end_episode` returns count from 0)."""
        return self._commit.episodes - len(self._commit.incomplete)

    @property
    def num_incomplete(self) -> int:
        """Sealed episodes that never reached ``end_episode`` (a crash, ``close()`` mid-episode)."""
        return len(self._commit.incomplete)

    @property
    def num_steps(self) -> int:
        """Rows of the sealed (complete and incomplete) episodes."""
        return self._commit.steps

    @property
    def open_episode_steps(self) -> int:
        return self._flushed - self._commit.steps + self._buffered

    @property
    def committed_open_steps(self) -> int:
        """Steps of the open episode a crash now would keep."""
        return self._commit.open_steps

    # --- writing ---------------------------------------------------------------------------------------
    def begin_episode(self, meta: EpisodeMeta) -> None:
        """Give the next episode's metadata up front (optional): an episode recovered after a crash
        keeps it. Without it, a recovered episode only knows the first observation's instruction."""
        self._check_open()
        if not isinstance(meta, EpisodeMeta):
            raise StoreError(f"begin_episode needs an EpisodeMeta, got {type(meta).__name__}")
        if self.open_episode_steps:
            raise StoreError(
                f"begin_episode: an episode is open ({self.open_episode_steps} steps); end_episode() or discard_episode() first"
            )
        self._open_meta = meta

    def add_step(
        self,
        obs: Observation,
        action: np.ndarray,
        *,
        policy_action: np.ndarray | None = None,
        intervention: bool = False,
    ) -> None:
        """Buffer one step: the observation and the action executed from it."""
        self._check_open()
        fill_step_row(self._buffer, self._buffered, self.cameras, obs, action, policy_action, intervention)
        if self.open_episode_steps == 0 and self._open_meta is None:
            self._open_meta = EpisodeMeta(instruction=str(obs.instruction or ""))
        self._buffered += 1
        if self._buffered == self.chunk_steps:
            self._flush()
            self._chunks_since_commit += 1
            if self.commit_every_chunks and self._chunks_since_commit >= self.commit_every_chunks:
                self._commit_open_episode()

    def add_episode(self, steps: Mapping[str, np.ndarray], meta: EpisodeMeta) -> int:
        """Append and commit a whole episode given as ``data/`` arrays (merge, split, converters)."""
        self._check_open()
        if self.open_episode_steps:
            raise StoreError("add_episode: an episode is open; end_episode() or discard_episode() first")
        n = check_episode_arrays(steps, self._specs)
        for start in range(0, n, self.chunk_steps):  # one commit at the end: the source still has it all
            stop = min(start + self.chunk_steps, n)
            for k in self._specs:
                self._buffer[k][: stop - start] = steps[k][start:stop]
            self._buffered = stop - start
            self._flush()
        return self.end_episode(meta)

    def _flush(self) -> None:
        n = self._buffered
        if n == 0:
            return
        start, new_len = self._flushed, self._flushed + n
        for key, arr in self._arrays.items():
            if arr.shape[0] != start:
                arr.resize((start, *arr.shape[1:]))
            arr.append(self._buffer[key][:n], axis=0)
            assert arr.shape[0] == new_len
            if self.fsync:
                array_dir = self.path / "data" / key
                self._dirty.update(chunk_files(array_dir, arr, start, new_len))
                self._dirty.add(array_dir / "zarr.json")
        self._flushed = new_len
        self._buffered = 0

    def _commit_open_episode(self) -> None:
        """Commit the open episode's flushed rows: readers still skip them, a crash keeps them."""
        self._commit.open_steps = self._flushed - self._commit.steps
        self._commit.open_meta = meta_to_dict(self._open_meta or EpisodeMeta(instruction=""))
        self._chunks_since_commit = 0
        self._write_commit()

    def end_episode(self, meta: EpisodeMeta) -> int:
        """Commit the open episode with its metadata; returns its index.

        ``meta.incomplete`` marks it incomplete (kept, but left out of training by default); its
        index then counts after every complete episode (see :class:`EpisodeStore`).
        """
        self._check_open()
        if not isinstance(meta, EpisodeMeta):
            raise StoreError(f"end_episode needs an EpisodeMeta, got {type(meta).__name__}")
        if self.open_episode_steps == 0:
            raise StoreError("end_episode: the episode has no steps; add_step() first or discard it")
        self._flush()
        return self._seal(meta, incomplete=bool(meta.incomplete))

    def _seal(self, meta: EpisodeMeta, incomplete: bool) -> int:
        """Append the open episode's end and metadata, then commit it as a sealed episode."""
        c = self._commit
        start, end = c.steps, self._flushed
        meta = dataclasses.replace(meta, extra=dict(meta.extra), incomplete=incomplete)
        if not meta.robot:
            meta.robot = self.robot
        if not meta.software_version:
            meta.software_version = self.software_version
        if meta.num_interventions == 0:
            flags = self._arrays["intervention"][start:end]
            meta.num_interventions = int(
                np.count_nonzero(np.diff(np.concatenate([[False], flags]).astype(np.int8)) == 1)
            )
        text = meta_to_json(meta)
        self._ends.append(np.array([end], dtype=np.int64))
        self._metas.append(np.array([text], dtype=object))
        if self.fsync:
            for name, arr in (("meta/episode_ends", self._ends), ("meta/episodes", self._metas)):
                self._dirty.update(chunk_files(self.path / name, arr, c.episodes, c.episodes + 1))
                self._dirty.add(self.path / name / "zarr.json")
        if incomplete:
            c.incomplete = (*c.incomplete, c.episodes)
        c.episodes += 1
        c.steps = end
        c.open_steps, c.open_meta = 0, None
        self._open_meta = None
        self._chunks_since_commit = 0
        self._write_commit()  # last: readers see the episode from here on
        complete = c.episodes - len(c.incomplete)
        return complete + len(c.incomplete) - 1 if incomplete else complete - 1

    def discard_episode(self) -> None:
        """Forget the open episode's steps, including any it has committed."""
        self._check_open()
        self._buffered = 0
        self._open_meta = None
        self._chunks_since_commit = 0
        c = self._commit
        if c.open_steps:  # un-commit first: readers must never see rows vanish below the commit
            c.open_steps, c.open_meta = 0, None
            self._write_commit()
        if self._flushed != c.steps:
            for key, arr in self._arrays.items():
                arr.resize((c.steps, *arr.shape[1:]))
                self._dirty.add(self.path / "data" / key / "zarr.json")
            self._flushed = c.steps

    def _write_commit(self, bump: bool = True) -> None:
        """Atomically replace the commit record; with ``fsync``, only after what it points to is on disk."""
        if self.fsync:
            fsync_files(sorted(self._dirty), self.path)
        self._dirty.clear()
        self._commit.counter += int(bump)
        self._commit.time = time.time()
        self.group.update_attributes({"commit": self._commit.to_json()})
        if self.fsync:
            fsync_files([self.path / "zarr.json"], self.path)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the EpisodeWriter for {self.path} is closed")
