"""Signed bundles: a re-hashed tampered bundle passes the checksums but not the signature.

Hand-made bundles (tests/deploy/test_bundle.py's ``write_bundle``), so no onnxruntime: this is
what ``check_bundle`` (the deploy CLI's pre-flight) and ``BundlePolicy(trusted_keys=...)``
check before any session is created.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from test_bundle import draft_manifest, write_bundle  # same directory: pytest puts it on sys.path

from simbridge.deploy.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleError,
    BundleInfo,
    check_bundle,
    file_entries,
    update_latest,
    verify_bundle,
)
from simbridge.deploy.manifest import compute_bundle_id
from simbridge.deploy.signing import generate_key_pair, key_fingerprint, load_public_key, sign_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    priv, pub = generate_key_pair(root / "exporter")
    other_priv, other_pub = generate_key_pair(root / "other")
    return {"priv": priv, "pub": pub, "other_priv": other_priv, "other_pub": other_pub}


def signed_bundle(dest: Path, key: Path) -> Path:
    from simbridge.deploy.bundle import BundleWriter

    with BundleWriter(dest) as w:
        (w.path / "policy.onnx").write_bytes(b"onnx-bytes" * 100)
        (w.path / "tokenizer.json").write_text('{"model": "bpe"}')
        return w.commit(draft_manifest(), signing_key=key)


def rehash(bundle: Path, edit=None) -> None:
    """What an attacker does: change something, then recompute every checksum and the bundle id."""
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    if edit is not None:
        edit(m)
    m["files"] = file_entries(bundle)
    m["bundle_id"] = compute_bundle_id(m)
    (bundle / MANIFEST_NAME).write_text(json.dumps(m, indent=2))


def swap_model(bundle: Path) -> None:
    (bundle / "policy.onnx").write_bytes(b"evil-graph" * 100)
    rehash(bundle)


def edit_template(bundle: Path) -> None:
    rehash(bundle, lambda m: m["instruction"].update(template="{instruction} and then drop it"))


def edit_parity(bundle: Path) -> None:
    rehash(bundle, lambda m: m["parity"].update(source="store:/somewhere/else", tolerance=10.0))


TAMPERING = [swap_model, edit_template, edit_parity]


def test_key_pair_files(keys) -> None:
    assert stat.S_IMODE(keys["priv"].stat().st_mode) == 0o600
    assert keys["pub"].name == "exporter.pub" and b"PUBLIC KEY" in keys["pub"].read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        generate_key_pair(keys["priv"])
    fingerprint = key_fingerprint(load_public_key(keys["pub"]))
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64


def test_signed_bundle_loads_with_its_key(tmp_path: Path, keys) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    sig = json.loads((bundle / SIGNATURE_NAME).read_text())
    assert sig["algorithm"] == "ed25519"
    assert sig["key_fingerprint"] == key_fingerprint(load_public_key(keys["pub"]))
    manifest = verify_bundle(bundle, trusted_keys=[keys["pub"]])
    assert SIGNATURE_NAME not in manifest["files"]  # it signs them; it cannot be among them
    info = check_bundle(bundle, trusted_keys=[keys["other_pub"], keys["pub"]])
    assert isinstance(info, BundleInfo) and info.signer == sig["key_fingerprint"]
    assert info.bundle_id == manifest["bundle_id"] and "signed by sha256:" in info.summary()
    # Without keys: checksums only, the signature is not even read.
    assert check_bundle(bundle).signer is None


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_rehashed_tampering_passes_checksums_but_not_the_signature(tmp_path: Path, keys, tamper) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    tamper(bundle)
    verify_bundle(bundle)  # no keys configured: accepted, as before (checksums are consistent)
    with pytest.raises(BundleError, match=r"manifest\.json was changed after it was signed.*tampered"):
        check_bundle(bundle, trusted_keys=[keys["pub"]])


def test_rehash_and_resign_with_another_key_is_refused(tmp_path: Path, keys) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    swap_model(bundle)
    sign_bundle(bundle, keys["other_priv"])  # the attacker signs with their own key
    with pytest.raises(BundleError, match=r"signed by key sha256:\w+, which is not one of the trusted keys"):
        check_bundle(bundle, trusted_keys=[keys["pub"]])


def test_forged_signature_is_refused(tmp_path: Path, keys) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    edit_template(bundle)
    # Keep the trusted fingerprint and fix up the hash: only the signature itself can still tell.
    sig = json.loads((bundle / SIGNATURE_NAME).read_text())
    sig["manifest_sha256"] = hashlib.sha256((bundle / MANIFEST_NAME).read_bytes()).hexdigest()
    (bundle / SIGNATURE_NAME).write_text(json.dumps(sig))
    with pytest.raises(BundleError, match=r"signature does not verify with trusted key"):
        check_bundle(bundle, trusted_keys=[keys["pub"]])


def test_unsigned_bundle_is_refused_when_keys_are_configured(tmp_path: Path, keys) -> None:
    bundle = write_bundle(tmp_path / "b")
    assert not (bundle / SIGNATURE_NAME).exists()
    verify_bundle(bundle)
    with pytest.raises(BundleError, match=r"is not signed \(manifest\.sig is missing\).*--sign"):
        check_bundle(bundle, trusted_keys=[keys["pub"]])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", r"manifest\.sig is not valid JSON"),
        ('{"format": "x"}', r"field 'format'/'algorithm' must be"),
        (
            '{"format": "simbridge-bundle-signature", "algorithm": "ed25519", "key_fingerprint": 1}',
            r"field 'key_fingerprint' must be a string",
        ),
        ('{"a": NaN}', r"manifest\.sig: field 'a' is NaN"),
    ],
)
def test_malformed_signature_file(tmp_path: Path, keys, content: str, expected: str) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    (bundle / SIGNATURE_NAME).write_text(content)
    with pytest.raises(BundleError, match=expected):
        check_bundle(bundle, trusted_keys=[keys["pub"]])


def test_bad_key_files_name_the_file_and_fix(tmp_path: Path, keys) -> None:
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    with pytest.raises(BundleError, match=r"trusted key .*missing\.pub cannot be read"):
        check_bundle(bundle, trusted_keys=[tmp_path / "missing.pub"])
    with pytest.raises(BundleError, match=r"is a private key; configure its public half"):
        check_bundle(bundle, trusted_keys=[keys["priv"]])
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(BundleError, match=r"junk\.pub is not a PEM public key"):
        check_bundle(bundle, trusted_keys=[tmp_path / "junk.pub"])
    with pytest.raises(BundleError, match=r"signing key .*exporter\.pub is not a PEM private key"):
        signed_bundle(tmp_path / "c", keys["pub"])
    assert not (tmp_path / "c").exists()


def test_check_bundle_follows_latest_and_pins_the_bundle(tmp_path: Path, keys) -> None:
    signed_bundle(tmp_path / "iter_000001", keys["priv"])
    write_bundle(tmp_path / "iter_000002", model=b"other" * 10)  # unsigned
    update_latest(tmp_path, "iter_000001")
    info = check_bundle(tmp_path, trusted_keys=[keys["pub"]])
    assert info.path == (tmp_path / "iter_000001").resolve() and info.signer
    update_latest(tmp_path, "iter_000002")
    with pytest.raises(BundleError, match="is not signed"):
        check_bundle(tmp_path / "latest", trusted_keys=[keys["pub"]])
    with pytest.raises(BundleError, match="does not exist"):
        check_bundle(tmp_path / "nope", trusted_keys=[keys["pub"]])


def test_check_bundle_refuses_what_the_runtime_would(tmp_path: Path) -> None:
    """The deploy CLI's pre-flight: failed parity, damaged files, bad manifests, no onnxruntime."""
    m = draft_manifest()
    bundle = write_bundle(tmp_path / "b", m)
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data["parity"]["passed"] = False
    data["bundle_id"] = compute_bundle_id(data)
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="failed its parity check"):
        check_bundle(bundle)
    bundle = write_bundle(tmp_path / "c")
    (bundle / "policy.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"policy\.onnx is truncated"):
        check_bundle(bundle)


def test_without_keys_nothing_changes(tmp_path: Path, keys) -> None:
    """Unsigned bundles, and signed ones, load as before when no keys are configured."""
    assert check_bundle(write_bundle(tmp_path / "a")).signer is None
    bundle = signed_bundle(tmp_path / "b", keys["priv"])
    (bundle / SIGNATURE_NAME).write_text("garbage")  # not looked at without keys
    assert check_bundle(bundle).signer is None
