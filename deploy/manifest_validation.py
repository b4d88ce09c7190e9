"""Bundle manifest checks: is a parsed ``manifest.json`` one the runtime can run, and its contract.

:func:`validate_manifest` checks a parsed manifest (see :func:`simbridge.deploy.manifest.parse_manifest`)
against the schema in :mod:`simbridge.deploy.manifest`: every required field present with its JSON
type, optional fields typed when present, positive sizes, and the sections consistent with each
other and with the :class:`~simbridge.data.spec.PolicyContract` (cameras, model inputs, the
instruction template, the parity record, the file list). :func:`validate_staged_manifest` is the
same for an exporter's draft (no parity record yet). The first bad field raises a
:class:`~simbridge.deploy.manifest.BundleError` naming it. Re-exported by :mod:`simbridge.deploy.bundle`.

No torch, no onnxruntime here: plain Python.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simbridge.data.spec import ContractError, PolicyContract, check_schema_version
from simbridge.deploy.manifest import (
    BUNDLE_FORMAT,
    CAMERA_FIELDS,
    DECODINGS,
    MANIFEST_NAME,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    TEXT_SOURCES,
    BundleError,
)

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
