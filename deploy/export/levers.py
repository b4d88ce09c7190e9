"""The standard ONNX Runtime speed levers, applied to a staged ``policy.onnx`` after tracing.

* ``quantize="int8"``: ``onnxruntime.quantization.quantize_dynamic`` (weights int8 per output
  channel, activations uint8 per tensor, quantized per call), on ``MatMul`` nodes with a constant
  weight (:func:`int8_plan`). ``Gemm`` is not an op the dynamic quantizer has an integer kernel
  for (``IntegerOpsRegistry``: no ``Gemm``), so 2-D ``nn.Linear`` layers (proprio projector,
  value head, keypoint projection) always stay fp32, and ``Conv`` (patch embedding, keypoint
  stem) is left fp32 too: quantized it was slower on the CPU and no more accurate. Left fp32 by
  design, recorded in the manifest's ``levers.quantization.fp32_nodes`` with the reason:

  - the image preprocessing (the checkpoint's resize, two constant matrices per camera that the
    manifest documents as applied in the graph): always;
  - nodes whose name (or an input's name) matches one of ``ExportOptions.int8_exclude``
    (default :data:`INT8_EXCLUDE`: the action-logit projection ``lm_head``, the vision patch
    embedding, the keypoint / vision stems, the proprio projector).

  Lossy: the parity check then compares *decoded actions* within ``action_tolerance`` of each
  action dimension's range and reports token flips (:func:`simbridge.deploy.export.parity.check_parity`).
  What was measured (tests/benchmarks/bench_export.py, docs/benchmarks/export_levers.json): on a
  trained tiny OpenVLA-OFT checkpoint no int8 variant passes the 5% gate — per-tensor or
  per-channel weights, ``reduce_range``, any exclusion of the sensitive nodes, only part of the
  LM quantized, 8-bit block-wise weights (``MatMulNBits``) or static QDQ. The checkpoint's own
  greedy choice is a near tie between far-apart bins on a few percent of its action tokens
  (log-prob gaps of a few hundredths of a nat), which any int8 error flips; fp16-rounded weights
  (no speed-up on a CPU) flip none.
* ``optimize="basic"|"extended"``: the model is replaced by the one onnxruntime writes
  (``SessionOptions.optimized_model_filepath``) after optimizing it offline on the CPU execution
  provider. Such a file is specific to that provider (extended fusions are CPU contrib ops): the
  manifest says so, and the runtime warns when it runs one on another provider. ``"all"`` is never
  written offline (its layout transforms depend on the machine); it is a runtime level.
* ``graph_optimization``: the level the runtime's session applies at load, recorded in
  ``model.session.graph_optimization_level`` (bundles without it: ``"all"``, as before).
* ``intra_op_threads``: recorded in ``model.session.intra_op_threads`` for the runtime.
* fp16 (GPU providers): not done. It needs ``onnxconverter-common`` (not a dependency) and the
  graph's unrolled decoding loop, argmax and int64 token arithmetic would need an op block list
  checked on a GPU; the parity check runs on CPU, where fp16 is slower than fp32.

Quantize first, then optimize offline: the quantizer expects plain ONNX ops, not fused contrib ops.
Bundles written before ``fp32_nodes`` existed (``op_types`` ``["MatMul", "Gemm"]``, per-tensor
weights) load as they are: the runtime reads nothing from ``levers.quantization``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simbridge.deploy.export.options import (
    INT8_ACTION_TOLERANCE,
    OPTIMIZATION_LEVELS,
    ExportError,
    ExportOptions,
)

#: The op types ``quantize="int8"`` quantizes (the dynamic quantizer has no integer Gemm).
INT8_OP_TYPES = ("MatMul",)
#: Default ``ExportOptions.int8_exclude``: regular expressions searched in each candidate node's
#: name and its inputs' names; a match stays fp32. The action-bin logits' projection, the vision
#: patch embedding, the keypoint / vision convolution stems and the proprio projector.
INT8_EXCLUDE = ("lm_head", "patch_embed", "keypoint_stem", "vision_stem", "proprio_proj")
#: Ops between an ``image_*`` input and its resized pixels (the graph's preprocessing).
_PREPROCESSING_OPS = frozenset({"Transpose", "Cast", "Div", "Clip", "MatMul"})


def check_lever_options(options: ExportOptions) -> None:
    """ExportError for lever options that cannot work (checked before the slow export)."""
    if options.graph_optimization not in OPTIMIZATION_LEVELS:
        raise ExportError(
            f"graph_optimization {options.graph_optimization!r} is not one of {list(OPTIMIZATION_LEVELS)}"
        )
    if options.optimize not in ("none", "basic", "extended"):
        raise ExportError(
            f"optimize {options.optimize!r}: use 'none', 'basic' or 'extended' ('all' is a runtime level: "
            "its layout transforms depend on the machine, so it is never written offline)"
        )
    if options.quantize not in ("none", "int8"):
        raise ExportError(f"quantize {options.quantize!r}: use 'none' or 'int8'")
    for pattern in options.int8_exclude or ():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ExportError(f"int8_exclude {pattern!r} is not a regular expression: {exc}") from None
    tol = options.action_tolerance
    if tol is not None and not 0 < tol <= 1:
        raise ExportError(f"action_tolerance {tol}: a fraction of each action dimension's range, in (0, 1]")
    if options.intra_op_threads is not None and options.intra_op_threads < 1:
        raise ExportError(f"intra_op_threads {options.intra_op_threads}: at least 1 (or omit it)")


def action_tolerance(options: ExportOptions) -> float | None:
    """The decoded-action tolerance the parity check applies (None: exact mode, no lossy lever)."""
    if not options.lossy:
        return options.action_tolerance  # a tolerance given without a lossy lever gates too
    return INT8_ACTION_TOLERANCE if options.action_tolerance is None else options.action_tolerance


def apply_levers(model_path: Path, options: ExportOptions) -> dict[str, Any]:
    """Apply the lossy/offline levers to ``model_path`` in place; return the manifest's
    ``model.levers`` and ``model.session`` sections as ``{"levers": ..., "session": ...}``."""
    import onnxruntime as ort

    check_lever_options(options)
    levers: dict[str, Any] = {"quantization": None, "offline_optimization": None, "fp16": False}
    if options.quantize == "int8":
        exclude = INT8_EXCLUDE if options.int8_exclude is None else tuple(options.int8_exclude)
        levers["quantization"] = quantize_int8(model_path, exclude, per_channel=options.int8_per_channel)
    if options.optimize != "none":
        levers["offline_optimization"] = optimize_offline(model_path, options.optimize)
    session: dict[str, Any] = {"graph_optimization_level": options.graph_optimization}
    if options.intra_op_threads is not None:
        session["intra_op_threads"] = int(options.intra_op_threads)
    levers["onnxruntime"] = ort.__version__
    return {"levers": levers, "session": session}


def int8_plan(model: Any, exclude: Sequence[str] = INT8_EXCLUDE) -> tuple[list[str], dict[str, str]]:
    """The nodes of ``model`` (an ``onnx.ModelProto``) int8 quantizes, and those it leaves fp32
    (name -> why). Candidates: ``INT8_OP_TYPES`` nodes with a constant weight (second input an
    initializer), as ``quantize_dynamic`` picks them; fp32: the image preprocessing, then the
    nodes matching an ``exclude`` pattern."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    candidates = [
        n for n in graph.node if n.op_type in INT8_OP_TYPES and len(n.input) > 1 and n.input[1] in initializers
    ]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    preprocessing: set[str] = set()
    frontier = [i.name for i in graph.input if i.name.startswith("image_")]
    while frontier:  # from the uint8 images through scaling and the resize matmuls, no further
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in _PREPROCESSING_OPS and node.name not in preprocessing:
                preprocessing.add(node.name)
                frontier.extend(node.output)
    patterns = [re.compile(p) for p in exclude]
    quantize, fp32 = [], {}
    for node in candidates:
        hit = next((p.pattern for p in patterns if any(p.search(s) for s in (node.name, *node.input))), None)
        if node.name in preprocessing:
            fp32[node.name] = "image preprocessing (resize matrix)"
        elif hit is not None:
            fp32[node.name] = f"matches {hit!r}"
        else:
            quantize.append(node.name)
    return quantize, fp32


def bypass_weight_identities(model: Any) -> int:
    """Point the consumers of ``Identity(initializer)`` nodes at the initializer itself and drop
    those nodes (in place; the same numbers); how many. The tracer shares a weight used more than
    once through such nodes — the autoregressive family's unrolled decoding steps reuse every LM
    weight — and ``quantize_dynamic`` only quantizes a MatMul whose weight is an initializer, so
    without this only the first decoding step would be quantized."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs
    }
    if not alias:
        return 0
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    value_info = [v for v in graph.value_info if v.name not in alias]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return len(alias)


def quantize_int8(
    model_path: Path, exclude: Sequence[str] = INT8_EXCLUDE, per_channel: bool = True
) -> dict[str, Any]:
    """Dynamic int8 quantization of ``model_path`` in place, leaving :func:`int8_plan`'s fp32
    nodes alone; the ``levers.quantization`` record."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(model_path))
    if any(not n.name for n in model.graph.node if n.op_type in INT8_OP_TYPES):
        raise ExportError("int8: the graph has unnamed MatMul nodes; the exclusions need node names")
    bypassed = bypass_weight_identities(model)
    quantize, fp32 = int8_plan(model, exclude)
    if not quantize:
        raise ExportError(f"int8: no node left to quantize once {sorted(fp32)} are excluded")
    source, tmp = model_path.with_suffix(".fp32.onnx"), model_path.with_suffix(".int8.onnx")
    try:
        onnx.save(model, str(source))
        quantize_dynamic(
            str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OP_TYPES),
            per_channel=per_channel, nodes_to_exclude=sorted(fp32), nodes_to_quantize=quantize,
        )  # fmt: skip
        left = {n.name for n in onnx.load(str(tmp), load_external_data=False).graph.node if n.op_type == "MatMul"}
    except Exception as exc:  # the quantizer raises plain exceptions from deep inside
        tmp.unlink(missing_ok=True)
        raise ExportError(f"int8 dynamic quantization failed: {type(exc).__name__}: {exc}") from None
    finally:
        source.unlink(missing_ok=True)
    os.replace(tmp, model_path)
    return {
        "kind": "dynamic",
        "weights": f"int8 (QInt8, {'per output channel' if per_channel else 'per tensor'})",
        "activations": "uint8, quantized at run time (per tensor)",
        "op_types": list(INT8_OP_TYPES),
        "per_channel": bool(per_channel),
        "reduce_range": False,
        "exclude": list(exclude),
        "weight_identities_bypassed": bypassed,
        "quantized_nodes": [n for n in quantize if n not in left],
        "fp32_nodes": fp32,
        "tool": "onnxruntime.quantization.quantize_dynamic",
    }


def optimize_offline(model_path: Path, level: str) -> dict[str, Any]:
    """Replace ``model_path`` by onnxruntime's ``level``-optimized model (CPU provider)."""
    import onnxruntime as ort

    tmp = model_path.with_suffix(".opt.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort_level(level)
    opts.optimized_model_filepath = str(tmp)
    try:
        ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        tmp.unlink(missing_ok=True)
        raise ExportError(f"onnxruntime could not optimize {model_path.name} offline ({level}): {exc}") from None
    os.replace(tmp, model_path)
    return {
        "level": level,
        "provider": "CPUExecutionProvider",
        "note": "optimized offline for the CPU execution provider; re-export without it for CUDA/TensorRT",
    }


def ort_level(name: str) -> Any:
    """The ``onnxruntime.GraphOptimizationLevel`` named ``name`` (one of OPTIMIZATION_LEVELS)."""
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[name]
