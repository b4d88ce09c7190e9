"""The export's speed levers (simbridge.deploy.export.levers): int8 dynamic quantization, offline
graph optimization and session options, each gated by the parity check, on micro policies.

int8 is tested on the OFT family with its continuous regression head: a random-init policy's
token logits are near ties that any perturbation flips to a far-away bin (that the gate refuses,
see ``test_int8_with_too_tight_tolerance_writes_nothing``), whereas a trained policy's are not.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_export import (  # same directory: pytest puts it on sys.path
    CONTRACT,
    FAST,
    _rehash,
    micro_policy,
    quiet,
    save,
)

from simbridge.data.cli import main as cli_main
from simbridge.deploy.bundle import MANIFEST_NAME
from simbridge.deploy.export import ExportError, export_checkpoint, synthetic_observations
from simbridge.deploy.runtime import BundlePolicy


@pytest.fixture(scope="module")
def regression_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("levers")
    return save(micro_policy("openvla-oft", use_regression_head=True), root / "run")


def test_int8_passes_decoded_action_parity_and_loads(regression_ckpt: Path, tmp_path: Path) -> None:
    result = export_checkpoint(
        regression_ckpt, tmp_path / "int8", options=replace(FAST, quantize="int8"), progress=quiet
    )
    m = json.loads((result.bundle / MANIFEST_NAME).read_text())
    quant = m["model"]["levers"]["quantization"]
    assert quant["op_types"] == ["MatMul", "Gemm"] and "int8" in quant["weights"]
    assert m["model"]["levers"]["offline_optimization"] is None and m["model"]["levers"]["fp16"] is False
    parity = m["parity"]
    assert parity["passed"] and parity["mode"] == "decoded-actions"
    assert parity["action_tolerance"] == 0.05
    assert len(parity["max_action_diff_fraction"]) == 7
    assert max(parity["max_action_diff_fraction"]) <= 0.05
    assert parity["tokens_compared"] > 0 and 0 <= parity["token_flips"] <= parity["tokens_compared"]
    assert "tolerance" not in parity and "token_mismatches" not in parity  # the exact mode's gates
    assert "decoded actions within" in result.summary()

    import onnx

    ops = {n.op_type for n in onnx.load(str(result.bundle / "policy.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    runtime = BundlePolicy(result.bundle)  # verifies the manifest, parity record included
    chunk = runtime.predict(synthetic_observations(CONTRACT, 1, seed=5)[0])
    assert chunk.shape == (4, 7)


def test_int8_with_too_tight_tolerance_writes_nothing(regression_ckpt: Path, tmp_path: Path) -> None:
    options = replace(FAST, quantize="int8", action_tolerance=1e-9)
    with pytest.raises(ExportError) as info:
        export_checkpoint(regression_ckpt, tmp_path / "tight", options=options, progress=quiet)
    message = str(info.value)
    assert "beyond the action tolerance" in message and "of its range" in message
    assert "tokens flipped" in message and "no bundle written" in message
    assert not (tmp_path / "tight").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging directory left behind


@pytest.mark.parametrize("family", ["openvla-oft", "openvla"])
def test_offline_optimized_bundle_passes_exact_parity(family: str, tmp_path: Path) -> None:
    ckpt = save(micro_policy(family, layers=1), tmp_path / "run")
    options = replace(FAST, optimize="extended", graph_optimization="basic", intra_op_threads=1)
    result = export_checkpoint(ckpt, tmp_path / "opt", options=options, progress=quiet)
    m = result.manifest
    assert m["model"]["levers"]["offline_optimization"]["level"] == "extended"
    assert m["model"]["levers"]["offline_optimization"]["provider"] == "CPUExecutionProvider"
    assert m["model"]["session"] == {"graph_optimization_level": "basic", "intra_op_threads": 1}
    assert m["parity"]["passed"] and m["parity"]["token_mismatches"] == 0
    assert "mode" in m["parity"] and m["parity"]["mode"] == "exact"

    import onnxruntime as ort

    runtime = BundlePolicy(result.bundle)
    opts = runtime.session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.intra_op_num_threads == 1
    assert BundlePolicy(result.bundle, intra_op_threads=2).session.get_session_options().intra_op_num_threads == 2


def test_default_export_records_the_session_and_old_bundles_load(regression_ckpt: Path, tmp_path: Path) -> None:
    result = export_checkpoint(regression_ckpt, tmp_path / "plain", options=FAST, progress=quiet)
    m = result.manifest
    assert m["model"]["session"] == {"graph_optimization_level": "all"}
    assert m["model"]["levers"]["quantization"] is None and m["parity"]["mode"] == "exact"

    def strip(manifest: dict) -> None:  # a bundle written before the levers existed
        manifest["model"].pop("session")
        manifest["model"].pop("levers")
        for key in ("mode",):
            manifest["parity"].pop(key)

    _rehash(result.bundle, strip)
    import onnxruntime as ort

    runtime = BundlePolicy(result.bundle)
    assert runtime.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    _rehash(result.bundle, lambda mf: mf["model"].update(session={"graph_optimization_level": "turbo"}))
    with pytest.raises(Exception, match="graph_optimization_level"):
        BundlePolicy(result.bundle)


def test_bad_lever_options_fail_before_exporting(regression_ckpt: Path, tmp_path: Path) -> None:
    for bad in (dict(optimize="all"), dict(quantize="int4"), dict(action_tolerance=0.0), dict(intra_op_threads=0)):
        with pytest.raises(ExportError):
            export_checkpoint(regression_ckpt, tmp_path / "x", options=replace(FAST, **bad), progress=quiet)
    assert not (tmp_path / "x").exists()


def test_cli_quantize_flag(regression_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-int8"
    rc = cli_main(["export", str(regression_ckpt), "-o", str(out), "--quantize", "int8", "--parity-samples", "4"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["model"]["levers"]["quantization"]["kind"] == "dynamic"
    rc = cli_main([
        "export", str(regression_ckpt), "-o", str(tmp_path / "cli-tight"), "--quantize", "int8",
        "--action-tolerance", "1e-9", "--parity-samples", "4",
    ])  # fmt: skip
    assert rc == 1 and "beyond the action tolerance" in capsys.readouterr().err
    assert not (tmp_path / "cli-tight").exists()
