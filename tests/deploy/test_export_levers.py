"""The export's speed levers (simbridge.deploy.export.levers): int8 dynamic quantization, offline
graph optimization and session options, each gated by the parity check, on micro policies.

int8 leaves the image preprocessing and the nodes ``int8_exclude`` matches (default: the action
logits' projection, the vision stems, the proprio projector) in fp32 and records which
(``levers.quantization.fp32_nodes``); bundles written before that record load unchanged.

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
from simbridge.deploy.export.levers import INT8_EXCLUDE, bypass_weight_identities, int8_plan
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
    assert quant["op_types"] == ["MatMul"] and "int8" in quant["weights"]
    assert quant["per_channel"] is True and "per output channel" in quant["weights"]
    assert quant["exclude"] == list(INT8_EXCLUDE)
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

    nodes = onnx.load(str(result.bundle / "policy.onnx")).graph.node
    ops = {n.op_type for n in nodes}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    # the exclusion is applied: every fp32 node is still a float MatMul, every quantized one is gone
    float_matmuls = {n.name for n in nodes if n.op_type == "MatMul"}
    fp32 = quant["fp32_nodes"]
    assert set(fp32) <= float_matmuls and quant["quantized_nodes"]
    assert not set(quant["quantized_nodes"]) & float_matmuls
    assert any("lm_head" in name for name in fp32) and fp32["/lm_head/MatMul"] == "matches 'lm_head'"
    assert "image preprocessing (resize matrix)" in fp32.values()  # the camera resize
    assert not any("lm_head" in name for name in quant["quantized_nodes"])
    runtime = BundlePolicy(result.bundle)  # verifies the manifest, parity record included
    chunk = runtime.predict(synthetic_observations(CONTRACT, 1, seed=5)[0])
    assert chunk.shape == (4, 7)


def test_int8_exclusions_are_options_and_old_int8_bundles_load(regression_ckpt: Path, tmp_path: Path) -> None:
    options = replace(FAST, quantize="int8", int8_exclude=("mlp",), int8_per_channel=False, action_tolerance=1.0)
    result = export_checkpoint(regression_ckpt, tmp_path / "int8-mlp", options=options, progress=quiet)
    quant = result.manifest["model"]["levers"]["quantization"]
    assert quant["exclude"] == ["mlp"] and quant["per_channel"] is False and "per tensor" in quant["weights"]
    fp32, quantized = quant["fp32_nodes"], quant["quantized_nodes"]
    assert any("/lm_head/" in n for n in quantized)  # no longer excluded
    mlp = [n for n in fp32 if "mlp" in n]
    assert mlp and all(fp32[n] == "matches 'mlp'" for n in mlp)
    assert not any("mlp" in n for n in quantized)
    assert "image preprocessing (resize matrix)" in fp32.values()  # whatever the patterns say

    def old_record(manifest: dict) -> None:  # an int8 bundle written before fp32_nodes existed
        manifest["model"]["levers"]["quantization"] = {
            "kind": "dynamic", "weights": "int8 (QInt8, per tensor)", "activations": "uint8, quantized at run time",
            "op_types": ["MatMul", "Gemm"], "tool": "onnxruntime.quantization.quantize_dynamic",
        }  # fmt: skip

    _rehash(result.bundle, old_record)
    runtime = BundlePolicy(result.bundle)
    assert "fp32_nodes" not in runtime.manifest["model"]["levers"]["quantization"]
    assert runtime.predict(synthetic_observations(CONTRACT, 1, seed=3)[0]).shape == (4, 7)


def test_int8_quantizes_every_unrolled_step_of_the_autoregressive_graph(tmp_path: Path) -> None:
    import onnx

    options = replace(FAST, quantize="int8", action_tolerance=1.0)  # random weights: near-tied logits flip
    ckpt = save(micro_policy("openvla", layers=1), tmp_path / "run")
    result = export_checkpoint(ckpt, tmp_path / "b", options=options, progress=quiet)
    quant = result.manifest["model"]["levers"]["quantization"]
    # the decoding steps reach the shared LM weights through Identity nodes: bypassed, then quantized
    assert quant["weight_identities_bypassed"] > 0
    quantized = quant["quantized_nodes"]
    assert sum("/model/layers.0/mlp/down_proj" in n for n in quantized) == 28  # 7 tokens x chunk 4 steps
    model = onnx.load(str(result.bundle / "policy.onnx"))
    heads = [n.name for n in model.graph.node if n.op_type == "MatMul" and "lm_head" in n.name]
    assert len(heads) == 28 and set(heads) == {n for n in quant["fp32_nodes"] if "lm_head" in n}
    assert not any("lm_head" in n for n in quantized)
    assert "Identity" not in {n.op_type for n in model.graph.node if n.input and n.input[0].startswith("onnx::")}
    runtime = BundlePolicy(result.bundle)
    assert runtime.predict(synthetic_observations(CONTRACT, 1, seed=2)[0]).shape == (4, 7)


def test_int8_plan_excludes_preprocessing_and_patterns_and_sees_shared_weights() -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def weight(name: str, shape: tuple[int, int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ones(shape, np.float32), name)

    nodes = [  # image -> scaled -> resized (width pass) -> an encoder layer -> logits, twice (shared head)
        helper.make_node("Transpose", ["image_scene"], ["t"], name="/Transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["t"], ["c"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Div", ["c", "k255"], ["d"], name="/Div"),
        helper.make_node("MatMul", ["d", "wx"], ["r"], name="/MatMul"),
        helper.make_node("Clip", ["r"], ["rc"], name="/Clip"),
        helper.make_node("Flatten", ["rc"], ["f"], name="/Flatten", axis=1),
        helper.make_node("MatMul", ["f", "w_up"], ["h"], name="/model/layers.0/mlp/up_proj/MatMul"),
        helper.make_node("MatMul", ["h", "w_head"], ["logits0"], name="/lm_head/MatMul"),
        helper.make_node("Identity", ["w_head"], ["w_head_shared"], name="/Identity"),
        helper.make_node("MatMul", ["h", "w_head_shared"], ["logits1"], name="/lm_head_1/MatMul"),
        helper.make_node("MatMul", ["h", "h_t"], ["scores"], name="/model/layers.0/self_attn/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image_scene", TensorProto.UINT8, [1, 4, 4, 3]),
         helper.make_tensor_value_info("h_t", TensorProto.FLOAT, [8, 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("logits0", "logits1", "scores")],
        [weight("wx", (4, 2)), weight("w_up", (24, 8)), weight("w_head", (8, 5)),
         numpy_helper.from_array(np.array(255.0, np.float32), "k255")],
    )  # fmt: skip
    model = helper.make_model(graph)
    quantize, fp32 = int8_plan(model)
    assert quantize == ["/model/layers.0/mlp/up_proj/MatMul"]  # activation x activation: not a candidate
    assert fp32 == {"/MatMul": "image preprocessing (resize matrix)", "/lm_head/MatMul": "matches 'lm_head'"}
    assert bypass_weight_identities(model) == 1 and "Identity" not in {n.op_type for n in model.graph.node}
    quantize, fp32 = int8_plan(model)
    assert fp32["/lm_head_1/MatMul"] == "matches 'lm_head'"  # the shared head is now a candidate, left fp32
    quantize, fp32 = int8_plan(model, ())
    assert quantize == ["/model/layers.0/mlp/up_proj/MatMul", "/lm_head/MatMul", "/lm_head_1/MatMul"]
    assert list(fp32) == ["/MatMul"]  # the resize stays fp32 whatever the patterns


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
    bad_options = (
        dict(optimize="all"), dict(quantize="int4"), dict(action_tolerance=0.0), dict(intra_op_threads=0),
        dict(quantize="int8", int8_exclude=("lm_head[",)),
    )  # fmt: skip
    for bad in bad_options:
        with pytest.raises(ExportError):
            export_checkpoint(regression_ckpt, tmp_path / "x", options=replace(FAST, **bad), progress=quiet)
    assert not (tmp_path / "x").exists()


def test_cli_quantize_flag(regression_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-int8"
    rc = cli_main(["export", str(regression_ckpt), "-o", str(out), "--quantize", "int8", "--parity-samples", "4"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["model"]["levers"]["quantization"]["kind"] == "dynamic"
    assert "/lm_head/MatMul" in m["model"]["levers"]["quantization"]["fp32_nodes"]
    rc = cli_main([
        "export", str(regression_ckpt), "-o", str(tmp_path / "cli-all"), "--quantize", "int8", "--no-int8-per-channel",
        "--parity-samples", "4", "--action-tolerance", "1.0", "int8_exclude=[]",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    quant = json.loads((tmp_path / "cli-all" / MANIFEST_NAME).read_text())["model"]["levers"]["quantization"]
    assert quant["exclude"] == [] and quant["per_channel"] is False and "/lm_head/MatMul" in quant["quantized_nodes"]
    rc = cli_main([
        "export", str(regression_ckpt), "-o", str(tmp_path / "cli-tight"), "--quantize", "int8",
        "--action-tolerance", "1e-9", "--parity-samples", "4",
    ])  # fmt: skip
    assert rc == 1 and "beyond the action tolerance" in capsys.readouterr().err
    assert not (tmp_path / "cli-tight").exists()
