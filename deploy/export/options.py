"""What an export is asked to do (:class:`ExportOptions`), how it fails (:class:`ExportError`),
and the names of the files and graph outputs every bundle it writes has.

The speed levers (:mod:`simbridge.deploy.export.levers`) are options here: ``graph_optimization``
(the level the runtime's session applies, recorded in the manifest), ``optimize`` (an offline-
optimized model file, CPU-provider specific), ``quantize="int8"`` (dynamic int8 weights, gated by
parity on decoded actions within ``action_tolerance`` of each action dimension's range; the nodes
``int8_exclude`` names and the image preprocessing stay fp32) and
``intra_op_threads`` (recorded for the runtime).

Plain Python: no torch, no onnxruntime (the other modules of the package import these).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MODEL_FILE = "policy.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: The graph's outputs, in order: bins (B, chunk*7), physical actions (B, chunk, 7),
#: the greedy tokens' log-prob (B,) and the critic's value (B,).
GRAPH_OUTPUTS = ("tokens", "actions", "logprob", "value")
#: onnxruntime graph optimization levels, by the names manifests and flags use.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: Default ``action_tolerance`` of a quantized export: max |torch - bundle| of a decoded action
#: dimension, as a fraction of that dimension's range (contract ``action.high - action.low``).
INT8_ACTION_TOLERANCE = 0.05


class ExportError(RuntimeError):
    """The checkpoint could not be exported (unreadable checkpoint, ONNX export or parity failed)."""


@dataclass
class ExportOptions:
    parity_samples: int = 8
    tolerance: float = 1e-4
    opset: int = 17
    parity_store: Path | None = None  # episode store whose observations the parity check uses
    seed: int = 0
    exporter: str = "auto"  # "torchscript" | "dynamo" | "auto" (tracing, then dynamo if it fails)
    signing_key: Path | None = None  # ed25519 private key PEM: write manifest.sig (simbridge.deploy.signing)
    # --- speed levers (simbridge.deploy.export.levers); the manifest records which were applied ---
    graph_optimization: str = "all"  # level the runtime's session applies (one of OPTIMIZATION_LEVELS)
    optimize: Literal["none", "basic", "extended"] = "none"  # write the model optimized offline (CPU EP)
    quantize: Literal["none", "int8"] = "none"  # int8: dynamic quantization, weights int8, MatMul
    # int8: regexes of nodes left fp32 (None: levers.INT8_EXCLUDE; () : only the image preprocessing)
    int8_exclude: tuple[str, ...] | None = None
    int8_per_channel: bool = True  # int8: weight scales per output channel (False: per tensor)
    action_tolerance: float | None = None  # lossy levers: fraction of each action dim's range (None: 0.05)
    intra_op_threads: int | None = None  # recorded for the runtime (None: onnxruntime's default)

    @property
    def lossy(self) -> bool:
        """Whether a lever changes the numbers beyond float noise (parity then compares decoded actions)."""
        return self.quantize != "none"
