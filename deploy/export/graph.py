"""The ONNX graph of a bundle: :class:`PolicyGraph` (the policy over the bundle's raw inputs)
and :func:`export_onnx` (traces it to ``policy.onnx``).

The graph takes one ``uint8 (B, H, W, 3)`` image per camera, the raw proprio vector when the
policy reads it, and the tokenized instruction (``input_ids`` / ``attention_mask``, left-padded);
inside it scales and resizes the images (the checkpoint's own resize, probed as two matrices and
applied width first, each pass clipped to [0, 1], as PIL's bicubic does; bilinear never leaves it),
normalizes proprio, then runs the policy's :meth:`greedy_decode` — the very code
``act(deterministic=True)`` runs: one pass for the parallel family, the autoregressive family's
KV-cached loop unrolled — which also de-normalizes the actions. Outputs: ``GRAPH_OUTPUTS``.

The only module of ``simbridge.deploy`` that imports torch at the top; the package imports it
lazily (exporting, never on the robot).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simbridge.data.spec import Observation
from simbridge.deploy.export.manifest import model_section
from simbridge.deploy.export.options import GRAPH_OUTPUTS, ExportError


def _resize_matrices(policy: Any, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's image resize as two matrices, ``resized = clip(Wy @ clip(image @ Wx.T))``.

    Found by running the policy's own ``prepare_images`` on single lit rows and columns over a
    grey background (so that no clipping happens: a bicubic kernel's negative lobes would be
    clipped at 0 around a lit line on black), so the graph reproduces whatever separable resize
    the checkpoint uses — antialiased bilinear and PIL's bicubic included, which ONNX ``Resize``
    does not match exactly. Checked against ``prepare_images`` on a real image before use.
    """
    base, lit = 64, 128  # grey + lit line stays inside [0, 255] after any kernel's over/undershoot
    probes = np.full((height + width + 1, 1, height, width, 3), base, np.uint8)
    for k in range(height):
        probes[k, 0, k, :, :] = base + lit
    for k in range(width):
        probes[height + k, 0, :, k, :] = base + lit
    with torch.no_grad():
        out = policy.prepare_images(probes).cpu().double()  # (H+W+1, 1, 3, S, S); the last: grey only
        out = (out[:-1] - out[-1:]) * (255.0 / lit)  # the response to one lit line of value 1
        wy = out[:height, 0, 0, :, 0].T.contiguous().float()  # (S, H)
        wx = out[height:, 0, 0, 0, :].T.contiguous().float()  # (S, W)
        image = np.random.default_rng(0).integers(0, 256, (1, 1, height, width, 3), dtype=np.uint8)
        expected = policy.prepare_images(image).cpu().float()[0, 0]
        x = torch.as_tensor(image[0, 0]).permute(2, 0, 1).float() / 255.0
        err = float((_resize(x, wy, wx) - expected).abs().max())
    if err > 1e-5:
        raise ExportError(
            f"the policy's image preprocessing is not a separable linear resize (error {err:.2g}); "
            "the exporter cannot reproduce it in the graph"
        )
    return wy, wx


def _resize(x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., S, S): the width pass, then the height pass, each clipped to [0, 1]."""
    return torch.matmul(wy, torch.matmul(x, wx.t()).clamp(0.0, 1.0)).clamp(0.0, 1.0)


class PolicyGraph(nn.Module):
    """A policy over the bundle's raw inputs (``input_names``, in order), decoding greedily."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        contract = policy.contract
        self.cameras = list(policy.config.camera_names)
        if self.cameras != list(contract.observation.camera_names):
            raise ExportError(
                f"checkpoint config camera_names {self.cameras} differ from its contract's "
                f"{contract.observation.camera_names}"
            )
        stats = policy.action_stats
        if stats is None:
            raise ExportError(
                "the checkpoint has no action statistics (action_stats.json); re-save it with save_pretrained"
            )
        self.policy = policy
        self.uses_proprio = getattr(policy, "proprio_proj", None) is not None
        self.input_names = [
            *(f"image_{c}" for c in self.cameras),
            *(["proprio"] if self.uses_proprio else []),
            "input_ids",
            "attention_mask",
        ]
        self.decoding = "autoregressive-unrolled" if policy.autoregressive else "parallel"
        for cam in contract.observation.cameras:
            wy, wx = _resize_matrices(policy, cam.height, cam.width)
            self.register_buffer(f"wy_{cam.name}", wy)
            self.register_buffer(f"wx_{cam.name}", wx)
        mean = stats.proprio_mean if stats.proprio_mean is not None else np.zeros(8, np.float32)
        std = stats.proprio_std if stats.proprio_std is not None else np.ones(8, np.float32)
        self.register_buffer("proprio_mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("proprio_std", torch.as_tensor(np.asarray(std, np.float32)))
        self.proprio_clip = bool(getattr(stats, "proprio_clip", False))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        images, rest = inputs[: len(self.cameras)], list(inputs[len(self.cameras) :])
        proprio = rest.pop(0) if self.uses_proprio else None
        input_ids, attention_mask = rest
        pixels = []
        for name, img in zip(self.cameras, images, strict=True):
            x = img.permute(0, 3, 1, 2).float() / 255.0
            pixels.append(_resize(x, getattr(self, f"wy_{name}"), getattr(self, f"wx_{name}")))
        batch = {
            "pixel_values": torch.stack(pixels, dim=1),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }
        if proprio is not None:
            batch["proprio"] = (proprio - self.proprio_mean) / self.proprio_std
            if self.proprio_clip:  # OpenVLA-OFT's q01/q99 proprio normalization clips
                batch["proprio"] = batch["proprio"].clamp(-1.0, 1.0)
        out = self.policy.greedy_decode(batch)  # the torch policy's own decoding, traced
        return out.tokens, out.actions, out.logprobs, out.values


@contextlib.contextmanager
def _static_position_embeddings(policy: Any) -> Iterator[None]:
    """While tracing, use the vision encoders' position tables as they are when the patch grid matches.

    transformers' DINOv2 embeddings always interpolate the table under ``torch.jit`` tracing (to
    keep image sizes dynamic) — with DINOv2-with-registers an antialiased bicubic that ONNX has no
    operator for. The graph feeds the model's own image size, where that interpolation is the identity.
    """
    patched = []
    for name in ("dinov2", "siglip"):
        emb = getattr(getattr(policy, name, None), "embeddings", None)
        if emb is None or not hasattr(emb, "position_embeddings"):
            continue
        original = emb.interpolate_pos_encoding

        def interpolate(embeddings, height, width, emb=emb, original=original):
            if embeddings.shape[1] == emb.position_embeddings.shape[1] and height == width:
                return emb.position_embeddings
            return original(embeddings, height, width)

        emb.interpolate_pos_encoding = interpolate
        patched.append(emb)
    try:
        yield
    finally:
        for emb in patched:
            del emb.interpolate_pos_encoding  # back to the class's method


def _run_exporter(
    exporter: str, module: nn.Module, args: tuple, path: Path, input_names: list[str], opset: int
) -> None:
    with warnings.catch_warnings(), torch.no_grad(), _static_position_embeddings(module.policy):
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
        if exporter == "torchscript":
            dynamic_axes: dict[str, dict[int, str]] = {
                n: {0: "batch"} for n in (*input_names, *GRAPH_OUTPUTS)
            }
            dynamic_axes["input_ids"][1] = dynamic_axes["attention_mask"][1] = "text"
            torch.onnx.export(
                module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                output_names=list(GRAPH_OUTPUTS), dynamic_axes=dynamic_axes, do_constant_folding=True,
            )  # fmt: skip
        elif exporter == "dynamo":
            batch, text = (
                torch.export.Dim("batch", min=1, max=4096),
                torch.export.Dim("text", min=2, max=4096),
            )
            shapes = tuple(
                {0: batch, 1: text} if n in ("input_ids", "attention_mask") else {0: batch}
                for n in input_names
            )
            torch.onnx.export(
                module, args, str(path), dynamo=True, opset_version=max(opset, 18), input_names=input_names,
                output_names=list(GRAPH_OUTPUTS), dynamic_shapes=(shapes,), external_data=False, verbose=False,
            )  # fmt: skip
        else:
            raise ExportError(f"unknown exporter {exporter!r}; use 'auto', 'torchscript' or 'dynamo'")


def _graph_feeds(
    policy: Any, input_names: list[str], observations: Sequence[Observation]
) -> dict[str, np.ndarray]:
    """Feeds built with the *torch* policy's tokenizer (the reference the runtime must match)."""
    ids, mask = policy.prepare_text([o.instruction for o in observations])
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name.startswith("image_"):
            feeds[name] = np.stack([o.images[name[len("image_") :]] for o in observations])
        elif name == "proprio":
            feeds[name] = np.stack([o.proprio() for o in observations]).astype(np.float32)
    feeds["input_ids"], feeds["attention_mask"] = ids.cpu().numpy(), mask.cpu().numpy()
    return feeds


def export_onnx(
    policy: Any, example: Sequence[Observation], path: Path, opset: int = 17, options_exporter: str = "auto"
) -> dict[str, Any]:
    """Write the greedy policy graph to ``path`` with a dynamic batch and text length; return the
    manifest's ``model`` section.

    ``example``: at least two observations (a batch-1 example would fix the batch at 1).
    ``options_exporter``: "torchscript" (the tracing exporter: fast, the unrolled loop is
    simply traced), "dynamo" (``torch.export``: slower, stricter) or "auto" (tracing, then
    dynamo if tracing fails).
    """
    module = PolicyGraph(policy).eval()
    feeds = _graph_feeds(policy, module.input_names, example)
    args = tuple(torch.as_tensor(feeds[n]) for n in module.input_names)
    errors = []
    for exporter in ("torchscript", "dynamo") if options_exporter == "auto" else (options_exporter,):
        try:
            _run_exporter(exporter, module, args, path, module.input_names, opset)
            used = exporter
            break
        except Exception as exc:  # both exporters raise a zoo of types; the message is what helps
            errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            path.unlink(missing_ok=True)
    else:
        raise ExportError(
            f"torch.onnx.export failed for the {policy.config.family} policy ({'; '.join(errors)})"
        )
    return model_section(
        policy, path, module.input_names, module.decoding, f"torch.onnx ({used}), torch {torch.__version__}"
    )
