"""The checksum cache: a bundle's files are hashed once per change, not on every load.

Hand-made bundles (test_bundle.py's writer) with a multi-MB model file; hashing is counted by
wrapping ``simbridge.deploy.bundle.sha256_file``. Every test has its own cache directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_bundle import write_bundle  # tests/deploy is on sys.path (pytest's rootdir-less import)

import simbridge.deploy.bundle as bundle_mod
from simbridge.deploy.bundle import BundleError, check_bundle, verify_bundle
from simbridge.deploy.bundle_cache import SETTLE_S, cache_file

MODEL = os.urandom(1 << 20) * 8  # 8 MiB: hashing it is measurable


@pytest.fixture
def hashed(monkeypatch, tmp_path: Path) -> list[str]:
    """The names of the files sha256_file reads, in order; the cache lives in tmp_path/cache."""
    monkeypatch.setenv("SIMBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SIMBRIDGE_HASH_CACHE", raising=False)
    calls: list[str] = []
    real = bundle_mod.sha256_file

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bundle_mod, "sha256_file", counting)
    return calls


def settled_bundle(dest: Path) -> Path:
    """A bundle whose files were last written a minute ago (the cache takes only settled files)."""
    bundle = write_bundle(dest, model=MODEL)
    old = time.time() - 60
    for f in bundle.iterdir():
        os.utime(f, (old, old))
    return bundle


def test_second_load_skips_hashing(hashed: list[str], tmp_path: Path) -> None:
    bundle = settled_bundle(tmp_path / "b")
    hashed.clear()  # the writer's own verification
    t0 = time.perf_counter()
    assert check_bundle(bundle).files_hashed == 2
    first = time.perf_counter() - t0
    assert sorted(hashed) == ["policy.onnx", "tokenizer.json"]
    t0 = time.perf_counter()
    info = check_bundle(bundle)
    second = time.perf_counter() - t0
    assert info.files_hashed == 0 and sorted(hashed) == ["policy.onnx", "tokenizer.json"]  # no new reads
    print(f"8 MiB bundle: first load {first * 1e3:.1f} ms, second {second * 1e3:.1f} ms")
    # Kept outside the bundle (whoever can write the bundle must not be able to vouch for it).
    assert cache_file(bundle).is_file() and cache_file(bundle).is_relative_to(tmp_path / "cache")
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "policy.onnx", "tokenizer.json"]
    assert os.stat(cache_file(bundle)).st_mode & 0o077 == 0
    # Hashing everything is still one argument away.
    hashed.clear()
    verify_bundle(bundle, use_cache=False)
    assert sorted(hashed) == ["policy.onnx", "tokenizer.json"]


def test_a_modified_file_is_still_caught(hashed: list[str], tmp_path: Path) -> None:
    bundle = settled_bundle(tmp_path / "b")
    check_bundle(bundle)
    model = bundle / "policy.onnx"
    before = model.stat()
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size
    model.write_bytes(bytes(data))
    hashed.clear()
    with pytest.raises(BundleError, match=r"policy\.onnx was modified: sha256"):
        check_bundle(bundle)
    assert hashed == ["policy.onnx"]  # only the changed file was read again
    # Size and mtime put back as they were: the ctime moved, so it is hashed and caught all the same.
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(BundleError, match=r"policy\.onnx was modified"):
        check_bundle(bundle)
    model.write_bytes(MODEL[:-1])  # and a changed size, before any hashing
    with pytest.raises(BundleError, match=r"policy\.onnx is truncated"):
        check_bundle(bundle)


def test_fresh_files_are_not_cached(hashed: list[str], tmp_path: Path) -> None:
    """A file written in the last SETTLE_S seconds could change again within its timestamp tick."""
    bundle = write_bundle(tmp_path / "b", model=MODEL)
    assert time.time() - (bundle / "policy.onnx").stat().st_mtime < SETTLE_S
    check_bundle(bundle)
    hashed.clear()
    assert check_bundle(bundle).files_hashed == 2


def test_a_broken_or_unwritable_cache_changes_nothing(hashed: list[str], monkeypatch, tmp_path: Path) -> None:
    bundle = settled_bundle(tmp_path / "b")
    check_bundle(bundle)
    cache_file(bundle).write_text("{not json")
    assert check_bundle(bundle).files_hashed == 2  # ignored, then rewritten
    assert check_bundle(bundle).files_hashed == 0
    entry = json.loads(cache_file(bundle).read_text())
    entry["files"]["policy.onnx"]["sha256"] = "0" * 64  # a cache entry that does not match the manifest
    cache_file(bundle).write_text(json.dumps(entry))
    assert check_bundle(bundle).files_hashed == 1
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SIMBRIDGE_CACHE", str(tmp_path / "a-file"))  # cannot hold a directory
    assert check_bundle(bundle).files_hashed == 2
    monkeypatch.setenv("SIMBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMBRIDGE_HASH_CACHE", "0")
    assert check_bundle(bundle).files_hashed == 2
