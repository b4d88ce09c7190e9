"""Policy bundles on disk: checksums, signatures, verification and atomic writes.

A bundle is a self-contained directory that the robot runtime loads without torch::

    <bundle>/
        manifest.json    what the policy expects and emits (see below); written last
        manifest.sig     optional: ed25519 signature of manifest.json (simbridge.deploy.signing)
        policy.onnx      the network (one graph: parallel decoding, or an unrolled greedy loop)
        tokenizer.json   the instruction tokenizer (run with the ``tokenizers`` library)

``manifest.json`` holds the schema version, the :class:`~simbridge.data.spec.PolicyContract`
(``contract``), how each camera image and the proprio vector are preprocessed
(``observation``), how the instruction is tokenized (``instruction``), the action space with
its de-normalization statistics, chunk size and control rate (``action``), the ONNX model's
inputs and outputs (``model``), the source checkpoint and its hash (``source``), the
torch-vs-ONNX-Runtime parity report (``parity``) and the sha256 and size of every other file
(``files``). ``bundle_id`` is the sha256 of the manifest's canonical JSON without that field,
so editing the manifest or any file it lists is detected by :func:`verify_bundle`, which hashes a
file again only when its size, mtime or ctime changed (:mod:`simbridge.deploy.bundle_cache`). The schema
and the strict parser live in :mod:`simbridge.deploy.manifest`, its checks in
:mod:`simbridge.deploy.manifest_validation` (re-exported here).

Checksums catch accidents, not intent: whoever swaps a file can re-hash the manifest. Against
that, bundles are signed at export (``simbridge export --sign KEY``) and the robot passes its
trusted public keys (``trusted_keys=``) to :func:`verify_bundle` / :func:`check_bundle` /
``BundlePolicy``: then only a bundle whose ``manifest.sig`` verifies with one of them loads.
Without trusted keys, signatures are not checked.

An export directory (watch mode) holds one bundle per checkpoint plus a ``latest`` pointer
(a relative symlink, or a one-line text file where symlinks are unavailable) that
:func:`resolve_bundle` follows. Bundles are written with :class:`BundleWriter`: files go to a
hidden temporary directory that is renamed into place only after the manifest is complete
and verifies, so a reader never sees a half-written bundle and a failed export leaves nothing.

No torch, no onnxruntime here: this module is plain Python + numpy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simbridge.data.spec import SCHEMA_VERSION, PolicyContract
from simbridge.deploy.bundle_cache import check_files
from simbridge.deploy.manifest import (  # re-exported: the schema used to live here
    BUNDLE_FORMAT,
    CAMERA_FIELDS,
    DECODINGS,
    MANIFEST_NAME,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    BundleError,
    canonical_json,
    compute_bundle_id,
    parse_manifest,
)
from simbridge.deploy.manifest_validation import validate_manifest
from simbridge.deploy.signing import SIGNATURE_NAME

__all__ = [
    "BUNDLE_FORMAT",
    "CAMERA_FIELDS",
    "DECODINGS",
    "LATEST_NAME",
    "MANIFEST_NAME",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "SIGNATURE_NAME",
    "BundleError",
    "BundleInfo",
    "BundleWriter",
    "canonical_json",
    "check_bundle",
    "compute_bundle_id",
    "file_entries",
    "finalize_manifest",
    "hash_tree",
    "iter_bundles",
    "parse_manifest",
    "read_manifest",
    "resolve_bundle",
    "sha256_file",
    "update_latest",
    "validate_manifest",
    "verify_bundle",
]

LATEST_NAME = "latest"
#: Files of a bundle that ``files`` cannot list: the manifest itself and its signature.
UNLISTED = (MANIFEST_NAME, SIGNATURE_NAME)


# --- hashing ------------------------------------------------------------------------------


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: str | Path) -> str:
    """sha256 over every regular file under ``root`` (relative path + content), order-independent
    of the file system: the identity of a checkpoint directory."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def file_entries(bundle_dir: str | Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` for ``names`` (default: every file but the manifest and
    its signature)."""
    bundle_dir = Path(bundle_dir)
    if names is None:
        names = sorted(
            p.relative_to(bundle_dir).as_posix()
            for p in bundle_dir.rglob("*")
            if p.is_file() and p.relative_to(bundle_dir).as_posix() not in UNLISTED
        )
    return {
        n: {"sha256": sha256_file(bundle_dir / n), "bytes": (bundle_dir / n).stat().st_size} for n in names
    }


# --- reading and verification -------------------------------------------------------------


def _manifest_bytes(bundle_dir: str | Path) -> bytes:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist; export one with 'simbridge export'")
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: {bundle_dir} is not a complete bundle (an interrupted export?); re-export it"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Parse ``manifest.json`` strictly (see :func:`parse_manifest`); no schema checks."""
    return parse_manifest(_manifest_bytes(bundle_dir), where=str(Path(bundle_dir) / MANIFEST_NAME))


@dataclass(frozen=True)
class BundleInfo:
    """A bundle that passed :func:`check_bundle`."""

    path: Path  # the resolved bundle directory: pass this on, so a moving `latest` changes nothing
    manifest: dict[str, Any]
    contract: PolicyContract
    signer: str | None  # fingerprint of the trusted key that signed it; None when no keys are configured
    files_hashed: int = 0  # files read and hashed by this check (the others verified unchanged before)

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    def summary(self) -> str:
        signed = f"signed by {self.signer}" if self.signer else "checksums only (no trusted keys configured)"
        return f"bundle {self.bundle_id} ({self.manifest['family']}) at {self.path}: verified, {signed}"


def _verify(bundle_dir: Path, trusted_keys: Sequence[Any], use_cache: bool = True) -> BundleInfo:
    where = str(bundle_dir / MANIFEST_NAME)
    data = _manifest_bytes(bundle_dir)
    signer = None
    if isinstance(trusted_keys, (str, Path)):  # one key given where a list was meant
        trusted_keys = [trusted_keys]
    if trusted_keys:
        from simbridge.deploy.signing import trusted_key_set, verify_signature

        # Before parsing: the bytes checked are the bytes parsed, and nothing unsigned is interpreted.
        signer = verify_signature(bundle_dir, data, trusted_key_set(trusted_keys))
    manifest = parse_manifest(data, where=where)
    contract = validate_manifest(manifest, where=where)
    expected_id = compute_bundle_id(manifest)
    if manifest["bundle_id"] != expected_id:
        raise BundleError(
            f"{where} was modified after export (its content hash is {expected_id}, field 'bundle_id' says "
            f"{manifest['bundle_id']:.40}); re-export the checkpoint instead of editing the manifest"
        )
    # Only files whose size / mtime / ctime changed since they last verified are read again.
    # (A lambda: sha256_file is looked up at call time, so a test can count the calls.)
    hashed = check_files(bundle_dir, manifest["files"], lambda p: sha256_file(p), use_cache)
    return BundleInfo(path=bundle_dir, manifest=manifest, contract=contract, signer=signer, files_hashed=hashed)


def verify_bundle(
    bundle_dir: str | Path, trusted_keys: Sequence[Any] = (), *, use_cache: bool = True
) -> dict[str, Any]:
    """Full check of a bundle: manifest (strict JSON, structure), ``bundle_id``, every file's size
    and sha256 and, when ``trusted_keys`` (public-key PEM paths or loaded ed25519 keys) are
    given, ``manifest.sig``: the bundle must be signed by one of them. A file unchanged (size,
    mtime, ctime, inode) since it last verified is not hashed again unless ``use_cache=False``
    (:mod:`simbridge.deploy.bundle_cache`: where the cache lives and what it cannot see).

    Returns the manifest. Raises :class:`BundleError` naming the missing, truncated or tampered
    file, the missing or untrusted signature, the unknown schema version or the bad field.
    """
    return _verify(Path(bundle_dir), trusted_keys, use_cache).manifest


def check_bundle(path: str | Path, trusted_keys: Sequence[Any] = (), *, use_cache: bool = True) -> BundleInfo:
    """Everything the robot runtime checks before it runs a bundle, without onnxruntime: resolves
    ``path`` (a bundle, an export directory with ``latest``, or the pointer), then
    :func:`verify_bundle` (manifest, checksums, parity record, signature when ``trusted_keys``
    are given). For CLIs, to refuse a bad bundle before starting anything."""
    return _verify(resolve_bundle(path), trusted_keys, use_cache)


def finalize_manifest(manifest: dict[str, Any], bundle_dir: str | Path) -> dict[str, Any]:
    """Fill ``format``, ``schema_version``, ``files`` (hashing every file) and ``bundle_id``."""
    out = dict(manifest)
    out["format"] = BUNDLE_FORMAT
    out["schema_version"] = SCHEMA_VERSION
    out["files"] = file_entries(bundle_dir)
    out.pop("bundle_id", None)
    out["bundle_id"] = compute_bundle_id(out)
    return out


# --- writing ------------------------------------------------------------------------------


class BundleWriter:
    """Write a bundle atomically: stage files in a hidden sibling directory, rename on commit.

        with BundleWriter(dest) as w:
            (w.path / "policy.onnx").write_bytes(...)
            w.commit(manifest)          # hashes files, writes manifest.json, verifies, renames

    ``commit(manifest, signing_key=...)`` (an ed25519 private key or its PEM path) also writes
    ``manifest.sig`` before the rename, so a signed bundle never appears unsigned. Leaving the block without :meth:`commit` (or with an exception) deletes the staging
    directory, so a failed export leaves nothing behind. ``overwrite=True`` replaces an
    existing bundle at ``dest`` (the old one is moved aside first, then deleted).
    """

    def __init__(self, dest: str | Path, overwrite: bool = False) -> None:
        self.dest = Path(dest).absolute()
        self.overwrite = overwrite
        self.path: Path | None = None
        self.committed = False
        self.manifest: dict[str, Any] | None = None

    def __enter__(self) -> BundleWriter:
        if self.dest.exists() and not self.overwrite:
            raise BundleError(f"{self.dest} already exists; choose another output directory or pass --force")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        # Same parent directory: the final rename stays on one file system, hence atomic.
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        return self

    def commit(self, manifest: dict[str, Any], signing_key: Any = None) -> Path:
        assert self.path is not None, "use BundleWriter as a context manager"
        final = finalize_manifest(manifest, self.path)
        tmp_manifest = self.path / (MANIFEST_NAME + ".tmp")
        tmp_manifest.write_text(json.dumps(final, indent=2, allow_nan=False))
        os.replace(tmp_manifest, self.path / MANIFEST_NAME)
        trusted: list[Any] = []
        if signing_key is not None:
            from simbridge.deploy.signing import load_private_key, sign_bundle

            if isinstance(signing_key, (str, Path)):
                signing_key = load_private_key(signing_key)
            sign_bundle(self.path, signing_key)
            trusted.append(signing_key.public_key())  # verified as the robot will
        verify_bundle(self.path, trusted_keys=trusted, use_cache=False)  # fresh files: hash them all
        _fsync_dir(self.path)
        if self.dest.exists():
            # Only reachable with overwrite=True: swap in two renames, then drop the old bundle.
            old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old-", dir=self.dest.parent))
            os.rename(self.dest, old / "bundle")
            os.rename(self.path, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.dest)
        _fsync_dir(self.dest.parent)
        self.committed = True
        self.manifest = final
        return self.dest

    def __exit__(self, *exc: object) -> None:
        if not self.committed and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- the `latest` pointer -----------------------------------------------------------------


def update_latest(export_dir: str | Path, bundle_name: str) -> Path:
    """Point ``<export_dir>/latest`` at ``<export_dir>/<bundle_name>`` atomically (readers see the
    old or the new bundle, never neither). A relative symlink where possible, else a text file."""
    export_dir = Path(export_dir)
    if not (export_dir / bundle_name / MANIFEST_NAME).is_file():
        raise BundleError(f"cannot point 'latest' at {export_dir / bundle_name}: it is not a complete bundle")
    latest = export_dir / LATEST_NAME
    tmp = export_dir / f".{LATEST_NAME}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.symlink(bundle_name, tmp, target_is_directory=True)
    except OSError:  # no symlinks (some Windows setups, some network file systems)
        tmp.write_text(bundle_name + "\n")
    if latest.is_dir() and not latest.is_symlink():
        tmp.unlink()
        raise BundleError(f"{latest} is a directory, not a pointer; remove or rename it")
    os.replace(tmp, latest)
    return latest


def resolve_bundle(path: str | Path) -> Path:
    """The bundle directory that ``path`` means: a bundle itself, an export directory (follows
    its ``latest`` pointer), or a ``latest`` pointer. Returns the real path of the bundle, so a
    caller keeps the same bundle even when ``latest`` moves on."""
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return path.resolve()
    pointer = path / LATEST_NAME if path.is_dir() and not path.is_symlink() else path
    if pointer.is_symlink():
        target = pointer.resolve()
        if not (target / MANIFEST_NAME).is_file():
            raise BundleError(f"{pointer} points at {target}, which is not a bundle (deleted?); re-export")
        return target
    if pointer.is_file() and pointer.name == LATEST_NAME:
        name = pointer.read_text().strip()
        target = (pointer.parent / name).resolve()
        if not name or not (target / MANIFEST_NAME).is_file():
            raise BundleError(
                f"{pointer} names {name!r}, which is not a bundle in {pointer.parent}; re-export"
            )
        return target
    if not path.exists():
        raise BundleError(
            f"bundle path {path} does not exist; export one with 'simbridge export <checkpoint> -o {path}'"
        )
    raise BundleError(
        f"{path / MANIFEST_NAME} is missing: {path} is neither a complete bundle (an interrupted copy or "
        f"export?) nor an export directory with a '{LATEST_NAME}' pointer; re-export the checkpoint"
    )


def iter_bundles(export_dir: str | Path) -> Iterator[Path]:
    """Complete bundles directly inside an export directory (staging directories excluded)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return
    for p in sorted(export_dir.iterdir()):
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file():
            yield p
