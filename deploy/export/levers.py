"""The standard ONNX Runtime speed levers, applied to a staged ``policy.onnx`` after tracing.

* ``quantize="int8"``: ``onnxruntime.quantization.quantize_dynamic`` (weights int8, activations
  quantized per call, ``MatMul``/``Gemm`` only). Lossy: the parity check then compares *decoded
  actions* within ``action_tolerance`` of each action dimension's range and reports token flips
  (:func:`simbridge.deploy.export.parity.check_parity`).
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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simbridge.deploy.export.options import (
    INT8_ACTION_TOLERANCE,
    OPTIMIZATION_LEVELS,
    ExportError,
    ExportOptions,
)

#: The op types ``quantize="int8"`` quantizes.
INT8_OP_TYPES = ("MatMul", "Gemm")


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
        levers["quantization"] = quantize_int8(model_path)
    if options.optimize != "none":
        levers["offline_optimization"] = optimize_offline(model_path, options.optimize)
    session: dict[str, Any] = {"graph_optimization_level": options.graph_optimization}
    if options.intra_op_threads is not None:
        session["intra_op_threads"] = int(options.intra_op_threads)
    levers["onnxruntime"] = ort.__version__
    return {"levers": levers, "session": session}


def quantize_int8(model_path: Path) -> dict[str, Any]:
    """Dynamic int8 quantization of ``model_path`` in place; the ``levers.quantization`` record."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = model_path.with_suffix(".int8.onnx")
    try:
        quantize_dynamic(
            str(model_path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OP_TYPES)
        )
    except Exception as exc:  # the quantizer raises plain exceptions from deep inside
        tmp.unlink(missing_ok=True)
        raise ExportError(f"int8 dynamic quantization failed: {type(exc).__name__}: {exc}") from None
    os.replace(tmp, model_path)
    return {
        "kind": "dynamic",
        "weights": "int8 (QInt8, per tensor)",
        "activations": "uint8, quantized at run time",
        "op_types": list(INT8_OP_TYPES),
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
