"""Weight sync actor -> rollout: only the trainable tensors travel, versioned and measured.

The rollout worker builds the same policy as the actor (same config, same seed or the same
``init_checkpoint``), so the frozen weights (a LoRA run's whole base model) are already equal on
both sides; each iteration sends only what the optimizer changed (:func:`make_payload`):
the adapters and the trainable heads with LoRA, every parameter without. Buffers never change
in training and stay. A fingerprint of the frozen weights travels with every payload (a few
floats), and the rollout refuses a payload whose frozen weights differ from its own.

:class:`WeightPayload` records its version, its bytes and (filled in by the runner) the seconds
the sync took; the runner logs ``sync/bytes`` and ``time/sync``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class WeightSyncError(RuntimeError):
    """A payload does not fit the receiving policy (other keys, other frozen weights, an old version)."""


@dataclass
class WeightPayload:
    version: int
    tensors: dict[str, torch.Tensor]  # parameter name -> CPU tensor (trainable parameters only)
    frozen_fingerprint: tuple[float, float, int]  # (sum, sum of squares, count) of the frozen weights

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


_FINGERPRINT_ATTR = "_simbridge_frozen_fingerprint"


def frozen_fingerprint(policy: nn.Module) -> tuple[float, float, int]:
    """Float64 sum and sum of squares of the frozen parameters, and their element count.

    Computed once per policy and kept (frozen weights do not change; which ones are frozen is part
    of the key), so a sync costs no pass over the whole base model.
    """
    frozen = [(n, p) for n, p in policy.named_parameters() if not p.requires_grad]
    key = tuple(n for n, _ in frozen)
    cached = getattr(policy, _FINGERPRINT_ATTR, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    total, squares, count = 0.0, 0.0, 0
    with torch.no_grad():
        for _, p in frozen:
            total += float(p.detach().sum(dtype=torch.float64))
            squares += float(p.detach().square().sum(dtype=torch.float64))
            count += p.numel()
    setattr(policy, _FINGERPRINT_ATTR, (key, (total, squares, count)))
    return total, squares, count


def make_payload(policy: nn.Module, version: int) -> WeightPayload:
    """The actor's trainable tensors (detached CPU copies) at ``version``."""
    tensors = {n: p.detach().to("cpu", copy=True) for n, p in policy.named_parameters() if p.requires_grad}
    return WeightPayload(int(version), tensors, frozen_fingerprint(policy))


def apply_payload(policy: nn.Module, payload: WeightPayload, held_version: int, rtol: float = 1e-6) -> int:
    """Copy ``payload`` into ``policy`` in place; returns the new version.

    Raises :class:`WeightSyncError` when the payload is older than ``held_version``, names a tensor the
    policy lacks (or misses one it trains), or its frozen weights differ from the policy's.
    """
    if payload.version < held_version:
        raise WeightSyncError(f"weights version {payload.version} is older than the held version {held_version}")
    params = dict(policy.named_parameters())
    unknown = sorted(set(payload.tensors) - set(params))
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in payload.tensors)
    if unknown or missing:
        raise WeightSyncError(
            f"the payload does not match the rollout policy: unknown {unknown[:5]}, missing {missing[:5]}; "
            "actor and rollout must be built from the same policy config (LoRA options included)"
        )
    theirs, ours = payload.frozen_fingerprint, frozen_fingerprint(policy)
    if theirs[2] != ours[2] or any(abs(a - b) > rtol * max(1.0, abs(a)) for a, b in zip(theirs[:2], ours[:2], strict=True)):
        raise WeightSyncError(
            f"the rollout's frozen weights differ from the actor's (fingerprint {ours} vs {theirs}): "
            "they were built from different checkpoints or seeds; only trainable tensors are synced"
        )
    with torch.no_grad():
        for name, value in payload.tensors.items():
            params[name].copy_(value)
    return payload.version
