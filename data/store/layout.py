"""The episode store's on-disk layout: names, the commit record, store states, locking and fsync.

Shared by the writer, the reader and the checker; nothing here writes episode data. See
:mod:`simbridge.data.store` for the layout and the durability protocol.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from simbridge.data.spec import (
    STEP_KEYS,
    CameraSpec,
    ContractError,
    EpisodeMeta,
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
WRITE_CFG = {"write_empty_chunks": True}
META_FIELDS = {f.name for f in dataclasses.fields(EpisodeMeta)}


class StoreError(RuntimeError):
    """The episode store is missing, newer, inconsistent or corrupt; the message names what and how to fix it."""


# --- arrays, cameras and metadata ---------------------------------------------------------------


def step_array_specs(cameras: Sequence[CameraSpec]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every ``data/<key>``: per-step shape and dtype (STEP_KEYS + one image array per camera)."""
    specs = dict(STEP_KEYS)
    for cam in cameras:
        specs[image_key(cam.name)] = (cam.shape, "uint8")
    return specs


def cameras_to_json(cameras: Sequence[CameraSpec]) -> list[dict]:
    return [{"name": c.name, "height": c.height, "width": c.width} for c in cameras]


def cameras_from_json(items: Sequence[Mapping]) -> tuple[CameraSpec, ...]:
    return tuple(CameraSpec(name=c["name"], height=int(c["height"]), width=int(c["width"])) for c in items)


def as_cameras(cameras: Sequence[CameraSpec] | ObservationSpec) -> tuple[CameraSpec, ...]:
    if isinstance(cameras, ObservationSpec):
        return cameras.cameras
    cams = tuple(cameras)
    if not cams or not all(isinstance(c, CameraSpec) for c in cams):
        raise StoreError("cameras must be a non-empty sequence of CameraSpec (ObservationSpec.cameras)")
    return cams


def meta_to_dict(meta: EpisodeMeta) -> dict:
    # The JSON round trip turns numpy scalars/arrays into plain values (and refuses anything else).
    return json.loads(meta_to_json(meta))


def meta_to_json(meta: EpisodeMeta) -> str:
    return json.dumps(dataclasses.asdict(meta), sort_keys=True, default=_json_default)


def meta_from_dict(d: Mapping) -> EpisodeMeta:
    if not isinstance(d, Mapping) or "instruction" not in d:
        raise ValueError("episode metadata must be a JSON object with an 'instruction'")
    return EpisodeMeta(**{k: v for k, v in d.items() if k in META_FIELDS})


def meta_from_json(text: str) -> EpisodeMeta:
    return meta_from_dict(json.loads(text))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"episode metadata value {o!r} of type {type(o).__name__} is not JSON-serialisable")


def create_arrays(group: zarr.Group, specs: Mapping, chunk_steps: int, level: int) -> None:
    """The empty ``data/`` and ``meta/`` arrays: CRC32C on every chunk, one shard per ``chunk_steps`` frames."""
    blosc = BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")
    for key, (shape, dtype) in specs.items():
        if key.startswith("image_"):  # one inner chunk per frame: training reads single frames
            codecs = [BloscCodec(cname="zstd", clevel=level, shuffle="noshuffle"), Crc32cCodec()]
            group.create_array(
                f"data/{key}", shape=(0, *shape), dtype=dtype, chunks=(1, *shape),
                shards=(chunk_steps, *shape), fill_value=0, config=WRITE_CFG, compressors=codecs,
            )  # fmt: skip
        else:
            group.create_array(
                f"data/{key}", shape=(0, *shape), dtype=dtype, chunks=(max(LOWDIM_CHUNK_ROWS, chunk_steps), *shape),
                fill_value=np.nan if dtype.startswith("float") else 0, config=WRITE_CFG,
                compressors=[blosc, Crc32cCodec()],
            )  # fmt: skip
    group.create_array(
        "meta/episode_ends", shape=(0,), dtype="int64", chunks=(LOWDIM_CHUNK_ROWS,), fill_value=-1,
        config=WRITE_CFG, compressors=[blosc, Crc32cCodec()],
    )  # fmt: skip
    group.create_array("meta/episodes", shape=(0,), dtype=str, chunks=(1,), config=WRITE_CFG)


# --- the commit record --------------------------------------------------------------------------


@dataclass
class Commit:
    """``zarr.json`` attributes["commit"]: what readers may read. Rewritten atomically, last.

    Sealed episodes (complete or incomplete) are rows ``[0, steps)`` with one ``episode_ends``
    and one ``episodes`` entry each; the open episode's committed prefix is the next
    ``open_steps`` rows. Stores written before in-episode commits lack the last three keys.
    """

    counter: int = 0
    episodes: int = 0  # sealed episodes, complete and incomplete
    steps: int = 0  # rows of the sealed episodes
    incomplete: tuple[int, ...] = ()  # storage indices of sealed episodes that never reached end_episode
    open_steps: int = 0  # committed rows of the open episode, right after the sealed ones
    open_meta: dict | None = None  # its provisional metadata (EpisodeMeta as a dict)
    time: float = 0.0

    @property
    def rows(self) -> int:
        """Every committed row: sealed episodes plus the open episode's committed prefix."""
        return self.steps + self.open_steps

    def to_json(self) -> dict:
        record = {"counter": self.counter, "episodes": self.episodes, "steps": self.steps, "time": self.time}
        if self.incomplete:
            record["incomplete"] = list(self.incomplete)
        if self.open_steps:
            record["open"] = {"steps": self.open_steps, "meta": self.open_meta or {"instruction": ""}}
        return record

    @classmethod
    def from_json(cls, d: Mapping, path: Path) -> Commit:
        try:
            open_ = d.get("open") or {}
            commit = cls(
                counter=int(d["counter"]),
                episodes=int(d["episodes"]),
                steps=int(d["steps"]),
                incomplete=tuple(int(i) for i in d.get("incomplete", ())),
                open_steps=int(open_.get("steps", 0)),
                open_meta=dict(open_["meta"]) if open_ else None,
                time=float(d.get("time", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"{path}: the commit record in zarr.json is malformed ({exc}); restore zarr.json from a backup"
            ) from exc
        if (
            min(commit.episodes, commit.steps, commit.open_steps) < 0
            or any(not 0 <= i < commit.episodes for i in commit.incomplete)
            or len(set(commit.incomplete)) != len(commit.incomplete)
        ):
            raise StoreError(
                f"{path}: the commit record in zarr.json is inconsistent ({dict(d)}); restore zarr.json from a backup"
            )
        return commit


# --- store states: a store, a half-created one, or something else -------------------------------


def half_created_message(path: Path) -> str:
    return (
        f"{path} is a half-created episode store: the writer creating it was killed before its first "
        f"commit, so it holds no recorded data. Remove it with `simbridge data validate {path} --repair --yes` "
        f"(or delete the directory); a new EpisodeWriter on {path} recreates it as well"
    )


def _is_scratch(p: Path) -> bool:
    """Files a writer leaves behind that hold no data: its lock file and zarr's temporary files."""
    return p.name == LOCK_FILE or p.name.endswith(".partial")


def store_state(path: Path) -> str:
    """``missing``, ``empty``, ``half-created``, ``store`` (has a commit record, or is damaged) or ``foreign``.

    Half-created: a writer died between creating the directory and its first commit: either
    only its lock file is there, or our group attributes and empty arrays without a commit record.
    """
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "foreign"
    if not (path / "zarr.json").is_file():
        entries = list(path.iterdir())
        if not entries:
            return "empty"
        return "half-created" if all(_is_scratch(p) and p.is_file() for p in entries) else "foreign"
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return "store"  # ours or not, it is damaged: the reader names the problem
    info = attrs.get("simbridge")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return "foreign"
    if "commit" in attrs:
        return "store"
    return "store" if _holds_rows(path) else "half-created"


def _holds_rows(path: Path) -> bool:
    """Any array with rows or any chunk file under data/ or meta/ (a lost commit record, not a creation)."""
    for sub in ("data", "meta"):
        for f in (path / sub).rglob("*"):
            if not f.is_file() or _is_scratch(f):
                continue
            if f.name != "zarr.json":
                return True
            try:
                shape = json.loads(f.read_text()).get("shape", [0])
            except (OSError, ValueError):
                return True  # unreadable: never treat it as empty
            if shape and shape[0] > 0:
                return True
    return False


def read_root(path: Path) -> tuple[zarr.Group, dict, Commit]:
    """Open the group read-only and return (group, simbridge attributes, commit record)."""
    if not (path / "zarr.json").is_file():
        if store_state(path) == "half-created":
            raise StoreError(half_created_message(path))
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
    try:
        check_schema_version(int(info.get("schema_version", -1)), what=f"episode store {path}")
    except ContractError as exc:
        raise StoreError(str(exc)) from exc
    record = attrs.get("commit")
    if not isinstance(record, dict) or not {"counter", "episodes", "steps"} <= set(record):
        if store_state(path) == "half-created":
            raise StoreError(half_created_message(path))
        raise StoreError(
            f"{path}: the commit record is missing from zarr.json although data/ or meta/ hold rows, so "
            "this is not an interrupted creation and no tool can tell which rows are complete; restore "
            f"{path}/zarr.json from a backup"
        )
    return group, info, Commit.from_json(record, path)


def open_array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        raise StoreError(
            f"{path}: key '{name}' is missing; the store is incomplete (restore it from a backup)"
        ) from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path}: '{name}' should be an array")
    return node


# --- locking and durability ----------------------------------------------------------------------


def lock_store(path: Path) -> int | None:
    """Take the store's writer lock (non-blocking); returns the fd to pass to :func:`unlock_store`."""
    if fcntl is None:
        return None
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"another EpisodeWriter is writing to {path}; close it first (one writer per store)"
        ) from None
    return fd


def unlock_store(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def chunk_files(array_dir: Path, arr: zarr.Array, start: int, stop: int) -> list[Path]:
    """The chunk (or shard) files holding rows ``[start, stop)`` of ``arr``."""
    if stop <= start:
        return []
    step = arr.shards[0] if arr.shards else arr.chunks[0]
    zeros = (0,) * (arr.ndim - 1)
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    return [array_dir / encode((k, *zeros)) for k in range(start // step, (stop - 1) // step + 1)]


def fsync_files(files: Iterable[Path], root: Path) -> None:
    """fsync each file, then every directory between it and ``root`` (zarr renames files into place)."""
    dirs: set[Path] = set()
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
        except FileNotFoundError:
            continue  # deleted since (a truncation): nothing to make durable
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        d = f.parent
        while d != root and root in d.parents:
            dirs.add(d)
            d = d.parent
        dirs.add(root)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
