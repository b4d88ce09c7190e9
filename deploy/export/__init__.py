"""The exporter: training checkpoint -> ONNX policy bundle, with a torch-vs-ONNX parity check.

    from simbridge.deploy.export import export_checkpoint, watch
    result = export_checkpoint("runs/sft/.../checkpoints/iter_000100", "bundles/sft-100")
    print(result.summary())

What goes into the graph (one ``policy.onnx``, dynamic batch and text-length dimensions):

* inputs: one ``uint8 (B, H, W, 3)`` RGB image per camera at the contract's size
  (``image_<camera>``), the raw proprio vector ``float32 (B, 8)`` when the policy uses it, and
  the tokenized instruction ``input_ids`` / ``attention_mask`` ``int64 (B, T)`` (left-padded);
* inside: scaling to [0, 1], the checkpoint's antialiased resize (as two constant matrices,
  probed from its own ``prepare_images``), proprio normalization, then the policy's own
  ``greedy_decode`` (the code ``act(deterministic=True)`` runs): the encoders' mean/std
  normalization, the network, greedy decoding — the OFT family in one forward pass, the
  autoregressive family's ``7*chunk`` KV-cached steps unrolled into the graph (the text length
  stays dynamic) — and de-normalization to physical units with the checkpoint's statistics;
* outputs: ``tokens`` (B, chunk*7) bin ids, ``actions`` (B, chunk, 7) physical units,
  ``logprob`` (B,) of the greedy tokens and ``value`` (B,) the critic's estimate.

Doing preprocessing and de-normalization in the graph keeps one implementation (the
checkpoint's) and lets a GPU runtime do them on the GPU; the manifest records every number
(``observation.cameras``, ``observation.proprio``, ``action.normalization``, marked
``"applied_in": "graph"``) for people and other runtimes. The runtime only stacks images and
tokenizes the instruction, with the bundle's ``tokenizer.json``.

Tracing: ``torch.onnx.export(dynamo=False)`` with a batch-2 example, dynamic ``batch``/``text``
axes and an explicit attention mask; if tracing fails, ``torch.export`` (``dynamo=True``) is
tried (slower).

Modules: :mod:`.pipeline` (:func:`export_checkpoint`: the steps in order), :mod:`.graph` (the
torch module and its tracing), :mod:`.manifest` (what the manifest says), :mod:`.parity` (the
check and its observations), :mod:`.watcher` (watch mode), :mod:`.options` (options, errors,
file names). Only :mod:`.graph` imports torch at its top, and this package imports it lazily
(``export_onnx``/``PolicyGraph`` below), so ``synthetic_observations`` works without torch.
"""

from __future__ import annotations

from typing import Any

from simbridge.deploy.export.manifest import build_manifest, model_section, write_tokenizer
from simbridge.deploy.export.options import (
    GRAPH_OUTPUTS,
    MODEL_FILE,
    TOKENIZER_FILE,
    ExportError,
    ExportOptions,
)
from simbridge.deploy.export.parity import (
    ParityReport,
    check_parity,
    store_observations,
    synthetic_observations,
    torch_reference,
)
from simbridge.deploy.export.pipeline import ExportResult, export_checkpoint, load_policy
from simbridge.deploy.export.watcher import (
    ANNOUNCE_FILE,
    read_announcements,
    remove_stale_staging,
    watch,
)

__all__ = [
    "ANNOUNCE_FILE",
    "GRAPH_OUTPUTS",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "ParityReport",
    "PolicyGraph",
    "build_manifest",
    "check_parity",
    "export_checkpoint",
    "export_onnx",
    "load_policy",
    "model_section",
    "read_announcements",
    "remove_stale_staging",
    "store_observations",
    "synthetic_observations",
    "torch_reference",
    "watch",
    "write_tokenizer",
]

_GRAPH_NAMES = ("PolicyGraph", "export_onnx")


def __getattr__(name: str) -> Any:
    # The graph module imports torch: load it on first use, never on the robot.
    if name in _GRAPH_NAMES:
        from simbridge.deploy.export import graph

        return getattr(graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
