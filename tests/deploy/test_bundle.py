"""Bundle files on disk: manifest schema, checksums, refusal of bad bundles, atomic writes, `latest`.

These tests use hand-made bundles (valid manifests around small files); the exported-model
versions of the same refusals are in test_runtime.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simbridge.data.spec import SCHEMA_VERSION, CameraSpec, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import (
    MANIFEST_NAME,
    BundleError,
    BundleWriter,
    compute_bundle_id,
    hash_tree,
    iter_bundles,
    resolve_bundle,
    update_latest,
    validate_manifest,
    verify_bundle,
)

CONTRACT = PolicyContract(
    observation=ObservationSpec(cameras=(CameraSpec("scene", 48, 64), CameraSpec("wrist", 32, 32))),
    chunk_size=2,
)


def draft_manifest(contract: PolicyContract = CONTRACT) -> dict:
    cams = [
        {
            "name": c.name, "height": c.height, "width": c.width, "dtype": "uint8", "layout": "HWC",
            "channel_order": "RGB", "resize": [64, 64], "interpolation": "bilinear", "scale": 1 / 255,
            "mean": [0.5] * 3, "std": [0.5] * 3,
        }
        for c in contract.observation.cameras
    ]  # fmt: skip
    return {
        "family": "openvla-oft",
        "contract": contract.to_dict(),
        "observation": {"cameras": cams, "proprio": {"enabled": False, "dim": 8}},
        "instruction": {"tokenizer": "tokenizer.json", "max_length": 32, "pad_token_id": 0},
        "action": {
            "dim": 7,
            "chunk_size": contract.chunk_size,
            "control_rate_hz": 10.0,
            "num_bins": 4,
            "normalization": {"q01": [-1] * 7, "q99": [1] * 7},
            "bin_values": [[-0.75, -0.25, 0.25, 0.75]] * 7,
        },
        "model": {"file": "policy.onnx", "decoding": "parallel", "inputs": {}, "outputs": {}},
        "source": {"checkpoint": "/x/iter_000001", "checkpoint_sha256": "0" * 64},
        "parity": {"passed": True},
    }


def write_bundle(dest: Path, manifest: dict | None = None, model: bytes = b"onnx-bytes" * 100) -> Path:
    with BundleWriter(dest) as w:
        (w.path / "policy.onnx").write_bytes(model)
        (w.path / "tokenizer.json").write_text('{"model": "bpe"}')
        return w.commit(manifest or draft_manifest())


def test_written_bundle_verifies_and_lists_every_file(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b")
    m = verify_bundle(bundle)
    assert m["schema_version"] == SCHEMA_VERSION
    assert set(m["files"]) == {"policy.onnx", "tokenizer.json"}
    assert m["files"]["policy.onnx"]["bytes"] == 1000
    assert m["bundle_id"] == compute_bundle_id(m) and len(m["bundle_id"]) == 16
    assert validate_manifest(m) == CONTRACT
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging directory left


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: (b / "policy.onnx").unlink(), r"policy\.onnx is missing"),
        (
            lambda b: (b / "policy.onnx").write_bytes(b"onnx-bytes" * 50),
            r"policy\.onnx is truncated: 500 bytes",
        ),
        (
            lambda b: (b / "policy.onnx").write_bytes(b"onnx-bytez" * 100),
            r"policy\.onnx was modified: sha256",
        ),
        (lambda b: (b / "tokenizer.json").write_text('{"model": "bpf"}'), r"tokenizer\.json was modified"),
        (lambda b: (b / MANIFEST_NAME).unlink(), r"manifest\.json is missing"),
        (lambda b: _truncate(b / MANIFEST_NAME), r"manifest\.json is not valid JSON"),
        (lambda b: _edit(b, "action", "chunk_size", 3), r"field 'action\.chunk_size' \(3\) differs"),
        (
            lambda b: _edit(b, "action", "normalization", {"q01": [0] * 7}),
            r"manifest\.json was modified after export",
        ),
        (
            lambda b: _edit(b, "schema_version", None, SCHEMA_VERSION + 1),
            r"schema version 2, newer than this",
        ),
        (lambda b: _edit(b, "model", "decoding", "beam-search"), r"field 'model\.decoding' is 'beam-search'"),
        (
            lambda b: _edit(b, "instruction", "max_length", None),
            r"required field 'instruction\.max_length' is missing",
        ),
        (lambda b: _edit(b, "parity", "passed", False), r"failed its parity check"),
        (lambda b: _edit(b, "format", None, "something-else"), r"not a SimBridge policy bundle"),
    ],
)
def test_damaged_bundles_are_refused_naming_the_file_or_field(tmp_path: Path, damage, expected) -> None:
    _assert_refused(tmp_path, damage, expected)


def _assert_refused(tmp_path: Path, damage, expected: str) -> None:
    """A freshly written bundle, damaged, fails verification with ``expected`` in the message."""
    bundle = write_bundle(tmp_path / "b")
    damage(bundle)
    with pytest.raises(BundleError, match=expected):
        verify_bundle(bundle)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit(bundle: Path, key: str, sub: str | None, value) -> None:
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    target = m if sub is None else m[key]
    field = key if sub is None else sub
    if value is None:
        del target[field]
    else:
        target[field] = value
    (bundle / MANIFEST_NAME).write_text(json.dumps(m))


def test_manifest_must_agree_with_its_contract(tmp_path: Path) -> None:
    m = draft_manifest()
    m["observation"]["cameras"][1]["height"] = 31
    with pytest.raises(
        BundleError, match=r"camera 'wrist' is 31x32 in field 'observation.cameras' but 32x32"
    ):
        write_bundle(tmp_path / "b", m)
    m = draft_manifest()
    m["observation"]["cameras"] = m["observation"]["cameras"][:1]
    with pytest.raises(
        BundleError, match=r"lists cameras \['scene'\] but field 'contract' expects \['scene', 'wrist'\]"
    ):
        write_bundle(tmp_path / "c", m)
    m = draft_manifest()
    m["observation"]["cameras"][0]["channel_order"] = "BGR"
    with pytest.raises(BundleError, match=r"uint8 HWC RGB"):
        write_bundle(tmp_path / "d", m)
    m = draft_manifest()
    m["contract"]["schema_version"] = SCHEMA_VERSION + 5
    with pytest.raises(BundleError, match="contract"):
        write_bundle(tmp_path / "e", m)
    # A refused commit leaves nothing behind either.
    assert list(tmp_path.iterdir()) == []


def test_staged_manifest_is_checked_like_a_bundle_bar_its_parity_record(tmp_path: Path) -> None:
    """What the exporter's parity check validates: a draft without a parity record; a finished
    manifest (parity and all) still needs validate_manifest, and a draft cannot carry parity."""
    from simbridge.deploy.bundle import finalize_manifest
    from simbridge.deploy.manifest_validation import validate_staged_manifest

    (tmp_path / "policy.onnx").write_bytes(b"onnx")
    (tmp_path / "tokenizer.json").write_text("{}")
    draft = draft_manifest()
    del draft["parity"]
    staged = finalize_manifest(draft, tmp_path)
    assert validate_staged_manifest(staged, where="staged") == CONTRACT
    with pytest.raises(BundleError, match="required field 'parity' is missing"):
        validate_manifest(staged)
    with pytest.raises(BundleError, match="no 'parity' record yet"):
        validate_staged_manifest({**staged, "parity": {"passed": True}}, where="staged")
    staged["action"]["chunk_size"] = 3
    with pytest.raises(BundleError, match=r"'action\.chunk_size' \(3\) differs"):
        validate_staged_manifest(staged, where="staged")


def test_failed_write_leaves_nothing_and_existing_bundle_is_kept(tmp_path: Path) -> None:
    dest = tmp_path / "b"
    with pytest.raises(RuntimeError, match="boom"), BundleWriter(dest) as w:
        (w.path / "policy.onnx").write_bytes(b"x" * 10)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    first = write_bundle(dest)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(dest)
    old_id = verify_bundle(first)["bundle_id"]
    # overwrite=True replaces it in one step, the old id disappears
    with BundleWriter(dest, overwrite=True) as w:
        (w.path / "policy.onnx").write_bytes(b"new" * 10)
        (w.path / "tokenizer.json").write_text("{}")
        w.commit(draft_manifest())
    assert verify_bundle(dest)["bundle_id"] != old_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_killed_writer_never_exposes_a_partial_bundle(tmp_path: Path) -> None:
    """A process killed mid-write leaves only a hidden staging dir; the destination never exists."""
    script = f"""
import os
from simbridge.deploy.bundle import BundleWriter
with BundleWriter({str(tmp_path / "b")!r}) as w:
    (w.path / "policy.onnx").write_bytes(b"x" * 1000)
    os._exit(9)  # like kill -9: no cleanup runs
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert not (tmp_path / "b").exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".b.tmp-")
    assert list(iter_bundles(tmp_path)) == []
    with pytest.raises(BundleError, match="does not exist"):
        resolve_bundle(tmp_path / "b")


def test_latest_pointer_moves_atomically_and_resolves(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "iter_000001")
    b = write_bundle(tmp_path / "iter_000002", model=b"other" * 10)
    with pytest.raises(BundleError, match=r"manifest\.json is missing: .* is neither a complete bundle"):
        resolve_bundle(tmp_path)
    update_latest(tmp_path, "iter_000001")
    assert resolve_bundle(tmp_path) == a.resolve()
    assert resolve_bundle(tmp_path / "latest") == a.resolve()
    assert resolve_bundle(a) == a.resolve()
    update_latest(tmp_path, "iter_000002")
    assert resolve_bundle(tmp_path) == b.resolve()
    assert os.readlink(tmp_path / "latest") == "iter_000002"  # relative: the export dir can be moved/copied
    with pytest.raises(BundleError, match="not a complete bundle"):
        update_latest(tmp_path, "iter_000003")
    assert [p.name for p in iter_bundles(tmp_path)] == ["iter_000001", "iter_000002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000001", "iter_000002", "latest"]


def test_latest_as_a_text_file_and_dangling_pointers(tmp_path: Path) -> None:
    write_bundle(tmp_path / "iter_000001")
    (tmp_path / "latest").write_text("iter_000001\n")  # where symlinks are unavailable
    assert resolve_bundle(tmp_path).name == "iter_000001"
    (tmp_path / "latest").write_text("iter_000009\n")
    with pytest.raises(BundleError, match=r"names 'iter_000009', which is not a bundle"):
        resolve_bundle(tmp_path)
    (tmp_path / "latest").unlink()
    os.symlink("gone", tmp_path / "latest")
    with pytest.raises(BundleError, match=r"points at .*gone, which is not a bundle"):
        resolve_bundle(tmp_path)


def test_hash_tree_sees_content_and_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"123")
    h1 = hash_tree(tmp_path / "a")
    (tmp_path / "a" / "w.bin").write_bytes(b"124")
    h2 = hash_tree(tmp_path / "a")
    (tmp_path / "a" / "w.bin").rename(tmp_path / "a" / "v.bin")
    h3 = hash_tree(tmp_path / "a")
    assert len({h1, h2, h3}) == 3


# --- malformed manifests: always a BundleError naming the file and the field ----------------


def _replace(bundle: Path, old: str, new: str) -> None:
    text = (bundle / MANIFEST_NAME).read_text()
    assert old in text, old
    (bundle / MANIFEST_NAME).write_text(text.replace(old, new, 1))


def _deep(bundle: Path, depth: int) -> None:
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    text = json.dumps(m)[:-1] + ', "junk": ' + "[" * depth + "]" * depth + "}"
    (bundle / MANIFEST_NAME).write_text(text)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: _replace(b, '"num_bins": 4', '"num_bins": NaN'),
         r"manifest\.json: field 'action\.num_bins' is NaN, which is not valid JSON"),
        (lambda b: _replace(b, '"scale": 0.00392156862745098', '"scale": -Infinity'),
         r"field 'observation\.cameras\[0\]\.scale' is -Infinity"),
        (lambda b: _replace(b, '"pad_token_id": 0', '"pad_token_id": 1e400'),
         r"field 'instruction\.pad_token_id' is 1e400"),
        (lambda b: _deep(b, 10000), r"manifest\.json nests JSON arrays/objects too deeply"),
        (lambda b: _deep(b, 100), r"manifest\.json: field 'junk(\[0\])+' is nested 33 levels deep"),
        (lambda b: _replace(b, '"family": "openvla-oft"', '"family": "openvla-oft", "family": "x"'),
         r"duplicate key 'family'"),
        (lambda b: (b / MANIFEST_NAME).write_bytes(b'{"format": "\xff"}'), r"manifest\.json is not UTF-8"),
        (lambda b: (b / MANIFEST_NAME).write_text("[1, 2]"), r"expected a JSON object at the top level"),
        (lambda b: _edit(b, "action", "chunk_size", "2"), r"field 'action\.chunk_size': expected integer, got str"),
        (lambda b: _edit(b, "action", "chunk_size", True), r"field 'action\.chunk_size': expected integer, got bool"),
        (lambda b: _edit(b, "action", "chunk_size", 0), r"field 'action\.chunk_size' must be positive"),
        (lambda b: _edit(b, "observation", "cameras", [{"name": "scene"}]),
         r"required field 'observation\.cameras\[0\]\.height' is missing"),
        (lambda b: _edit(b, "contract", "observation", [1]), r"field 'contract' is not a valid policy contract"),
        (lambda b: _edit(b, "instruction", "prefix_ids", ["1"]),
         r"field 'instruction\.prefix_ids'\[0\]: expected integer"),
        (lambda b: _edit(b, "instruction", "template", 5), r"field 'instruction\.template': expected string"),
        (lambda b: _edit(b, "instruction", "template", "{prompt}"),
         r"field 'instruction\.template' has placeholders \['prompt'\]"),
        (lambda b: _edit(b, "instruction", "template", "{instruction"),
         r"field 'instruction\.template' is not a valid prompt template"),
        (lambda b: _edit(b, "instruction", "padding_side", "middle"), r"'instruction\.padding_side' must be"),
        (lambda b: _edit(b, "model", "inputs", {"x": {"source": "image:side"}}),
         r"field 'model\.inputs\.x\.source' is 'image:side'"),
        (lambda b: _edit(b, "model", "inputs", {"x": "scene"}), r"field 'model\.inputs\.x' must be an object"),
        (lambda b: _edit(b, "files", "policy.onnx", {"sha256": "0", "bytes": "10"}),
         r"field 'files\.policy\.onnx' needs a 'sha256' string and a 'bytes' integer"),
        (lambda b: _edit(b, "parity", "problems", ["actions differ by up to 0.5"]),
         r"field 'parity' says passed but records a failure"),
        (lambda b: _edit(b, "parity", "max_abs_diff", {"actions": "small"}),
         r"field 'parity\.max_abs_diff\.actions': expected integer or number"),
    ],
)  # fmt: skip
def test_malformed_manifests_raise_bundle_error(tmp_path: Path, damage, expected) -> None:
    _assert_refused(tmp_path, damage, expected)


def test_exported_prompt_fields_are_valid(tmp_path: Path) -> None:
    """The optional instruction fields the exporter writes pass the stricter schema."""
    m = draft_manifest()
    m["instruction"].update(
        template="In: What action should the robot take to {instruction}?\nOut:", strip_chars=".?!",
        lowercase=True, prefix_ids=[1], suffix_ids=[2], add_special_tokens=False, padding_side="left",
        pad_to_max_length=False,
    )  # fmt: skip
    m["parity"].update(tolerance=1e-4, max_abs_diff={"actions": 1e-6}, token_mismatches=0, problems=[])
    assert verify_bundle(write_bundle(tmp_path / "b", m))["instruction"]["prefix_ids"] == [1]
