"""Checking and repairing episode stores: what ``simbridge data validate [--repair [--yes]]`` runs.

:func:`validate_store` never modifies a store. :func:`plan_repair` lists what a repair would
do, :func:`apply_repair` does it: remove a half-created store (nothing was recorded), keep the
open episode a killed writer left as an incomplete episode, and drop uncommitted rows and
temporary files. Damage below the commit (corrupt or missing chunks) is never "repaired": it
is named, for a restore from a backup.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from simbridge.data.spec import ContractError
from simbridge.data.store.layout import (
    StoreError,
    cameras_from_json,
    half_created_message,
    lock_store,
    meta_from_json,
    open_array,
    read_root,
    step_array_specs,
    store_state,
    unlock_store,
)


@dataclass
class ValidationReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    episodes: int = 0  # sealed episodes, complete and incomplete
    steps: int = 0  # their rows
    incomplete_episodes: int = 0  # sealed episodes that never reached end_episode
    open_steps: int = 0  # committed rows of an episode still open (its writer is recording, or died)
    uncommitted_steps: int = 0
    leftover_files: int = 0  # zarr temporary files (*.partial) from an interrupted write
    half_created: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_store(path: str | os.PathLike, deep: bool = True, progress: bool = False) -> ValidationReport:
    """Check layout, lengths, metadata and (``deep``) every chunk's checksum. Never modifies the store."""
    path = Path(path)
    report = ValidationReport(path)
    if store_state(path) == "half-created":
        report.half_created = True
        report.errors.append(half_created_message(path))
        return report
    try:
        group, info, commit = read_root(path)
    except StoreError as exc:
        report.errors.append(str(exc))
        return report
    try:
        cameras = cameras_from_json(info.get("cameras", []))
    except (KeyError, TypeError, ContractError) as exc:
        report.errors.append(f"camera list in zarr.json is invalid: {exc}")
        return report
    episodes, rows = commit.episodes, commit.rows
    report.episodes, report.steps = episodes, commit.steps
    report.incomplete_episodes, report.open_steps = len(commit.incomplete), commit.open_steps
    longest = rows
    specs = step_array_specs(cameras).items()
    if progress and deep:
        from tqdm import tqdm

        specs = tqdm(specs, desc="validate (reading every chunk)", unit="array")
    for key, (shape, dtype) in specs:
        name = f"data/{key}"
        try:
            arr = open_array(group, name, path)
        except StoreError:
            report.errors.append(f"missing key: {name}")
            continue
        if arr.shape[1:] != shape or arr.dtype != np.dtype(dtype):
            report.errors.append(
                f"{name}: expected {dtype} rows of shape {shape}, found {arr.dtype} {arr.shape[1:]}"
            )
            continue
        if arr.shape[0] < rows:
            report.errors.append(
                f"mismatched lengths: {name} has {arr.shape[0]} rows, {rows} steps are committed"
            )
        longest = max(longest, arr.shape[0])
        if deep:
            _check_chunks(path, name, arr, min(rows, arr.shape[0]), report)
    report.uncommitted_steps = longest - rows
    if report.uncommitted_steps:
        report.warnings.append(
            f"{report.uncommitted_steps} step(s) after the last commit (an interrupted writer); "
            "ignored by readers and dropped by the next writer"
        )
    ends = _check_meta(group, path, episodes, report)
    if ends is not None and episodes:
        if np.any(np.diff(ends) <= 0) or ends[0] <= 0:
            report.errors.append("meta/episode_ends is not strictly increasing")
        elif ends[-1] != commit.steps:
            report.errors.append(
                f"meta/episode_ends ends at {ends[-1]} but the commit record says {commit.steps} steps"
            )
        else:
            _check_timestamps(group, ends, report)
    if commit.incomplete:
        report.warnings.append(
            f"{len(commit.incomplete)} incomplete episode(s) (a writer stopped before end_episode): kept, "
            "left out of training datasets and exports by default; `simbridge data info --episodes` lists them"
        )
    if commit.open_steps:
        report.warnings.append(
            f"an open episode has {commit.open_steps} committed step(s): a writer is recording it, or was "
            "killed; the next writer (or `--repair --yes` once no writer runs) keeps them as an incomplete episode"
        )
    leftovers = sorted(str(p.relative_to(path)) for p in path.rglob("*.partial"))
    report.leftover_files = len(leftovers)
    if leftovers:
        report.warnings.append(
            f"{len(leftovers)} leftover temporary file(s) from an interrupted write, e.g. {leftovers[0]}"
        )
    return report


def _check_meta(group: zarr.Group, path: Path, episodes: int, report: ValidationReport) -> np.ndarray | None:
    ends = None
    for name in ("meta/episode_ends", "meta/episodes"):
        try:
            arr = open_array(group, name, path)
        except StoreError:
            report.errors.append(f"missing key: {name}")
            continue
        if arr.shape[0] < episodes:
            report.errors.append(
                f"mismatched lengths: {name} has {arr.shape[0]} entries, {episodes} episodes are committed"
            )
            continue
        try:
            values = arr[:episodes]
        except Exception as exc:
            report.errors.append(f"corrupt chunk in {name}: {exc}")
            continue
        if name == "meta/episode_ends":
            ends = np.asarray(values)
            continue
        for i, text in enumerate(values):
            try:
                meta_from_json(str(text))
            except (ValueError, TypeError) as exc:
                report.errors.append(f"meta/episodes[{i}]: corrupt metadata ({exc})")
    return ends


def _check_timestamps(group: zarr.Group, ends: np.ndarray, report: ValidationReport) -> None:
    try:
        ts = np.asarray(group["data/timestamp"][: int(ends[-1])])
    except Exception:
        return  # already reported as a missing key or a corrupt chunk
    starts = np.concatenate([[0], ends[:-1]])
    bad = [i for i, (a, b) in enumerate(zip(starts, ends, strict=True)) if np.any(np.diff(ts[a:b]) < 0)]
    if bad:
        report.warnings.append(f"timestamps go backwards within episode(s) {bad[:10]} (clock jumps?)")


def _check_chunks(path: Path, name: str, arr: zarr.Array, rows: int, report: ValidationReport) -> None:
    step = arr.shards[0] if arr.shards else arr.chunks[0]
    zeros = (0,) * (arr.ndim - 1)
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    for k, start in enumerate(range(0, rows, step)):
        stop = min(start + step, rows)
        key = encode((k, *zeros))
        if not (path / name / key).is_file():
            report.errors.append(f"missing chunk: {name}/{key} (rows {start}..{stop - 1}) is gone")
            continue
        try:
            arr[start:stop]
        except Exception as exc:
            report.errors.append(f"corrupt chunk: {name}/{key} (rows {start}..{stop - 1}): {exc}")


# --- repair -----------------------------------------------------------------------------------------


@dataclass
class RepairPlan:
    """What :func:`apply_repair` will do to ``path`` (``actions``) and what it cannot fix (``unrepairable``)."""

    path: Path
    actions: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)
    remove_store: bool = False  # a half-created store: delete the directory
    reopen: bool = False  # open and close a writer: it seals the open episode, drops the tail and temp files


def plan_repair(path: str | os.PathLike, deep: bool = True) -> RepairPlan:
    """Validate ``path`` and list the repairs; never modifies the store."""
    path = Path(path)
    report = validate_store(path, deep=deep)
    plan = RepairPlan(path)
    if report.half_created:
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        plan.actions.append(
            f"remove {path} and its {len(files)} file(s) ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''}): "
            "a half-created episode store (its writer was killed before the first commit; no data was recorded)"
        )
        plan.remove_store = True
        return plan
    plan.unrepairable = list(report.errors)
    if report.open_steps:
        plan.actions.append(
            f"keep the {report.open_steps} committed step(s) of the open episode as an incomplete episode "
            "(left out of training datasets by default)"
        )
    if report.uncommitted_steps:
        plan.actions.append(
            f"drop {report.uncommitted_steps} uncommitted step(s) after the last commit (no reader sees them)"
        )
    if report.leftover_files:
        plan.actions.append(f"delete {report.leftover_files} leftover temporary file(s) (*.partial)")
    plan.reopen = bool(plan.actions)
    return plan


def apply_repair(plan: RepairPlan) -> None:
    """Carry out ``plan``. Refuses while a writer holds the store, and when it has unrepairable damage."""
    if plan.unrepairable:
        raise StoreError(
            f"{plan.path} has damage a repair cannot fix ({plan.unrepairable[0]}"
            f"{f' and {len(plan.unrepairable) - 1} more' if len(plan.unrepairable) > 1 else ''}); "
            "restore the store from a backup"
        )
    if plan.remove_store:
        fd = lock_store(plan.path)  # a writer creating it right now holds the lock: refuse
        try:
            if store_state(plan.path) != "half-created":
                raise StoreError(f"{plan.path} changed since it was checked; run the repair again")
            shutil.rmtree(plan.path)
        finally:
            unlock_store(fd)
    elif plan.reopen:
        from simbridge.data.store.writer import EpisodeWriter

        _, info, _ = read_root(plan.path)
        # Opening a writer is the recovery: it seals the open episode, truncates, removes temp files.
        EpisodeWriter(
            plan.path,
            cameras_from_json(info["cameras"]),
            robot=str(info.get("robot", "")),
            software_version=str(info.get("software_version", "")),
        ).close()
