"""Watch mode: follow a training run's ``checkpoints/announce.jsonl``, export each announced
checkpoint to ``<export_dir>/<checkpoint-name>/`` and move ``<export_dir>/latest`` (the pointer
the robot side follows) to the newest iteration.

    from simbridge.deploy.export import watch
    watch("runs/ppo/<stamp>", "exports/ppo", max_exports=2)

Restarting is cheap: checkpoints already exported (same checkpoint hash, and signed by the
key when one is given) are skipped, and staging directories a killed exporter left are removed.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simbridge.deploy.bundle import BundleError, hash_tree, read_manifest, update_latest, verify_bundle
from simbridge.deploy.export.options import ExportError, ExportOptions
from simbridge.deploy.export.pipeline import export_checkpoint, load_signing_key

ANNOUNCE_FILE = "announce.jsonl"


def read_announcements(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``announce.jsonl`` after byte ``offset``; the new offset.

    A line still being written (no trailing newline yet) is left for the next poll; a line
    that is not valid JSON is reported and skipped.
    """
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    entries = []
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or "path" not in entry:
                raise ValueError("no 'path'")
            entries.append(entry)
        except ValueError as exc:
            print(f"[export] {path}: skipping malformed announcement {raw[:120]!r} ({exc})", file=sys.stderr)
    return entries, offset + end + 1


def _bundle_source_sha(bundle: Path) -> str | None:
    try:
        return read_manifest(bundle)["source"]["checkpoint_sha256"]
    except (BundleError, KeyError, TypeError):
        return None


def _signed_by(bundle: Path, key: Any) -> bool:
    """Whether ``bundle`` verifies with ``key``'s signature (True when no key is asked for)."""
    if key is None:
        return True
    try:
        verify_bundle(bundle, trusted_keys=[key.public_key()])
    except BundleError:
        return False
    return True


def remove_stale_staging(export_dir: Path) -> list[Path]:
    """Delete staging directories a killed exporter left behind (``.<name>.tmp-*``)."""
    removed = []
    if export_dir.is_dir():
        for p in export_dir.iterdir():
            if p.is_dir() and p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def watch(
    run_dir: str | Path,
    export_dir: str | Path,
    *,
    options: ExportOptions | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    max_exports: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Follow ``<run_dir>/checkpoints/announce.jsonl`` and export each announced checkpoint to
    ``<export_dir>/<checkpoint-name>/``, moving ``<export_dir>/latest`` to the newest iteration.

    Returns the bundles written. Stops after ``max_exports`` bundles or ``timeout_s`` seconds
    (runs until interrupted when both are None). A checkpoint whose export fails is reported
    and skipped; the watcher keeps going. Restarting a watcher skips checkpoints already
    exported (same checkpoint hash; with a signing key: and signed by it).

    Raises :class:`ExportError` before creating anything when ``run_dir`` does not exist (a
    typo would otherwise wait forever), :class:`BundleError` when the signing key is unusable.
    """
    say = log or (lambda msg: print(f"[export --watch] {msg}", file=sys.stderr, flush=True))
    run_dir, export_dir = Path(run_dir).absolute(), Path(export_dir).absolute()
    announce = run_dir / "checkpoints" / ANNOUNCE_FILE
    if not run_dir.is_dir():
        raise ExportError(
            f"run directory {run_dir} does not exist{' (it is a file)' if run_dir.exists() else ''}; "
            "pass the trainer's run directory (runs/<algo>/<stamp>, the one holding checkpoints/), "
            "or start the trainer first"
        )
    signing_key = load_signing_key(options or ExportOptions())
    export_dir.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_staging(export_dir):
        say(f"removed {p.name} left by an interrupted export")
    poll_s = max(0.05, float(poll_s))
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    offset, seen, written = 0, set(), []
    latest_iteration = -1
    if not announce.exists():
        say(f"waiting for {announce} (the trainer writes it with its first checkpoint)")
    while True:
        entries, offset = read_announcements(announce, offset)
        for entry in entries:
            ckpt = Path(entry["path"])
            ckpt = ckpt if ckpt.is_absolute() else run_dir / "checkpoints" / ckpt
            if ckpt.name in seen:
                continue
            seen.add(ckpt.name)
            iteration = int(entry.get("iteration", -1))
            dest = export_dir / ckpt.name
            try:
                if (
                    dest.exists()
                    and ckpt.is_dir()
                    and _bundle_source_sha(dest) == hash_tree(ckpt)
                    and _signed_by(dest, signing_key)
                ):
                    say(f"{ckpt.name}: already exported")
                else:
                    result = export_checkpoint(
                        ckpt, dest, options=options, overwrite=dest.exists(), progress=say
                    )
                    written.append(result.bundle)
                if iteration >= latest_iteration:
                    update_latest(export_dir, ckpt.name)
                    latest_iteration = iteration
                    say(f"latest -> {ckpt.name}")
            except (ExportError, BundleError, OSError, ValueError) as exc:
                say(f"{ckpt.name}: export failed, skipped: {exc}")
            if max_exports is not None and len(written) >= max_exports:
                return written
        if deadline is not None and time.monotonic() >= deadline:
            say(f"timeout after {timeout_s:g} s; {len(written)} bundle(s) written")
            return written
        remaining = poll_s if deadline is None else min(poll_s, max(0.0, deadline - time.monotonic()))
        time.sleep(remaining)
