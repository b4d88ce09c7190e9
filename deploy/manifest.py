"""The bundle manifest: strict parsing and the schema every ``manifest.json`` must follow.

Split out of :mod:`simbridge.deploy.bundle` (which re-exports everything here) so that the
file-level concerns (hashing, atomic writes, ``latest``) and the schema stay readable.

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
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from simbridge.data.spec import ContractError, PolicyContract, check_schema_version

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
    :func:`validate_manifest`."""
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


# --- structure ----------------------------------------------------------------------------


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
    # bool is an int in Python, not in JSON: true is no chunk size.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise BundleError(
            f"{where}: expected {_type_name(expected)}, got {type(value).__name__} {value!r:.80}"
        )


def _check_items(values: list[Any], expected: type | tuple[type, ...], where: str) -> None:
    for i, v in enumerate(values):
        _check_type(v, expected, f"{where}[{i}]")


def _check_positive(manifest: Mapping[str, Any], dotted: str, where: str) -> None:
    if not _get(manifest, dotted) > 0:
        raise BundleError(f"{where}: field {dotted!r} must be positive, got {_get(manifest, dotted)!r}")


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> PolicyContract:
    """Check the manifest's structure and internal consistency; return its contract.

    Raises :class:`BundleError` naming the first bad field (``manifest.json: field 'x.y' ...``).
    Does not touch the other files (see :func:`simbridge.deploy.bundle.verify_bundle`).
    """
    return _validate(manifest, where, staged=False)


def validate_staged_manifest(manifest: Any, where: str) -> PolicyContract:
    """:func:`validate_manifest` for the draft of a bundle still being exported: every check but
    the parity record, which a draft must not have yet (the parity check is what writes it).

    Only for the exporter's parity check (see ``BundlePolicy.from_unverified_staging``); a bundle
    on disk is always checked with :func:`validate_manifest`, parity record included.
    """
    if isinstance(manifest, Mapping) and "parity" in manifest:
        raise BundleError(
            f"{where}: a staged manifest has no 'parity' record yet; load a finished bundle with BundlePolicy(path)"
        )
    return _validate(manifest, where, staged=True)


def _validate(manifest: Any, where: str, staged: bool) -> PolicyContract:
    if not isinstance(manifest, Mapping):
        raise BundleError(f"{where}: expected a JSON object at the top level, got {type(manifest).__name__}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: field 'format' is {manifest.get('format')!r:.80}, expected {BUNDLE_FORMAT!r}; "
            "this is not a SimBridge policy bundle"
        )
    version = manifest.get("schema_version")
    _check_type(version, int, f"{where}: field 'schema_version'")
    try:
        check_schema_version(version, what=f"{where} (field 'schema_version')")
    except ContractError as exc:
        raise BundleError(str(exc)) from None
    for dotted, expected in REQUIRED_FIELDS.items():
        if staged and dotted.split(".")[0] == "parity":
            continue
        try:
            value = _get(manifest, dotted)
        except KeyError:
            raise BundleError(
                f"{where}: required field {dotted!r} is missing; re-export the checkpoint with 'simbridge export'"
            ) from None
        _check_type(value, expected, f"{where}: field {dotted!r}")
    for dotted, expected in OPTIONAL_FIELDS.items():
        try:
            value = _get(manifest, dotted)
        except KeyError:
            continue
        _check_type(value, expected, f"{where}: field {dotted!r}")
    for dotted in (
        "instruction.max_length",
        "action.chunk_size",
        "action.control_rate_hz",
        "action.num_bins",
    ):
        _check_positive(manifest, dotted, where)

    try:
        contract = PolicyContract.from_dict(manifest["contract"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{where}: field 'contract' is not a valid policy contract: {exc!r:.200}") from None

    _validate_cameras(manifest, contract, where)
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
            f"{where}: field 'model.decoding' is {manifest['model']['decoding']!r:.80}; this SimBridge runs {list(DECODINGS)}"
        )
    _validate_model_inputs(manifest, contract, where)
    _validate_instruction(manifest["instruction"], where)
    if not staged:
        _validate_parity(manifest["parity"], where)
    for file_field in ("model.file", "instruction.tokenizer"):
        name = _get(manifest, file_field)
        if name not in manifest["files"]:
            raise BundleError(
                f"{where}: field {file_field!r} names {name!r:.80}, which is not listed in field 'files'"
            )
    for name, entry in manifest["files"].items():
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("sha256"), str)
            or isinstance(entry.get("bytes"), bool)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"{where}: field 'files.{name}' needs a 'sha256' string and a 'bytes' integer")
        if not name or Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST_NAME:
            raise BundleError(
                f"{where}: field 'files' names {name!r:.80}, which is not a file inside the bundle"
            )
    return contract


def _validate_cameras(manifest: Mapping[str, Any], contract: PolicyContract, where: str) -> None:
    cams = manifest["observation"]["cameras"]
    for i, cam in enumerate(cams):
        at = f"observation.cameras[{i}]"
        if not isinstance(cam, Mapping):
            raise BundleError(f"{where}: field '{at}' must be an object")
        for key, expected in CAMERA_FIELDS.items():
            if key not in cam:
                raise BundleError(f"{where}: required field '{at}.{key}' is missing")
            _check_type(cam[key], expected, f"{where}: field '{at}.{key}'")
        for key in ("resize", "mean", "std"):
            _check_items(cam[key], (int, float), f"{where}: field '{at}.{key}'")
        if cam["dtype"] != "uint8" or cam["layout"] != "HWC" or cam["channel_order"] != "RGB":
            raise BundleError(
                f"{where}: field '{at}' must take uint8 HWC RGB images (the contract's "
                f"format), got {cam['dtype']:.20} {cam['layout']:.20} {cam['channel_order']:.20}"
            )
        if len(cam["resize"]) != 2 or len(cam["mean"]) != 3 or len(cam["std"]) != 3:
            raise BundleError(f"{where}: field '{at}': resize needs [h, w], mean/std 3 values")
        if any(s <= 0 for s in cam["std"]):
            raise BundleError(f"{where}: field '{at}.std' must be positive")
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


def _validate_model_inputs(manifest: Mapping[str, Any], contract: PolicyContract, where: str) -> None:
    known = {f"image:{n}" for n in contract.observation.camera_names} | {"proprio", *TEXT_SOURCES}
    for name, spec in manifest["model"]["inputs"].items():
        at = f"model.inputs.{name}"
        if not isinstance(spec, Mapping):
            raise BundleError(f"{where}: field {at!r} must be an object with a 'source'")
        source = spec.get("source")
        _check_type(source, str, f"{where}: field '{at}.source'")
        if source not in known:
            raise BundleError(
                f"{where}: field '{at}.source' is {source!r:.80}; the runtime feeds {sorted(known)}"
            )


def _validate_instruction(spec: Mapping[str, Any], where: str) -> None:
    for key in ("prefix_ids", "suffix_ids"):
        ids = spec.get(key, [])
        _check_items(ids, int, f"{where}: field 'instruction.{key}'")
        if any(i < 0 for i in ids):
            raise BundleError(f"{where}: field 'instruction.{key}' holds a negative token id")
    if spec.get("padding_side", "left") not in ("left", "right"):
        raise BundleError(f"{where}: field 'instruction.padding_side' must be 'left' or 'right'")
    room = spec["max_length"] - len(spec.get("prefix_ids", [])) - len(spec.get("suffix_ids", []))
    if room <= 0:
        raise BundleError(f"{where}: field 'instruction.max_length' leaves no room for the instruction")
    template = spec.get("template", "{instruction}")
    rule = "it must contain '{instruction}' and no other placeholder"
    try:  # the runtime formats it with instruction=...; anything else would fail on the robot
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        if fields == {"instruction"}:
            template.format(instruction="")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise BundleError(
            f"{where}: field 'instruction.template' is not a valid prompt template ({exc!r:.80}); {rule}"
        ) from None
    if fields != {"instruction"}:
        raise BundleError(f"{where}: field 'instruction.template' has placeholders {sorted(fields)}; {rule}")


def _validate_parity(parity: Mapping[str, Any], where: str) -> None:
    if not parity["passed"]:
        raise BundleError(
            f"{where}: field 'parity.passed' is false: this bundle failed its parity check; do not run it"
        )
    # A record that says "passed" next to the numbers of a failure was edited by hand.
    problems = parity.get("problems", [])
    _check_items(problems, str, f"{where}: field 'parity.problems'")
    diffs = parity.get("max_abs_diff", {})
    for key, diff in diffs.items():
        _check_type(diff, (int, float), f"{where}: field 'parity.max_abs_diff.{key}'")
    tolerance = parity.get("tolerance")
    over = [k for k, d in diffs.items() if tolerance is not None and d > tolerance]
    if problems or parity.get("token_mismatches", 0) != 0 or over:
        raise BundleError(
            f"{where}: field 'parity' says passed but records a failure (problems {problems[:2]}, "
            f"token_mismatches {parity.get('token_mismatches', 0)}, over tolerance {over}); "
            "the record was edited: re-export the checkpoint"
        )
