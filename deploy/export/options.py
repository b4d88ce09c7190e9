"""What an export is asked to do (:class:`ExportOptions`), how it fails (:class:`ExportError`),
and the names of the files and graph outputs every bundle it writes has.

Plain Python: no torch, no onnxruntime (the other modules of the package import these).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "policy.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: The graph's outputs, in order: bins (B, chunk*7), physical actions (B, chunk, 7),
#: the greedy tokens' log-prob (B,) and the critic's value (B,).
GRAPH_OUTPUTS = ("tokens", "actions", "logprob", "value")


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
