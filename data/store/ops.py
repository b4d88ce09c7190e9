"""Whole-store operations: copy, merge and split episodes between stores (``simbridge data merge | split``).

Incomplete episodes travel too, still marked incomplete, so nothing recorded is lost on the way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simbridge.data.store.layout import StoreError, cameras_to_json
from simbridge.data.store.reader import EpisodeStore
from simbridge.data.store.writer import EpisodeWriter


def store_size_bytes(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def copy_episodes(
    src: EpisodeStore,
    writer: EpisodeWriter,
    indices: Sequence[int] | None = None,
    **meta_changes,
) -> list[int]:
    """Append episodes of ``src`` to ``writer`` unchanged (apart from ``meta_changes``); returns new indices."""
    if src.cameras != writer.cameras:
        raise StoreError(
            f"cannot copy from {src.path}: cameras {cameras_to_json(src.cameras)} differ from the destination's "
            f"{cameras_to_json(writer.cameras)}"
        )
    out = []
    for i in range(len(src)) if indices is None else indices:
        meta = dataclasses.replace(src.meta(i), **meta_changes)
        out.append(writer.add_episode(src.episode(i), meta))
    return out


def merge_stores(sources: Sequence[str | os.PathLike], out: str | os.PathLike, progress: bool = False) -> int:
    """Append every committed episode of ``sources`` to ``out`` (created if missing); returns the count."""
    stores = [EpisodeStore(p, include_incomplete=True) for p in sources]
    if not stores:
        raise StoreError("merge: give at least one source store")
    for s in stores[1:]:
        if s.cameras != stores[0].cameras:
            raise StoreError(
                f"merge: {s.path} has cameras {cameras_to_json(s.cameras)}, {stores[0].path} has "
                f"{cameras_to_json(stores[0].cameras)}; only stores with the same cameras can be merged"
            )
    count = 0
    from tqdm import tqdm

    with (
        EpisodeWriter(out, stores[0].cameras, robot=str(stores[0].info.get("robot", ""))) as w,
        tqdm(total=sum(map(len, stores)), desc="merge", unit="episode", disable=not progress) as bar,
    ):
        for s in stores:
            for i in range(len(s)):
                meta = s.meta(i)
                meta.extra = {**meta.extra, "merged_from": f"{s.path}#{i}"}
                w.add_episode(s.episode(i), meta)
                count += 1
                bar.update(1)
    return count


def split_store(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    fractions: Mapping[str, float],
    seed: int = 0,
) -> dict[str, Path]:
    """Randomly partition episodes into ``<out_dir>/<name>.zarr`` stores.

    Each episode's ``partition`` is set to its store's name; its ``split`` (the task split it was
    recorded in) is kept.
    """
    store = EpisodeStore(src, include_incomplete=True)
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise StoreError(f"split: fractions must be non-negative with a positive sum, got {dict(fractions)}")
    total = sum(fractions.values())
    order = np.random.default_rng(seed).permutation(len(store))
    counts = np.floor(np.array(list(fractions.values())) / total * len(store)).astype(int)
    counts[0] += len(store) - counts.sum()  # remainder to the first split
    out_dir = Path(out_dir)
    paths, start = {}, 0
    for (name, _), n in zip(fractions.items(), counts, strict=True):
        paths[name] = out_dir / f"{name}.zarr"
        if paths[name].exists():
            raise StoreError(f"split: {paths[name]} already exists; choose another --out directory")
        with EpisodeWriter(paths[name], store.cameras, robot=str(store.info.get("robot", ""))) as w:
            copy_episodes(store, w, sorted(order[start : start + n].tolist()), partition=name)
        start += n
    return paths
