"""Crash-safe episode store on zarr v3: what the robot, teleop and simulators log to.

Layout (one zarr v3 group, a directory; in the spirit of diffusion_policy's ReplayBuffer)::

    <store>/zarr.json                 attributes["simbridge"]: format, schema_version, cameras,
                                      robot, software_version, created
                                      attributes["commit"]: {counter, episodes, steps, time}
    <store>/data/<key>                one row per step, all episodes concatenated:
                                      STEP_KEYS (ee_pose, gripper_width, joint_positions, action,
                                      policy_action, intervention, timestamp) + image_<camera>
    <store>/meta/episode_ends         int64, exclusive end row of every episode (cumulative)
    <store>/meta/episodes             one JSON string per episode (EpisodeMeta), one chunk each

Durability protocol. :class:`EpisodeWriter` buffers ``chunk_steps`` steps in memory and
appends them to every ``data/`` array at once (appending step by step is ~10x slower).
:meth:`EpisodeWriter.end_episode` flushes the rest, appends ``episode_ends`` and the
metadata, and only then rewrites the ``commit`` record. Every file is replaced atomically
(zarr's LocalStore writes a temp file and renames it), so after ``kill -9`` the arrays may be
longer than the commit (or disagree in length, or end in fill values) but every row below
the commit is intact. Readers only ever look below the commit; the next writer truncates the
uncommitted tail. Every chunk carries a CRC32C so corruption is detected, not read as data.

Images are sharded: one shard file per ``chunk_steps`` frames, one inner chunk per frame, so
training can read a single frame without decoding its neighbours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from simbridge.data.spec import (
    SCHEMA_VERSION,
    STEP_KEYS,
    CameraSpec,
    ContractError,
    EpisodeMeta,
    Observation,
    ObservationSpec,
    check_schema_version,
    image_key,
)

try:  # POSIX advisory lock: released by the kernel when the writer dies, even on kill -9
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "simbridge.episode_store"
LOWDIM_CHUNK_ROWS = 1024
LOCK_FILE = ".writer.lock"
#: Write every chunk, even all-fill-value ones: a missing chunk file below the commit then means data loss.
_WRITE_CFG = {"write_empty_chunks": True}
_META_FIELDS = {f.name for f in dataclasses.fields(EpisodeMeta)}


class StoreError(RuntimeError):
    """The episode store is missing, newer, inconsistent or corrupt; the message names what and how to fix it."""


# --- helpers shared by writer, reader and validator -------------------------------------------


def step_array_specs(cameras: Sequence[CameraSpec]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every ``data/<key>``: per-step shape and dtype (STEP_KEYS + one image array per camera)."""
    specs = dict(STEP_KEYS)
    for cam in cameras:
        specs[image_key(cam.name)] = (cam.shape, "uint8")
    return specs


def _cameras_to_json(cameras: Sequence[CameraSpec]) -> list[dict]:
    return [{"name": c.name, "height": c.height, "width": c.width} for c in cameras]


def _cameras_from_json(items: Sequence[Mapping]) -> tuple[CameraSpec, ...]:
    return tuple(CameraSpec(name=c["name"], height=int(c["height"]), width=int(c["width"])) for c in items)


def _as_cameras(cameras: Sequence[CameraSpec] | ObservationSpec) -> tuple[CameraSpec, ...]:
    if isinstance(cameras, ObservationSpec):
        return cameras.cameras
    cams = tuple(cameras)
    if not cams or not all(isinstance(c, CameraSpec) for c in cams):
        raise StoreError("cameras must be a non-empty sequence of CameraSpec (ObservationSpec.cameras)")
    return cams


def meta_to_json(meta: EpisodeMeta) -> str:
    return json.dumps(dataclasses.asdict(meta), sort_keys=True, default=_json_default)


def meta_from_json(text: str) -> EpisodeMeta:
    d = json.loads(text)
    if not isinstance(d, dict) or "instruction" not in d:
        raise ValueError("episode metadata must be a JSON object with an 'instruction'")
    return EpisodeMeta(**{k: v for k, v in d.items() if k in _META_FIELDS})


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"episode metadata value {o!r} of type {type(o).__name__} is not JSON-serialisable")


def _read_root_attrs(path: Path) -> tuple[zarr.Group, dict, dict]:
    """Open the group read-only and return (group, simbridge attrs, commit record)."""
    if not (path / "zarr.json").is_file():
        raise StoreError(
            f"no episode store at {path} (no zarr.json): check the path, or create one with "
            "EpisodeWriter / `simbridge collect`"
        )
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.asdict()
    except Exception as exc:
        raise StoreError(f"{path}/zarr.json is unreadable ({exc}); restore it from a backup") from exc
    info = attrs.get("simbridge")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise StoreError(
            f"{path} is a zarr group but not a SimBridge episode store (no 'simbridge' attributes)"
        )
    version = int(info.get("schema_version", -1))
    try:
        check_schema_version(version, what=f"episode store {path}")
    except ContractError as exc:
        raise StoreError(str(exc)) from exc
    commit = attrs.get("commit")
    if not isinstance(commit, dict) or not {"counter", "episodes", "steps"} <= set(commit):
        raise StoreError(
            f"{path}: the commit record is missing from zarr.json; run `simbridge data validate {path}`"
        )
    return group, info, commit


def _open_array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        raise StoreError(
            f"{path}: key '{name}' is missing; the store is incomplete (run `simbridge data validate {path}`)"
        ) from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path}: '{name}' should be an array")
    return node


# --- writer -----------------------------------------------------------------------------------


class EpisodeWriter:
    """Append episodes to a store (created if missing). Use as a context manager.

    Only one writer per store at a time (an advisory lock file enforces it). Reopening a store
    after a crash truncates whatever was written after the last commit.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cameras: Sequence[CameraSpec] | ObservationSpec,
        chunk_steps: int = 64,
        robot: str = "",
        software_version: str | None = None,
        compression_level: int = 1,
    ) -> None:
        if chunk_steps < 1:
            raise StoreError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self.path = Path(path)
        self.cameras = _as_cameras(cameras)
        self.chunk_steps = int(chunk_steps)
        self.robot = robot
        if software_version is None:
            from simbridge.data.runs import software_version as _sv

            software_version = _sv()
        self.software_version = software_version
        self._specs = step_array_specs(self.cameras)
        self._lock_fd: int | None = None
        self._closed = False
        try:
            if (self.path / "zarr.json").exists():
                self._lock()
                if self._creation_was_interrupted():
                    self._clear_except_lock()
                    self._create(compression_level)
                else:
                    self._open_existing()
            else:
                if self.path.exists() and any(self.path.iterdir()):
                    raise StoreError(
                        f"{self.path} exists and is not an episode store; choose an empty or new path"
                    )
                self.path.mkdir(parents=True, exist_ok=True)
                self._lock()
                self._create(compression_level)
        except BaseException:
            self._unlock()
            raise
        # write_empty_chunks is a runtime setting, not stored: set it on every handle we write with.
        self._arrays = {k: self.group[f"data/{k}"].with_config(_WRITE_CFG) for k in self._specs}
        self._ends = self.group["meta/episode_ends"].with_config(_WRITE_CFG)
        self._metas = self.group["meta/episodes"].with_config(_WRITE_CFG)
        self._buffer: dict[str, np.ndarray] = {
            k: np.empty((self.chunk_steps, *shape), dtype=dtype) for k, (shape, dtype) in self._specs.items()
        }
        self._buffered = 0  # rows in self._buffer
        self._flushed = self._steps  # rows in data/ (committed + flushed rows of the open episode)

    # lifecycle
    def _lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another EpisodeWriter is writing to {self.path}; close it first (one writer per store)"
            ) from None
        self._lock_fd = fd

    def _creation_was_interrupted(self) -> bool:
        """A writer died while creating the store: our attributes, no commit record, no rows anywhere."""
        try:
            attrs = zarr.open_group(str(self.path), mode="r").attrs.asdict()
        except Exception:
            return False
        if attrs.get("simbridge", {}).get("format") != FORMAT or "commit" in attrs:
            return False
        arrays = [p for p in (self.path / "data").glob("*/zarr.json")] + list(
            (self.path / "meta").glob("*/zarr.json")
        )
        return all(zarr.open_array(str(p.parent), mode="r").shape[0] == 0 for p in arrays)

    def _clear_except_lock(self) -> None:
        import shutil

        for child in self.path.iterdir():
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def _create(self, level: int) -> None:
        info = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "cameras": _cameras_to_json(self.cameras),
            "robot": self.robot,
            "software_version": self.software_version,
            "created": time.time(),
        }
        # "a", not "w": "w" would clear the directory, our lock file included.
        self.group = zarr.open_group(str(self.path), mode="a", attributes={"simbridge": info})
        cfg = _WRITE_CFG
        blosc = BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")
        for key, (shape, dtype) in self._specs.items():
            if key.startswith("image_"):
                self.group.create_array(
                    f"data/{key}",
                    shape=(0, *shape),
                    dtype=dtype,
                    chunks=(1, *shape),
                    shards=(self.chunk_steps, *shape),
                    fill_value=0,
                    config=cfg,
                    compressors=[BloscCodec(cname="zstd", clevel=level, shuffle="noshuffle"), Crc32cCodec()],
                )
            else:
                rows = max(LOWDIM_CHUNK_ROWS, self.chunk_steps)
                self.group.create_array(
                    f"data/{key}",
                    shape=(0, *shape),
                    dtype=dtype,
                    chunks=(rows, *shape),
                    fill_value=np.nan if dtype.startswith("float") else 0,
                    config=cfg,
                    compressors=[blosc, Crc32cCodec()],
                )
        self.group.create_array(
            "meta/episode_ends",
            shape=(0,),
            dtype="int64",
            chunks=(LOWDIM_CHUNK_ROWS,),
            fill_value=-1,
            config=cfg,
            compressors=[blosc, Crc32cCodec()],
        )
        self.group.create_array("meta/episodes", shape=(0,), dtype=str, chunks=(1,), config=cfg)
        self._counter, self._episodes, self._steps = 0, 0, 0
        self._write_commit()  # last: the store exists once this is on disk

    def _open_existing(self) -> None:
        _, info, commit = _read_root_attrs(self.path)
        stored = _cameras_from_json(info["cameras"])
        if stored != self.cameras:
            raise StoreError(
                f"{self.path} was recorded with cameras {_cameras_to_json(stored)}, this writer has "
                f"{_cameras_to_json(self.cameras)}; write to a new store or match the cameras"
            )
        self.group = zarr.open_group(str(self.path), mode="r+")
        self._counter, self._episodes, self._steps = (
            int(commit["counter"]),
            int(commit["episodes"]),
            int(commit["steps"]),
        )
        # Crash recovery: drop everything after the last commit (and leftover temp files).
        for key in self._specs:
            arr = _open_array(self.group, f"data/{key}", self.path)
            if arr.shape[0] < self._steps:
                raise StoreError(
                    f"{self.path}: data/{key} has {arr.shape[0]} rows but {self._steps} are committed "
                    "(mismatched lengths); run `simbridge data validate` and restore from a backup"
                )
            if arr.shape[0] > self._steps:
                arr.resize((self._steps, *arr.shape[1:]))
        for name in ("meta/episode_ends", "meta/episodes"):
            arr = _open_array(self.group, name, self.path)
            if arr.shape[0] > self._episodes:
                arr.resize((self._episodes,))
        for tmp in self.path.rglob("*.partial"):
            tmp.unlink(missing_ok=True)

    def _write_commit(self) -> None:
        record = {
            "counter": self._counter,
            "episodes": self._episodes,
            "steps": self._steps,
            "time": time.time(),
        }
        self.group.update_attributes({"commit": record})

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop the open (uncommitted) episode's steps and release the store."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            if self.open_episode_steps:
                self.discard_episode()
        self._unlock()
        self._closed = True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # state
    @property
    def num_episodes(self) -> int:
        return self._episodes

    @property
    def num_steps(self) -> int:
        """Committed steps."""
        return self._steps

    @property
    def open_episode_steps(self) -> int:
        return self._flushed - self._steps + self._buffered

    # writing
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
        row = self._buffered
        buf = self._buffer
        for cam in self.cameras:
            img = obs.images.get(cam.name)
            if img is None:
                raise StoreError(
                    f"observation lacks camera {cam.name!r}; this store records {[c.name for c in self.cameras]}"
                )
            if img.shape != cam.shape or img.dtype != np.uint8:
                raise StoreError(
                    f"camera {cam.name!r}: expected uint8 {cam.shape}, got {img.dtype} {img.shape}"
                )
            buf[image_key(cam.name)][row] = img
        buf["ee_pose"][row] = _vector(obs.ee_pose, 7, "ee_pose")
        buf["gripper_width"][row] = float(obs.gripper_width)
        buf["joint_positions"][row] = _vector(obs.joint_positions, 7, "joint_positions")
        buf["action"][row] = _vector(action, 7, "action")
        buf["policy_action"][row] = (
            np.nan if policy_action is None else _vector(policy_action, 7, "policy_action")
        )
        buf["intervention"][row] = bool(intervention)
        buf["timestamp"][row] = float(obs.timestamp)
        self._buffered += 1
        if self._buffered == self.chunk_steps:
            self._flush()

    def add_episode(self, steps: Mapping[str, np.ndarray], meta: EpisodeMeta) -> int:
        """Append and commit a whole episode given as ``data/`` arrays (merge, split, converters)."""
        self._check_open()
        if self.open_episode_steps:
            raise StoreError("add_episode: an episode is open; end_episode() or discard_episode() first")
        missing = [k for k in self._specs if k not in steps]
        if missing:
            raise StoreError(f"add_episode: missing keys {missing}")
        n = len(steps["action"])
        for k, (shape, _dtype) in self._specs.items():
            arr = np.asarray(steps[k])
            if arr.shape != (n, *shape):
                raise StoreError(
                    f"add_episode: '{k}' has shape {arr.shape}, expected {(n, *shape)} (mismatched lengths?)"
                )
        for start in range(0, n, self.chunk_steps):
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
        new_len = self._flushed + n
        for key, arr in self._arrays.items():
            if arr.shape[0] != self._flushed:
                arr.resize((self._flushed, *arr.shape[1:]))
            arr.append(self._buffer[key][:n], axis=0)
            assert arr.shape[0] == new_len
        self._flushed = new_len
        self._buffered = 0

    def end_episode(self, meta: EpisodeMeta) -> int:
        """Commit the open episode with its metadata; returns its index."""
        self._check_open()
        if not isinstance(meta, EpisodeMeta):
            raise StoreError(f"end_episode needs an EpisodeMeta, got {type(meta).__name__}")
        if self.open_episode_steps == 0:
            raise StoreError("end_episode: the episode has no steps; add_step() first or discard it")
        self._flush()
        start, end = self._steps, self._flushed
        meta = dataclasses.replace(meta, extra=dict(meta.extra))
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
        self._episodes += 1
        self._steps = end
        self._counter += 1
        self._write_commit()  # last: readers see the episode from here on
        return self._episodes - 1

    def discard_episode(self) -> None:
        """Forget the open episode's steps (nothing of it was committed)."""
        self._check_open()
        self._buffered = 0
        if self._flushed != self._steps:
            for arr in self._arrays.values():
                arr.resize((self._steps, *arr.shape[1:]))
            self._flushed = self._steps

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the EpisodeWriter for {self.path} is closed")


def _vector(v, n: int, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float32).reshape(-1)
    if arr.shape != (n,):
        raise StoreError(f"{name} must have {n} values, got shape {np.shape(v)}")
    return arr


# --- reader -----------------------------------------------------------------------------------


class EpisodeStore:
    """Read-only view of the committed episodes (safe while a writer appends).

    The view is a snapshot taken at open; :meth:`refresh` picks up episodes committed since.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.refresh()

    def refresh(self) -> EpisodeStore:
        group, info, commit = _read_root_attrs(self.path)
        self.group = group
        self.info = info
        self.cameras: tuple[CameraSpec, ...] = _cameras_from_json(info.get("cameras", []))
        self.schema_version = int(info["schema_version"])
        self.commit_counter = int(commit["counter"])
        self._episodes, self._steps = int(commit["episodes"]), int(commit["steps"])
        self.keys = tuple(step_array_specs(self.cameras))
        self._arrays = {}
        for key in self.keys:
            arr = _open_array(group, f"data/{key}", self.path)
            if arr.shape[0] < self._steps:
                raise StoreError(
                    f"{self.path}: data/{key} has {arr.shape[0]} rows but {self._steps} steps are committed "
                    f"(mismatched lengths); run `simbridge data validate {self.path}`"
                )
            self._arrays[key] = arr
        ends_arr = _open_array(group, "meta/episode_ends", self.path)
        self._meta_arr = _open_array(group, "meta/episodes", self.path)
        if ends_arr.shape[0] < self._episodes or self._meta_arr.shape[0] < self._episodes:
            raise StoreError(
                f"{self.path}: meta/episode_ends ({ends_arr.shape[0]}) or meta/episodes ({self._meta_arr.shape[0]}) "
                f"is shorter than the {self._episodes} committed episodes (mismatched lengths)"
            )
        ends = self._read(ends_arr, "meta/episode_ends", slice(0, self._episodes))
        if self._episodes and (ends[-1] != self._steps or np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            raise StoreError(
                f"{self.path}: meta/episode_ends is inconsistent with the commit record ({self._steps} steps)"
            )
        self.episode_ends = np.asarray(ends, dtype=np.int64)
        self._starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        return self

    def __len__(self) -> int:
        return self._episodes

    @property
    def num_steps(self) -> int:
        return self._steps

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._episodes
        if not 0 <= i < self._episodes:
            raise IndexError(f"episode {i} out of range: {self.path} has {self._episodes} committed episodes")
        return i

    def episode_slice(self, i: int) -> slice:
        i = self._index(i)
        return slice(int(self._starts[i]), int(self.episode_ends[i]))

    def episode_length(self, i: int) -> int:
        s = self.episode_slice(i)
        return s.stop - s.start

    def meta(self, i: int) -> EpisodeMeta:
        i = self._index(i)
        text = self._read(self._meta_arr, "meta/episodes", i)
        try:
            return meta_from_json(str(text))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{self.path}: metadata of episode {i} is corrupt ({exc})") from exc

    def metas(self) -> list[EpisodeMeta]:
        """Metadata of every committed episode (one bulk read)."""
        texts = self._read(self._meta_arr, "meta/episodes", slice(0, self._episodes)) if len(self) else []
        out = []
        for i, text in enumerate(texts):
            try:
                out.append(meta_from_json(str(text)))
            except (ValueError, TypeError) as exc:
                raise StoreError(f"{self.path}: metadata of episode {i} is corrupt ({exc})") from exc
        return out

    def episode(self, i: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All step arrays of episode ``i`` (STEP_KEYS + image_<camera>), or only ``keys``."""
        s = self.episode_slice(i)
        return {k: self.read(k, s, episode=i) for k in (keys or self.keys)}

    def read(self, key: str, rows: slice | int | np.ndarray, episode: int | None = None) -> np.ndarray:
        """Rows of ``data/<key>`` (global row indices below the commit)."""
        if key not in self._arrays:
            raise StoreError(f"{self.path}: no data key {key!r}; available: {list(self.keys)}")
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self._steps)
            rows = slice(start, stop)
        else:
            idx = np.asarray(rows)
            if idx.size and (idx.min() < 0 or idx.max() >= self._steps):
                raise IndexError(f"rows {rows} outside the {self._steps} committed steps")
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
        i = self._index(i)
        meta = self.meta(i)
        meta.success = bool(success)
        meta.success_labeled_by = by
        meta.extra = {**meta.extra, "labeled_at": time.time()}
        # One chunk per episode: this rewrites only episode i's file, atomically, never racing a writer.
        try:
            arr = zarr.open_array(str(self.path / "meta/episodes"), mode="r+").with_config(_WRITE_CFG)
            arr[i] = meta_to_json(meta)
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
        return (
            f"EpisodeStore({str(self.path)!r}: {len(self)} episodes, {self._steps} steps, cameras [{cams}])"
        )


# --- validation -------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    episodes: int = 0
    steps: int = 0
    uncommitted_steps: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_store(path: str | os.PathLike, deep: bool = True, progress: bool = False) -> ValidationReport:
    """Check layout, lengths, metadata and (``deep``) every chunk's checksum. Never modifies the store."""
    path = Path(path)
    report = ValidationReport(path)
    try:
        group, info, commit = _read_root_attrs(path)
    except StoreError as exc:
        report.errors.append(str(exc))
        return report
    try:
        cameras = _cameras_from_json(info.get("cameras", []))
    except (KeyError, TypeError, ContractError) as exc:
        report.errors.append(f"camera list in zarr.json is invalid: {exc}")
        return report
    episodes, steps = int(commit["episodes"]), int(commit["steps"])
    report.episodes, report.steps = episodes, steps
    longest = steps
    specs = step_array_specs(cameras).items()
    if progress and deep:
        from tqdm import tqdm

        specs = tqdm(specs, desc="validate (reading every chunk)", unit="array")
    for key, (shape, dtype) in specs:
        name = f"data/{key}"
        try:
            arr = _open_array(group, name, path)
        except StoreError:
            report.errors.append(f"missing key: {name}")
            continue
        if arr.shape[1:] != shape or arr.dtype != np.dtype(dtype):
            report.errors.append(
                f"{name}: expected {dtype} rows of shape {shape}, found {arr.dtype} {arr.shape[1:]}"
            )
            continue
        if arr.shape[0] < steps:
            report.errors.append(
                f"mismatched lengths: {name} has {arr.shape[0]} rows, {steps} steps are committed"
            )
        longest = max(longest, arr.shape[0])
        if deep:
            _check_chunks(path, name, arr, min(steps, arr.shape[0]), report)
    report.uncommitted_steps = longest - steps
    if report.uncommitted_steps:
        report.warnings.append(
            f"{report.uncommitted_steps} step(s) after the last commit (an interrupted writer); "
            "ignored by readers and dropped by the next writer"
        )
    ends = None
    for name in ("meta/episode_ends", "meta/episodes"):
        try:
            arr = _open_array(group, name, path)
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
        else:
            for i, text in enumerate(values):
                try:
                    meta_from_json(str(text))
                except (ValueError, TypeError) as exc:
                    report.errors.append(f"meta/episodes[{i}]: corrupt metadata ({exc})")
    if ends is not None and episodes:
        if np.any(np.diff(ends) <= 0) or ends[0] <= 0:
            report.errors.append("meta/episode_ends is not strictly increasing")
        elif ends[-1] != steps:
            report.errors.append(
                f"meta/episode_ends ends at {ends[-1]} but the commit record says {steps} steps"
            )
        else:
            _check_timestamps(group, ends, report)
    leftovers = sorted(str(p.relative_to(path)) for p in path.rglob("*.partial"))
    if leftovers:
        report.warnings.append(
            f"{len(leftovers)} leftover temporary file(s) from an interrupted write, e.g. {leftovers[0]}"
        )
    return report


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


def store_size_bytes(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --- whole-store operations (used by `simbridge data merge | split`) ---------------------------


def copy_episodes(
    src: EpisodeStore,
    writer: EpisodeWriter,
    indices: Sequence[int] | None = None,
    **meta_changes,
) -> list[int]:
    """Append episodes of ``src`` to ``writer`` unchanged (apart from ``meta_changes``); returns new indices."""
    if src.cameras != writer.cameras:
        raise StoreError(
            f"cannot copy from {src.path}: cameras {_cameras_to_json(src.cameras)} differ from the destination's "
            f"{_cameras_to_json(writer.cameras)}"
        )
    out = []
    for i in range(len(src)) if indices is None else indices:
        meta = dataclasses.replace(src.meta(i), **meta_changes)
        out.append(writer.add_episode(src.episode(i), meta))
    return out


def merge_stores(sources: Sequence[str | os.PathLike], out: str | os.PathLike, progress: bool = False) -> int:
    """Append every committed episode of ``sources`` to ``out`` (created if missing); returns the count."""
    stores = [EpisodeStore(p) for p in sources]
    if not stores:
        raise StoreError("merge: give at least one source store")
    for s in stores[1:]:
        if s.cameras != stores[0].cameras:
            raise StoreError(
                f"merge: {s.path} has cameras {_cameras_to_json(s.cameras)}, {stores[0].path} has "
                f"{_cameras_to_json(stores[0].cameras)}; only stores with the same cameras can be merged"
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
    """Randomly partition episodes into ``<out_dir>/<name>.zarr`` stores; sets each episode's ``split``."""
    store = EpisodeStore(src)
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
            copy_episodes(store, w, sorted(order[start : start + n].tolist()), split=name)
        start += n
    return paths
