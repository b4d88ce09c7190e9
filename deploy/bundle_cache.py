"""Checking a bundle's files against its manifest, hashing each file once per change.

A large bundle (a few GB of ONNX weights) takes seconds to minutes to sha256 on a robot PC; doing
that on every start of the policy node makes restarts slow for nothing. :func:`check_files` keeps,
per bundle, the sha256 it verified for every file together with that file's ``os.stat`` identity
``(size, mtime_ns, ctime_ns, inode, device)``; on the next load a file whose identity is unchanged
is not read again. Any change of one of them (a re-export, a copy, an edit, ``touch``) means a full
re-hash of that file, checked against the manifest as before.

Where: ``$SIMBRIDGE_CACHE/verified/<sha256 of the bundle's real path>.json`` (default
``~/.cache/simbridge``), written atomically with mode 0600. Not beside the bundle on purpose:
whoever can write the bundle (the party signatures guard against) could then write the cache too;
the user's cache directory is as trusted as the Python environment that runs the check. Set
``SIMBRIDGE_HASH_CACHE=0`` (or pass ``use_cache=False``) to hash everything every time; a cache
that cannot be read or written is ignored (everything is hashed, nothing breaks).

Known limits (what a cached identity cannot see):

* content changed while size and mtime stay the same: ``os.utime`` restores the mtime but moves
  ``ctime`` to now, which is part of the key, so this needs writing the disk below the file
  system, or changing the clock. With trusted keys the manifest's signature is still checked on
  every load; the cache only vouches that *these files* hashed to the signed digests;
* file systems with coarse timestamps (FAT: 2 s, some network mounts): a file is cached only once
  its mtime is :data:`SETTLE_S` seconds old, so a rewrite within the same timestamp tick cannot
  keep a stale entry ("racy" entries, as git calls them); a just-exported bundle is therefore
  hashed in full on loads in its first seconds;
* anyone who can write ``$SIMBRIDGE_CACHE`` can vouch for any file. Use a cache directory only
  the robot user can write (the default is in its home).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simbridge.deploy.manifest import MANIFEST_NAME, BundleError

__all__ = ["SETTLE_S", "cache_enabled", "cache_file", "cache_root", "check_files"]

log = logging.getLogger(__name__)

#: A file enters the cache only when its mtime is at least this old (see "racy" above).
SETTLE_S = 2.0
_FORMAT = "simbridge-checksum-cache/1"


def cache_root() -> Path:
    """``$SIMBRIDGE_CACHE``, else ``~/.cache/simbridge`` (also home of the TensorRT engine cache)."""
    return Path(os.environ.get("SIMBRIDGE_CACHE") or Path.home() / ".cache" / "simbridge")


def cache_enabled() -> bool:
    return os.environ.get("SIMBRIDGE_HASH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_file(bundle_dir: str | Path) -> Path:
    """Where the verified checksums of ``bundle_dir`` are kept."""
    key = hashlib.sha256(str(Path(bundle_dir).resolve()).encode()).hexdigest()[:32]
    return cache_root() / "verified" / f"{key}.json"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load(bundle_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file(bundle_dir).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("bundle") != str(bundle_dir):
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _store(bundle_dir: Path, files: dict[str, Any]) -> None:
    path = cache_file(bundle_dir)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as f:
            json.dump({"format": _FORMAT, "bundle": str(bundle_dir), "files": files}, f)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home, a full disk: verification itself is unaffected
        log.debug("checksum cache %s not written: %s", path, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def check_files(
    bundle_dir: Path,
    files: Mapping[str, Mapping[str, Any]],
    hash_file: Callable[[Path], str],
    use_cache: bool = True,
) -> int:
    """Check every file the manifest lists (present, its size, its sha256 via ``hash_file``),
    reading only the files whose identity changed since they last verified. Returns how many files
    were hashed. Raises :class:`BundleError` naming the missing, truncated or modified file."""
    use_cache = use_cache and cache_enabled()
    cached = _load(bundle_dir) if use_cache else {}
    verified: dict[str, Any] = {}
    hashed = 0
    for name, entry in files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(
                f"bundle file {path} is missing (listed in {MANIFEST_NAME}); re-export the bundle"
            )
        st = path.stat()
        size = st.st_size
        if size != entry["bytes"]:
            kind = "truncated" if size < entry["bytes"] else "larger than exported"
            raise BundleError(
                f"bundle file {path} is {kind}: {size} bytes, the manifest says {entry['bytes']}; "
                "copy the bundle again or re-export it"
            )
        identity = _identity(st)
        hit = cached.get(name)
        if isinstance(hit, dict) and hit.get("stat") == identity and hit.get("sha256") == entry["sha256"]:
            verified[name] = hit
            continue
        digest = hash_file(path)
        hashed += 1
        if digest != entry["sha256"]:
            raise BundleError(
                f"bundle file {path} was modified: sha256 {digest[:16]}... does not match the manifest's "
                f"{entry['sha256'][:16]}...; copy the bundle again or re-export it"
            )
        settled = st.st_mtime_ns < time.time_ns() - int(SETTLE_S * 1e9)
        if settled and _identity(path.stat()) == identity:  # and not rewritten while it was read
            verified[name] = {"stat": identity, "sha256": digest}
    if use_cache and verified != cached:
        _store(bundle_dir, verified)
    if files:
        log.info("bundle %s: %d of %d file(s) hashed, %d unchanged since verified (checksum cache)",
                 bundle_dir.name, hashed, len(files), len(files) - hashed)  # fmt: skip
    return hashed
