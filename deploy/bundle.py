"""Policy bundles on disk: the manifest schema, checksums, verification and atomic writes.

A bundle is a self-contained directory that the robot runtime loads without torch::

    <bundle>/
        manifest.json    what the policy expects and emits (see below); written last
        policy.onnx      the network (one graph: parallel decoding, or an unrolled greedy loop)
        tokenizer.json   the instruction tokenizer (run with the ``tokenizers`` library)

``manifest.json`` holds the schema version, the :class:`~simbridge.data.spec.PolicyContract`
(``contract``), how each camera image and the proprio vector are preprocessed
(``observation``), how the instruction is tokenized (``instruction``), the action space with
its de-normalization statistics, chunk size and control rate (``action``), the ONNX model's
inputs and outputs (``model``), the source checkpoint and its hash (``source``), the
torch-vs-ONNX-Runtime parity report (``parity``) and the sha256 and size of every other file
(``files``). ``bundle_id`` is the sha256 of the manifest's canonical JSON without that field,
so editing the manifest or any file it lists is detected by :func:`verify_bundle`.

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from simbridge.data.spec import SCHEMA_VERSION, ContractError, PolicyContract, check_schema_version

BUNDLE_FORMAT = "simbridge-policy-bundle"
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest"

#: Fields every manifest must have, as dotted paths, with their JSON types.
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "schema_version": int,
    "bundle_id": str,
    "family": str,
    "contract": dict,
    "observation": dict,
    "observation.cameras": list,
    "observation.proprio": dict,
    "observation.proprio.enabled": bool,
    "observation.proprio.dim": int,
    "instruction": dict,
    "instruction.tokenizer": str,
    "instruction.max_length": int,
    "instruction.pad_token_id": int,
    "action": dict,
    "action.dim": int,
    "action.chunk_size": int,
    "action.control_rate_hz": (int, float),
    "action.num_bins": int,
    "action.normalization": dict,
    "model": dict,
    "model.file": str,
    "model.decoding": str,
    "model.inputs": dict,
    "model.outputs": dict,
    "source": dict,
    "source.checkpoint_sha256": str,
    "parity": dict,
    "parity.passed": bool,
    "files": dict,
}

#: Per-camera preprocessing fields (``observation.cameras[i]``).
CAMERA_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "height": int,
    "width": int,
    "dtype": str,
    "layout": str,
    "channel_order": str,
    "resize": list,
    "interpolation": str,
    "scale": (int, float),
    "mean": list,
    "std": list,
}

DECODINGS = ("parallel", "autoregressive-unrolled")


class BundleError(ContractError):
    """A bundle is missing, incomplete, corrupted or incompatible. The message names the file or
    field and says how to fix it (usually: re-export the checkpoint with ``simbridge export``)."""


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


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_bundle_id(manifest: Mapping[str, Any]) -> str:
    """Content hash of the manifest without its ``bundle_id`` (16 hex digits)."""
    body = {k: v for k, v in manifest.items() if k != "bundle_id"}
    return hashlib.sha256(canonical_json(body)).hexdigest()[:16]


def file_entries(bundle_dir: str | Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` for ``names`` (default: every file but the manifest)."""
    bundle_dir = Path(bundle_dir)
    if names is None:
        names = sorted(
            p.relative_to(bundle_dir).as_posix()
            for p in bundle_dir.rglob("*")
            if p.is_file() and p.name != MANIFEST_NAME
        )
    return {
        n: {"sha256": sha256_file(bundle_dir / n), "bytes": (bundle_dir / n).stat().st_size} for n in names
    }


# --- validation ---------------------------------------------------------------------------


def _get(manifest: Mapping[str, Any], dotted: str) -> Any:
    node: Any = manifest
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _type_name(t: type | tuple[type, ...]) -> str:
    types = t if isinstance(t, tuple) else (t,)
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}
    return " or ".join(names.get(x, x.__name__) for x in types)


def _check_type(value: Any, expected: type | tuple[type, ...], where: str) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    # JSON has no int/bool distinction problems except bool being an int in Python.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise BundleError(
            f"{where}: expected {_type_name(expected)}, got {type(value).__name__} {value!r:.80}"
        )


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> PolicyContract:
    """Check the manifest's structure and internal consistency; return its contract.

    Raises :class:`BundleError` naming the first bad field (``manifest.json: field 'x.y' ...``).
    Does not touch the other files (see :func:`verify_bundle`).
    """
    if not isinstance(manifest, Mapping):
        raise BundleError(f"{where}: expected a JSON object at the top level, got {type(manifest).__name__}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: field 'format' is {manifest.get('format')!r}, expected {BUNDLE_FORMAT!r}; "
            "this is not a SimBridge policy bundle"
        )
    version = manifest.get("schema_version")
    _check_type(version, int, f"{where}: field 'schema_version'")
    try:
        check_schema_version(version, what=f"{where} (field 'schema_version')")
    except ContractError as exc:
        raise BundleError(str(exc)) from None
    for dotted, expected in REQUIRED_FIELDS.items():
        try:
            value = _get(manifest, dotted)
        except KeyError:
            raise BundleError(
                f"{where}: required field {dotted!r} is missing; re-export the checkpoint with 'simbridge export'"
            ) from None
        _check_type(value, expected, f"{where}: field {dotted!r}")

    try:
        contract = PolicyContract.from_dict(manifest["contract"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: field 'contract' is not a valid policy contract: {exc!r}") from None

    cams = manifest["observation"]["cameras"]
    for i, cam in enumerate(cams):
        if not isinstance(cam, Mapping):
            raise BundleError(f"{where}: field 'observation.cameras[{i}]' must be an object")
        for key, expected in CAMERA_FIELDS.items():
            if key not in cam:
                raise BundleError(f"{where}: required field 'observation.cameras[{i}].{key}' is missing")
            _check_type(cam[key], expected, f"{where}: field 'observation.cameras[{i}].{key}'")
        if cam["dtype"] != "uint8" or cam["layout"] != "HWC" or cam["channel_order"] != "RGB":
            raise BundleError(
                f"{where}: field 'observation.cameras[{i}]' must take uint8 HWC RGB images (the contract's "
                f"format), got {cam['dtype']} {cam['layout']} {cam['channel_order']}"
            )
        if len(cam["resize"]) != 2 or len(cam["mean"]) != 3 or len(cam["std"]) != 3:
            raise BundleError(
                f"{where}: field 'observation.cameras[{i}]': resize needs [h, w], mean/std 3 values"
            )
        if any(float(s) <= 0 for s in cam["std"]):
            raise BundleError(f"{where}: field 'observation.cameras[{i}].std' must be positive")
    names = [c["name"] for c in cams]
    if names != list(contract.observation.camera_names):
        raise BundleError(
            f"{where}: field 'observation.cameras' lists cameras {names} but field 'contract' expects "
            f"{list(contract.observation.camera_names)}"
        )
    for cam in cams:
        spec = contract.observation.camera(cam["name"])
        if (cam["height"], cam["width"]) != (spec.height, spec.width):
            raise BundleError(
                f"{where}: camera {cam['name']!r} is {cam['height']}x{cam['width']} in field 'observation.cameras' "
                f"but {spec.height}x{spec.width} in field 'contract'"
            )
    if manifest["action"]["chunk_size"] != contract.chunk_size:
        raise BundleError(
            f"{where}: field 'action.chunk_size' ({manifest['action']['chunk_size']}) differs from "
            f"'contract.chunk_size' ({contract.chunk_size})"
        )
    if manifest["action"]["dim"] != 7:
        raise BundleError(
            f"{where}: field 'action.dim' must be 7 (the contract's action), got {manifest['action']['dim']}"
        )
    if manifest["model"]["decoding"] not in DECODINGS:
        raise BundleError(
            f"{where}: field 'model.decoding' is {manifest['model']['decoding']!r}; this SimBridge runs {list(DECODINGS)}"
        )
    if not manifest["parity"]["passed"]:
        raise BundleError(
            f"{where}: field 'parity.passed' is false: this bundle failed its parity check; do not run it"
        )
    for file_field in ("model.file", "instruction.tokenizer"):
        name = _get(manifest, file_field)
        if name not in manifest["files"]:
            raise BundleError(
                f"{where}: field {file_field!r} names {name!r}, which is not listed in field 'files'"
            )
    for name, entry in manifest["files"].items():
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"{where}: field 'files.{name}' needs a 'sha256' string and a 'bytes' integer")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{where}: field 'files' names {name!r}, which is outside the bundle")
    return contract


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Parse ``manifest.json`` (no checks beyond valid JSON)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist; export one with 'simbridge export'")
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: {bundle_dir} is not a complete bundle (an interrupted export?); re-export it"
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{path} is not valid JSON ({exc}): truncated or corrupted; re-export the bundle"
        ) from None


def verify_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """Full check of a bundle: manifest structure, ``bundle_id``, every file's size and sha256.

    Returns the manifest. Raises :class:`BundleError` naming the missing, truncated or tampered
    file, the unknown schema version or the bad field.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    where = str(bundle_dir / MANIFEST_NAME)
    validate_manifest(manifest, where=where)
    expected_id = compute_bundle_id(manifest)
    if manifest["bundle_id"] != expected_id:
        raise BundleError(
            f"{where} was modified after export (its content hash is {expected_id}, field 'bundle_id' says "
            f"{manifest['bundle_id']}); re-export the checkpoint instead of editing the manifest"
        )
    for name, entry in manifest["files"].items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(
                f"bundle file {path} is missing (listed in {MANIFEST_NAME}); re-export the bundle"
            )
        size = path.stat().st_size
        if size != entry["bytes"]:
            kind = "truncated" if size < entry["bytes"] else "larger than exported"
            raise BundleError(
                f"bundle file {path} is {kind}: {size} bytes, the manifest says {entry['bytes']}; "
                "copy the bundle again or re-export it"
            )
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise BundleError(
                f"bundle file {path} was modified: sha256 {digest[:16]}... does not match the manifest's "
                f"{entry['sha256'][:16]}...; copy the bundle again or re-export it"
            )
    return manifest


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

    Leaving the block without :meth:`commit` (or with an exception) deletes the staging
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

    def commit(self, manifest: dict[str, Any]) -> Path:
        assert self.path is not None, "use BundleWriter as a context manager"
        final = finalize_manifest(manifest, self.path)
        tmp_manifest = self.path / (MANIFEST_NAME + ".tmp")
        tmp_manifest.write_text(json.dumps(final, indent=2, allow_nan=False))
        os.replace(tmp_manifest, self.path / MANIFEST_NAME)
        verify_bundle(self.path)
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
