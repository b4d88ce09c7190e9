"""Bringing an episode store to where a writer can append to it, under the writer's lock.

A new (or half-created) store is cleared and created: its root attributes and every empty array.
An existing one is opened after checking its cameras, and whatever a killed writer left past the
last commit (rows, episode ends, metadata, temp files) is dropped. What to do with a committed
open episode is the writer's decision (:meth:`EpisodeWriter._recover_open_episode`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import zarr

from simbridge.data.spec import SCHEMA_VERSION, CameraSpec
from simbridge.data.store.layout import (
    FORMAT,
    LOCK_FILE,
    Commit,
    StoreError,
    cameras_from_json,
    cameras_to_json,
    create_arrays,
    read_root,
)


def clear_except_lock(path: Path) -> None:
    """Remove everything in ``path`` but the writer's lock file (a writer died while creating it)."""
    for child in path.iterdir():
        if child.name != LOCK_FILE:
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def create_group(
    path: Path,
    cameras: Sequence[CameraSpec],
    specs: Mapping[str, tuple[tuple[int, ...], str]],
    chunk_steps: int,
    level: int,
    robot: str,
    software_version: str,
) -> zarr.Group:
    """The root group with its ``simbridge`` attributes and every array, empty (no commit yet)."""
    info = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "cameras": cameras_to_json(cameras),
        "robot": robot,
        "software_version": software_version,
        "created": time.time(),
    }
    # "a", not "w": "w" would clear the directory, our lock file included.
    group = zarr.open_group(str(path), mode="a", attributes={"simbridge": info})
    create_arrays(group, specs, chunk_steps, level)
    return group


def open_group(path: Path, cameras: Sequence[CameraSpec]) -> tuple[zarr.Group, Commit]:
    """An existing store's root group, opened for writing, and its commit; its cameras must match."""
    _, info, commit = read_root(path)
    stored = cameras_from_json(info["cameras"])
    if stored != tuple(cameras):
        raise StoreError(
            f"{path} was recorded with cameras {cameras_to_json(stored)}, this writer has "
            f"{cameras_to_json(cameras)}; write to a new store or match the cameras"
        )
    return zarr.open_group(str(path), mode="r+"), commit


def truncate_to_commit(
    path: Path,
    arrays: Mapping[str, zarr.Array],
    ends: zarr.Array,
    metas: zarr.Array,
    commit: Commit,
) -> set[Path]:
    """Crash recovery: drop every row and episode after the commit, and leftover temp files.

    Returns the array metadata files rewritten (to fsync before the next commit)."""
    dirty: set[Path] = set()
    for key, arr in arrays.items():
        if arr.shape[0] < commit.rows:
            raise StoreError(
                f"{path}: data/{key} has {arr.shape[0]} rows but {commit.rows} are committed "
                "(mismatched lengths); run `simbridge data validate` and restore from a backup"
            )
        if arr.shape[0] > commit.rows:
            arr.resize((commit.rows, *arr.shape[1:]))
            dirty.add(path / "data" / key / "zarr.json")
    for name, arr in (("meta/episode_ends", ends), ("meta/episodes", metas)):
        if arr.shape[0] > commit.episodes:
            arr.resize((commit.episodes,))
            dirty.add(path / name / "zarr.json")
    for tmp in path.rglob("*.partial"):
        tmp.unlink(missing_ok=True)
    return dirty
