"""SFT's loss: model inputs and normalized target chunks, and the action-token cross-entropy.

Actions are normalized with 1st/99th percentile statistics of the training episodes and
discretized into the policy's bins; the loss is the cross-entropy of the action tokens (one-hot,
or Gaussian soft targets over neighbouring bins) plus L1 on the normalized actions when the
OFT regression head is on. :func:`sft_forward` also returns the model's output, from which
:mod:`.action_error` measures the teacher-forced error in millimetres and radians.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simbridge.training.models import VLAPolicy
from simbridge.training.sft.data import Demos


def make_batch(
    policy: VLAPolicy, demos: Demos, rows: np.ndarray
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs and normalized target chunks (B, K·7) for demo rows."""
    ids, mask = policy.prepare_text([demos.instructions[e] for e in demos.episode[rows]])
    batch = {
        "pixel_values": policy.prepare_images(demos.images[rows]),
        "input_ids": ids,
        "attention_mask": mask,
        "proprio": policy.prepare_proprio(demos.proprio[rows]),
    }
    chunk = demos.chunk(rows, policy.config.chunk_size)
    target = torch.as_tensor(policy.action_stats.normalize(chunk), dtype=torch.float32).flatten(1)
    return batch, target


def soft_bin_targets(policy: VLAPolicy, target: torch.Tensor, sigma_bins: float) -> torch.Tensor:
    """(B, T) normalized targets -> (B, T, bins) Gaussian weights over the bins around each target.

    Cross-entropy against these (HL-Gauss: Imani & White 2018, Farebrother et al. 2024) tells the
    model that neighbouring bins are nearly right, which one-hot targets over 256 unrelated
    classes do not: it learns the bins' order from the data instead of bin by bin.
    """
    values = policy.bin_values(torch.arange(policy.config.num_action_bins, device=target.device))
    width = float((values[-1] - values[0]) / (len(values) - 1))
    z = (target.unsqueeze(-1) - values) / (sigma_bins * width)
    weights = torch.exp(-0.5 * z * z)
    return weights / weights.sum(-1, keepdim=True)


def sft_loss(
    policy: VLAPolicy,
    batch: dict[str, torch.Tensor],
    target: torch.Tensor,
    l1_weight: float = 1.0,
    bin_sigma: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token cross-entropy (one-hot, or Gaussian soft targets with ``bin_sigma`` > 0) + L1 of the
    regression head; returns (loss, metrics)."""
    loss, metrics, _ = sft_forward(policy, batch, target, l1_weight, bin_sigma)
    return loss, metrics


def sft_forward(
    policy: VLAPolicy,
    batch: dict[str, torch.Tensor],
    target: torch.Tensor,
    l1_weight: float = 1.0,
    bin_sigma: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float], Any]:
    """:func:`sft_loss` and the teacher-forced model output it came from: (loss, metrics, output)."""
    tokens = policy.tokens_from_normalized(target)
    out = policy.forward(**batch, tokens=tokens)
    logits = out.action_logits
    if bin_sigma > 0:
        soft = soft_bin_targets(policy, target, bin_sigma)
        ce = -(soft * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    else:
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    loss = ce
    with torch.no_grad():
        pred = logits.argmax(-1)
        centers = policy.bin_values(pred)
        metrics = {
            "ce": ce.item(),
            "token_accuracy": (pred == tokens).float().mean().item(),
            "action_l1_norm": (centers - target).abs().mean().item(),
        }
    if out.regression is not None:
        l1 = (out.regression - target).abs().mean()
        loss = loss + l1_weight * l1
        metrics["l1"] = l1.item()
    metrics["loss"] = loss.item()
    return loss, metrics, out
