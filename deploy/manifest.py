"""The bundle manifest: the schema every ``manifest.json`` must follow, its identity and strict parsing.

Owns the field tables (:data:`REQUIRED_FIELDS`, :data:`OPTIONAL_FIELDS`, :data:`CAMERA_FIELDS`),
:class:`BundleError`, the canonical JSON form and the content hash (:func:`compute_bundle_id`), and
:func:`parse_manifest`. The checks of a parsed manifest against the schema are in
:mod:`simbridge.deploy.manifest_validation`. Split out of :mod:`simbridge.deploy.bundle` (which
re-exports everything here) so that the file-level concerns (hashing, atomic writes, ``latest``)
and the schema stay readable.

Everything that goes wrong with a manifest is a :class:`BundleError` naming the file and the
field: invalid JSON, NaN/Infinity (JSON has neither; Python's parser accepts them by default),
numbers that overflow to infinity, duplicate keys, absurd nesting (Python's parser raises
``RecursionError``), wrong types, missing fields, values the runtime cannot use. A robot must
never see a ``ValueError`` traceback from a bundle someone copied onto it.

No torch, no onnxruntime here: plain Python.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from simbridge.data.spec import ContractError

BUNDLE_FORMAT = "simbridge-policy-bundle"
MANIFEST_NAME = "manifest.json"
#: A manifest is a few kB; a huge one is corrupted or hostile (and would be slow to hash/parse).
MAX_MANIFEST_BYTES = 16 << 20
#: Exported manifests nest ~6 levels deep; anything far deeper is not one SimBridge wrote.
MAX_MANIFEST_DEPTH = 32

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

#: Fields the runtime reads when present (it has defaults), with their JSON types.
OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "preset": str,
    "instruction.template": str,
    "instruction.strip_whitespace": bool,
    "instruction.strip_chars": str,
    "instruction.lowercase": bool,
    "instruction.prefix_ids": list,
    "instruction.suffix_ids": list,
    "instruction.add_special_tokens": bool,
    "instruction.padding_side": str,
    "instruction.pad_to_max_length": bool,
    "parity.tolerance": (int, float),
    "parity.max_abs_diff": dict,
    "parity.token_mismatches": int,
    "parity.problems": list,
    # speed levers (simbridge.deploy.export.levers); absent in bundles written before them
    "model.session": dict,
    "model.session.graph_optimization_level": str,
    "model.session.intra_op_threads": int,
    "model.levers": dict,
    "parity.mode": str,  # "exact" (tokens identical) or "decoded-actions" (lossy levers)
    "parity.action_tolerance": (int, float),  # fraction of each action dimension's range
    "parity.max_action_diff_fraction": list,
    "parity.token_flips": int,
    "parity.tokens_compared": int,
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
TEXT_SOURCES = ("input_ids", "attention_mask")


class BundleError(ContractError):
    """A bundle is missing, incomplete, corrupted, unsigned/untrusted or incompatible. The message
    names the file or field and says how to fix it (usually: re-export the checkpoint with
    ``simbridge export``)."""


# --- canonical form and identity ----------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_bundle_id(manifest: Mapping[str, Any]) -> str:
    """Content hash of the manifest without its ``bundle_id`` (16 hex digits)."""
    body = {k: v for k, v in manifest.items() if k != "bundle_id"}
    return hashlib.sha256(canonical_json(body)).hexdigest()[:16]


# --- strict parsing -----------------------------------------------------------------------


class _Rejected(Exception):
    """Raised from inside the JSON parser's hooks; turned into a BundleError by the caller."""


def _reject_constant(name: str) -> Any:
    raise _Rejected(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf without passing through parse_constant
        raise _Rejected(text)
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # two readers could disagree on which value counts
            raise _Rejected(f"duplicate key {key!r}")
        out[key] = value
    return out


def _walk(obj: Any) -> Iterator[tuple[str, Any, int]]:
    """``(dotted path, value, depth)`` for every node, iteratively (no recursion limit)."""
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        path, node, depth = stack.pop()
        yield path, node, depth
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(node))


def _non_finite_field(text: str) -> str | None:
    """Which field of a manifest holds NaN/Infinity (re-parsed leniently, only to name it)."""
    try:
        lenient = json.loads(text)
    except (ValueError, RecursionError):
        return None
    for path, value, _ in _walk(lenient):
        if isinstance(value, float) and not math.isfinite(value):
            return path or "(top level)"
    return None


def parse_manifest(data: bytes, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """Parse manifest bytes strictly: UTF-8 JSON, no NaN/Infinity, no duplicate keys, an object at
    the top, at most :data:`MAX_MANIFEST_DEPTH` levels. Structure is checked by
    :func:`simbridge.deploy.manifest_validation.validate_manifest`."""
    fix = "re-export the bundle with 'simbridge export' (or copy it again)"
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is {len(data)} bytes (limit {MAX_MANIFEST_BYTES}): corrupted; {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{where} is not UTF-8 text ({exc}): corrupted; {fix}") from None
    try:
        obj = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_no_duplicates
        )
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where} is not valid JSON ({exc}): truncated or corrupted; {fix}") from None
    except RecursionError:
        raise BundleError(
            f"{where} nests JSON arrays/objects too deeply to parse: not a manifest SimBridge writes "
            f"(corrupted or crafted); {fix}"
        ) from None
    except _Rejected as exc:
        what = str(exc)
        if what.startswith("duplicate key"):
            raise BundleError(f"{where}: {what} in a JSON object: ambiguous manifest; {fix}") from None
        field = _non_finite_field(text)
        named = f"field {field!r} is {what}" if field else f"a number is {what}"
        raise BundleError(
            f"{where}: {named}, which is not valid JSON (no NaN/Infinity allowed in a manifest); {fix}"
        ) from None
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: expected a JSON object at the top level, got {type(obj).__name__}")
    for path, _, depth in _walk(obj):
        if depth > MAX_MANIFEST_DEPTH:
            raise BundleError(
                f"{where}: field {path!r} is nested {depth} levels deep (limit {MAX_MANIFEST_DEPTH}): "
                f"not a manifest SimBridge writes; {fix}"
            )
    return obj
