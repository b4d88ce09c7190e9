"""Crash-safe episode store on zarr v3: what the robot, teleop and simulators log to.

Layout (one zarr v3 group, a directory; in the spirit of diffusion_policy's ReplayBuffer)::

    <store>/zarr.json                 attributes["simbridge"]: format, schema_version, cameras,
                                      robot, software_version, created
                                      attributes["commit"]: {counter, episodes, steps, time,
                                      incomplete: [storage indices], open: {steps, meta}}
    <store>/data/<key>                one row per step, all episodes concatenated:
                                      STEP_KEYS (ee_pose, gripper_width, joint_positions, action,
                                      policy_action, intervention, timestamp) + image_<camera>
    <store>/meta/episode_ends         int64, exclusive end row of every sealed episode (cumulative)
    <store>/meta/episodes             one JSON string per sealed episode (EpisodeMeta), one chunk each

Durability protocol. :class:`EpisodeWriter` buffers ``chunk_steps`` steps in memory and
appends them to every ``data/`` array at once (appending step by step is ~10x slower). Every
``commit_every_chunks`` chunks it commits the open episode's rows so far (``commit.open``);
:meth:`EpisodeWriter.end_episode` flushes the rest, appends ``episode_ends`` and the
metadata, and only then rewrites the commit record. Every file is replaced atomically (zarr's
LocalStore writes a temp file and renames it), so after ``kill -9`` the arrays may be longer
than the commit (or disagree in length, or end in fill values) but every row below the commit
is intact; with ``fsync`` (the default) that also holds after a power loss. Readers only look
below the commit; the next writer truncates the uncommitted tail and keeps a committed open
episode as an *incomplete* episode (``EpisodeMeta.incomplete``), which readers leave out
unless asked (``EpisodeStore(path, include_incomplete=True)``). Every chunk carries a CRC32C
so corruption is detected, not read as data.

Images are sharded: one shard file per ``chunk_steps`` frames, one inner chunk per frame, so
training can read a single frame without decoding its neighbours.

Modules: ``layout`` (names, commit record, store states, locking, fsync), ``writer`` (with
``opening``: create, or open and truncate to the commit; ``rows``: steps checked into rows),
``reader``, ``check`` (validate and repair), ``ops`` (copy, merge, split).
"""

from simbridge.data.store.check import RepairPlan, ValidationReport, apply_repair, plan_repair, validate_store
from simbridge.data.store.layout import (
    FORMAT,
    LOCK_FILE,
    LOWDIM_CHUNK_ROWS,
    Commit,
    StoreError,
    meta_from_json,
    meta_to_json,
    step_array_specs,
    store_state,
)
from simbridge.data.store.ops import copy_episodes, merge_stores, split_store, store_size_bytes
from simbridge.data.store.reader import EpisodeStore
from simbridge.data.store.writer import EpisodeWriter

__all__ = [
    "FORMAT",
    "LOCK_FILE",
    "LOWDIM_CHUNK_ROWS",
    "Commit",
    "EpisodeStore",
    "EpisodeWriter",
    "RepairPlan",
    "StoreError",
    "ValidationReport",
    "apply_repair",
    "copy_episodes",
    "merge_stores",
    "meta_from_json",
    "meta_to_json",
    "plan_repair",
    "split_store",
    "step_array_specs",
    "store_size_bytes",
    "store_state",
    "validate_store",
]
