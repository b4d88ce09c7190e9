"""EpisodeStore: the read-only view of an episode store's committed episodes (safe while a writer appends).

Episode indices: complete episodes are numbered 0..n-1 in the order they were written, the
same in every view, so the index ``EpisodeWriter.end_episode`` returned, ``simbridge data
info`` lists and training uses is one number. Incomplete episodes (their writer died or
closed before ``end_episode``) are left out unless ``include_incomplete=True``; then they
follow the complete ones, the open episode's committed prefix (if any) last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import zarr

from simbridge.data.spec import CameraSpec, EpisodeMeta
from simbridge.data.store.layout import (
    WRITE_CFG,
    StoreError,
    cameras_from_json,
    meta_from_dict,
    meta_from_json,
    meta_to_json,
    open_array,
    read_root,
    step_array_specs,
)


class EpisodeStore:
    """Read-only view of the committed episodes; a snapshot taken at open (:meth:`refresh` updates it).

    ``include_incomplete``: also show incomplete episodes, after the complete ones (see the
    module docstring). Training datasets and exports leave them out by default.
    """

    def __init__(self, path: str | os.PathLike, *, include_incomplete: bool = False) -> None:
        self.path = Path(path)
        self.include_incomplete = bool(include_incomplete)
        self.refresh()

    def refresh(self) -> EpisodeStore:
        group, info, commit = read_root(self.path)
        self.group = group
        self.info = info
        self.cameras: tuple[CameraSpec, ...] = cameras_from_json(info.get("cameras", []))
        self.schema_version = int(info["schema_version"])
        self.commit_counter = commit.counter
        self._commit = commit
        self.keys = tuple(step_array_specs(self.cameras))
        self._arrays = {}
        for key in self.keys:
            arr = open_array(group, f"data/{key}", self.path)
            if arr.shape[0] < commit.rows:
                raise StoreError(
                    f"{self.path}: data/{key} has {arr.shape[0]} rows but {commit.rows} steps are committed "
                    f"(mismatched lengths); run `simbridge data validate {self.path}`"
                )
            self._arrays[key] = arr
        ends_arr = open_array(group, "meta/episode_ends", self.path)
        self._meta_arr = open_array(group, "meta/episodes", self.path)
        n = commit.episodes
        if ends_arr.shape[0] < n or self._meta_arr.shape[0] < n:
            raise StoreError(
                f"{self.path}: meta/episode_ends ({ends_arr.shape[0]}) or meta/episodes ({self._meta_arr.shape[0]}) "
                f"is shorter than the {n} committed episodes (mismatched lengths)"
            )
        ends = self._read(ends_arr, "meta/episode_ends", slice(0, n))
        if n and (ends[-1] != commit.steps or np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            raise StoreError(
                f"{self.path}: meta/episode_ends is inconsistent with the commit record ({commit.steps} steps)"
            )
        #: Exclusive end row of every sealed episode, in storage order (the on-disk layout).
        self.episode_ends = np.asarray(ends, dtype=np.int64)
        starts = np.concatenate([[0], self.episode_ends])[:-1].astype(np.int64)
        # Storage index -> rows; the open episode's committed prefix is storage index n.
        self._rows = [slice(int(a), int(b)) for a, b in zip(starts, self.episode_ends, strict=True)]
        if commit.open_steps:
            self._rows.append(slice(commit.steps, commit.rows))
        incomplete = set(commit.incomplete)
        order = [i for i in range(n) if i not in incomplete]
        if self.include_incomplete:
            order += sorted(incomplete) + ([n] if commit.open_steps else [])
        self._order = order
        return self

    # --- the view ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._order)

    @property
    def num_steps(self) -> int:
        """Steps of the episodes in this view."""
        return sum(self._rows[s].stop - self._rows[s].start for s in self._order)

    @property
    def committed_rows(self) -> int:
        """Every committed row of ``data/`` (all episodes, the open one's committed prefix included)."""
        return self._commit.rows

    @property
    def num_incomplete(self) -> int:
        """Incomplete episodes in the store, whether this view shows them or not (the open one included)."""
        return len(self._commit.incomplete) + int(self._commit.open_steps > 0)

    @property
    def open_episode_steps(self) -> int:
        """Committed steps of an episode still open: being recorded, or its writer was killed.

        Unlike sealed episodes, these rows can vanish if a live writer discards the episode."""
        return self._commit.open_steps

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            what = "episodes" if self.include_incomplete else "complete episodes"
            raise IndexError(f"episode {i} out of range: {self.path} has {len(self)} committed {what}")
        return i

    def storage_index(self, i: int) -> int:
        """Where episode ``i`` of this view sits in ``meta/`` (its position on disk)."""
        return self._order[self._index(i)]

    def episode_slice(self, i: int) -> slice:
        """Global rows of episode ``i`` in the ``data/`` arrays."""
        return self._rows[self.storage_index(i)]

    def episode_length(self, i: int) -> int:
        s = self.episode_slice(i)
        return s.stop - s.start

    def episode_lengths(self) -> np.ndarray:
        return np.array([self._rows[s].stop - self._rows[s].start for s in self._order], dtype=np.int64)

    def meta(self, i: int) -> EpisodeMeta:
        return self._meta_at(self.storage_index(i))

    def metas(self) -> list[EpisodeMeta]:
        """Metadata of every episode in the view (one bulk read)."""
        n = self._commit.episodes
        texts = self._read(self._meta_arr, "meta/episodes", slice(0, n)) if n else []
        return [self._meta_at(s, texts[s] if s < n else None) for s in self._order]

    def _meta_at(self, s: int, text=None) -> EpisodeMeta:
        c = self._commit
        try:
            if s == c.episodes:  # the open episode: its provisional metadata lives in the commit record
                meta = meta_from_dict(c.open_meta or {"instruction": ""})
                meta.extra = {**meta.extra, "open": True}
            else:
                if text is None:
                    text = self._read(self._meta_arr, "meta/episodes", s)
                meta = meta_from_json(str(text))
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"{self.path}: metadata of episode {s} (storage order) is corrupt ({exc})"
            ) from exc
        meta.incomplete = meta.incomplete or s == c.episodes or s in c.incomplete
        return meta

    def episode(self, i: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All step arrays of episode ``i`` (STEP_KEYS + image_<camera>), or only ``keys``."""
        s = self.episode_slice(i)
        return {k: self.read(k, s, episode=i) for k in (keys or self.keys)}

    def read(self, key: str, rows: slice | int | np.ndarray, episode: int | None = None) -> np.ndarray:
        """Rows of ``data/<key>`` (global row indices below the commit, in any view)."""
        if key not in self._arrays:
            raise StoreError(f"{self.path}: no data key {key!r}; available: {list(self.keys)}")
        limit = self._commit.rows
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(limit)
            rows = slice(start, stop)
        else:
            idx = np.asarray(rows)
            if idx.size and (idx.min() < 0 or idx.max() >= limit):
                raise IndexError(f"rows {rows} outside the {limit} committed steps")
        where = f"episode {episode}" if episode is not None else f"rows {rows}"
        return self._read(self._arrays[key], f"data/{key}", rows, where)

    def _read(self, arr: zarr.Array, name: str, sel, where: str = ""):
        try:
            return arr.oindex[sel] if isinstance(sel, np.ndarray) else arr[sel]
        except Exception:
            # A concurrent writer may have replaced a shard between reading its index and a
            # chunk: retry once on a fresh handle before calling the data corrupt.
            time.sleep(0.05)
            try:
                fresh = zarr.open_array(str(self.path / name), mode="r")
                return fresh.oindex[sel] if isinstance(sel, np.ndarray) else fresh[sel]
            except Exception as exc:
                raise StoreError(
                    f"{self.path}: corrupt chunk in {name} ({where or sel}): {exc}; "
                    f"run `simbridge data validate {self.path}` to list every damaged chunk"
                ) from exc

    def label(self, i: int, success: bool, by: str) -> EpisodeMeta:
        """Set the success label of episode ``i`` (the only in-place edit of a store)."""
        if not by:
            raise StoreError("label: say who labels (e.g. 'operator:alice')")
        s = self.storage_index(i)
        if s == self._commit.episodes:
            raise StoreError(
                f"episode {i} of {self.path} is still open (being recorded, or its writer was killed); label it "
                f"once it is closed (a writer reopening the store, or `simbridge data validate {self.path} --repair --yes`)"
            )
        meta = self._meta_at(s)
        meta.success = bool(success)
        meta.success_labeled_by = by
        meta.extra = {**meta.extra, "labeled_at": time.time()}
        # One chunk per episode: this rewrites only episode i's file, atomically, never racing a writer.
        try:
            arr = zarr.open_array(str(self.path / "meta/episodes"), mode="r+").with_config(WRITE_CFG)
            arr[s] = meta_to_json(meta)
        except OSError as exc:
            raise StoreError(
                f"cannot label episode {i} in {self.path}: {exc}; check write permission"
            ) from exc
        return meta

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.episode(i)

    def __repr__(self) -> str:
        cams = ", ".join(f"{c.name} {c.height}x{c.width}" for c in self.cameras)
        hidden = (
            ""
            if self.include_incomplete or not self.num_incomplete
            else f" (+{self.num_incomplete} incomplete)"
        )
        return f"EpisodeStore({str(self.path)!r}: {len(self)} episodes{hidden}, {self.num_steps} steps, cameras [{cams}])"
