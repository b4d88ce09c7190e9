"""Bundle signatures: ed25519 over ``manifest.json``, checked against the robot's trusted keys.

Checksums catch accidents (a truncated copy, a flipped bit); they do not stop someone who
swaps ``policy.onnx`` or edits the prompt template and then re-hashes the manifest. A
signature does: the exporter signs the manifest's exact bytes (which hold the sha256 of every
other file) with an ed25519 private key, and the robot loads a bundle only if the signature
verifies with one of its configured public keys::

    simbridge export --gen-key keys/exporter          # keys/exporter (private, 0600) + keys/exporter.pub
    simbridge export <checkpoint> -o bundles/x --sign keys/exporter
    BundlePolicy("bundles/x", trusted_keys=["keys/exporter.pub"])

The signature lives next to the manifest in ``manifest.sig`` (JSON: algorithm, the signer's
public-key fingerprint, the manifest's sha256 and the base64 signature); it is not listed in
the manifest's ``files`` (it cannot be: it signs them). Without trusted keys a bundle is only
checksummed, as before, and ``manifest.sig`` is ignored.

Keys are PEM files: PKCS#8 private keys (unencrypted; keep them on the export machine only)
and SubjectPublicKeyInfo public keys (what ``openssl pkey -pubout`` writes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from simbridge.deploy.manifest import MANIFEST_NAME, BundleError

SIGNATURE_NAME = "manifest.sig"
SIGNATURE_FORMAT = "simbridge-bundle-signature"
ALGORITHM = "ed25519"
#: Domain separation: a signature over a manifest cannot be replayed as a signature of anything else.
_CONTEXT = b"simbridge-policy-bundle/manifest.json\0"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # a core dependency, but say what to do if it is missing
        raise BundleError(
            f"bundle signatures need the 'cryptography' package ({exc}); pip install 'cryptography>=41'"
        ) from None
    return serialization, ed25519


def key_fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the raw 32-byte public key (what ``manifest.sig`` and errors name)."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_key_pair(path: str | Path) -> tuple[Path, Path]:
    """Write a new ed25519 private key to ``path`` (mode 0600) and its public key to
    ``path.pub``; refuses to overwrite either. Returns both paths."""
    serialization, ed25519 = _crypto()
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise BundleError(f"{p} already exists; choose another path (keys are never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start (not chmod-ed afterwards): the key is never readable by others.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{what} {path} cannot be read ({exc.strerror or exc}); check the path") from None


def load_private_key(path: str | Path) -> Any:
    """The ed25519 private key in the PEM file ``path`` (for ``simbridge export --sign``)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_pem(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        raise BundleError(
            f"signing key {path} is password-protected; decrypt it (openssl pkey -in {path} -out <new>)"
        ) from None
    except ValueError as exc:
        raise BundleError(
            f"signing key {path} is not a PEM private key ({exc}); create one with "
            "'simbridge export --gen-key <path>'"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(
            f"signing key {path} is a {type(key).__name__}; bundles are signed with ed25519 keys"
        )
    return key


def load_public_key(path: str | Path) -> Any:
    """The ed25519 public key in the PEM file ``path`` (a robot's trusted key)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_pem(path, "trusted key")
    if b"PRIVATE KEY" in data:  # never copy the signing key onto a robot
        raise BundleError(
            f"trusted key {path} is a private key; configure its public half ({path}.pub) on the robot"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise BundleError(
            f"trusted key {path} is not a PEM public key ({exc}); use the .pub file that "
            "'simbridge export --gen-key' wrote"
        ) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(
            f"trusted key {path} is a {type(key).__name__}; bundles are signed with ed25519 keys"
        )
    return key


def trusted_key_set(trusted_keys: Iterable[str | Path | Any]) -> dict[str, Any]:
    """``{fingerprint: public key}`` for paths and/or loaded keys (errors name the bad key file)."""
    out = {}
    for item in trusted_keys:
        key = load_public_key(item) if isinstance(item, (str, Path)) else item
        out[key_fingerprint(key)] = key
    return out


def signature_record(manifest_bytes: bytes, private_key: Any) -> dict[str, Any]:
    """The content of ``manifest.sig`` for these exact manifest bytes."""
    return {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_fingerprint": key_fingerprint(private_key.public_key()),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "signature": base64.b64encode(private_key.sign(_CONTEXT + manifest_bytes)).decode(),
    }


def sign_bundle(bundle_dir: str | Path, private_key: Any) -> Path:
    """Sign ``<bundle_dir>/manifest.json`` as it is on disk; write ``manifest.sig`` atomically.
    ``private_key``: a loaded key or a PEM path."""
    bundle_dir = Path(bundle_dir)
    if isinstance(private_key, (str, Path)):
        private_key = load_private_key(private_key)
    record = signature_record((bundle_dir / MANIFEST_NAME).read_bytes(), private_key)
    tmp = bundle_dir / (SIGNATURE_NAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, bundle_dir / SIGNATURE_NAME)
    return bundle_dir / SIGNATURE_NAME


def verify_signature(bundle_dir: str | Path, manifest_bytes: bytes, trusted: dict[str, Any]) -> str:
    """Check ``<bundle_dir>/manifest.sig`` against ``manifest_bytes`` (the bytes the caller
    parses: no window for a swap in between) and the ``{fingerprint: key}`` of
    :func:`trusted_key_set`. Returns the signer's fingerprint; raises :class:`BundleError`."""
    from cryptography.exceptions import InvalidSignature

    bundle_dir = Path(bundle_dir)
    sig_path = bundle_dir / SIGNATURE_NAME
    fix = "re-export it with 'simbridge export --sign <private key>'"
    if not sig_path.is_file():
        raise BundleError(
            f"{bundle_dir} is not signed ({SIGNATURE_NAME} is missing) but trusted keys are configured, "
            f"so only signed bundles load; {fix}, or copy the whole bundle including {SIGNATURE_NAME}"
        )
    record = _read_record(sig_path)
    fingerprint = record["key_fingerprint"]
    key = trusted.get(fingerprint)
    if key is None:
        raise BundleError(
            f"{sig_path}: the bundle is signed by key {fingerprint}, which is not one of the trusted keys "
            f"({', '.join(trusted) or 'none'}); add the signer's public key to trusted_keys if you trust it, "
            f"or {fix} using a trusted key"
        )
    if record["manifest_sha256"] != hashlib.sha256(manifest_bytes).hexdigest():
        raise BundleError(
            f"{bundle_dir / MANIFEST_NAME} was changed after it was signed (its sha256 differs from the one in "
            f"{SIGNATURE_NAME}): the bundle was tampered with or edited; do not run it, {fix}"
        )
    try:
        signature = base64.b64decode(record["signature"], validate=True)
        key.verify(signature, _CONTEXT + manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        raise BundleError(
            f"{sig_path}: the signature does not verify with trusted key {fingerprint}: the bundle "
            f"or its signature was tampered with; do not run it, {fix}"
        ) from None
    return fingerprint


def _read_record(sig_path: Path) -> dict[str, Any]:
    from simbridge.deploy.manifest import parse_manifest

    # Same strict parser as the manifest: a crafted signature file gets a BundleError too.
    record = parse_manifest(sig_path.read_bytes()[: 1 << 16], where=str(sig_path))
    if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != ALGORITHM:
        raise BundleError(
            f"{sig_path}: field 'format'/'algorithm' must be {SIGNATURE_FORMAT!r}/{ALGORITHM!r}, got "
            f"{record.get('format')!r:.60}/{record.get('algorithm')!r:.60}; re-export and sign the bundle"
        )
    for field in ("key_fingerprint", "manifest_sha256", "signature"):
        if not isinstance(record.get(field), str):
            raise BundleError(f"{sig_path}: field {field!r} must be a string; re-export and sign the bundle")
    return record
