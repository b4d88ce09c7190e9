"""Precision and activation memory of a policy in training: bf16 autocast and gradient checkpointing.

* ``precision="bf16"``: every ``policy(...)`` call (``forward``, hence ``evaluate`` / ``act``) runs
  under ``torch.autocast(dtype=bfloat16)`` while the weights, their gradients and the optimizer
  state stay float32 (the "master weights"); the outputs come back as float32 so losses and
  log-probs are computed in full precision. Set on the instance's ``forward``, so SFT's loss and the RL
  algorithms' updates need no change. ``"fp32"``: nothing changes.
* ``gradient_checkpointing=True``: the LM's decoder layers (transformers'
  ``gradient_checkpointing_enable``, non-reentrant) and the vision towers that support it
  recompute their activations in the backward pass instead of keeping them.

Both trainers call :func:`configure_training` once on the policy they optimize.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from typing import Any, Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
_DTYPES = {"bf16": torch.bfloat16}
_AUTOCAST_ATTR = "_simbridge_autocast_dtype"


def _float_outputs(output: Any) -> Any:
    """Floating tensors of a forward's output (a tensor, a dataclass, a tuple) back to float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return dataclasses.replace(
            output, **{f.name: _float_outputs(getattr(output, f.name)) for f in dataclasses.fields(output)}
        )
    if isinstance(output, tuple) and not hasattr(output, "_fields"):
        return tuple(_float_outputs(o) for o in output)
    return output


def _autocast_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``type(self).forward`` under autocast, outputs back to float32 (bound on the instance)."""
    device = next(self.parameters()).device.type
    with torch.autocast(device_type=device, dtype=getattr(self, _AUTOCAST_ATTR)):
        output = type(self).forward(self, *args, **kwargs)
    return _float_outputs(output)


def set_precision(policy: nn.Module, precision: str) -> None:
    """Run ``policy``'s forward under bf16 autocast (``"bf16"``) or not (``"fp32"``); idempotent.

    The instance's ``forward`` is rebound (not a hook), so that the decoders' direct
    ``self.forward(...)`` calls (``evaluate``, SFT's loss) run under autocast too.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: one of {PRECISIONS}, got {precision!r}")
    if "forward" in policy.__dict__:
        del policy.__dict__["forward"]
    if precision == "fp32":
        return
    setattr(policy, _AUTOCAST_ATTR, _DTYPES[precision])
    policy.forward = types.MethodType(_autocast_forward, policy)


def precision_of(policy: nn.Module) -> str:
    """``"bf16"`` when :func:`set_precision` put the policy under autocast, else ``"fp32"``."""
    return "bf16" if "forward" in policy.__dict__ else "fp32"


def set_gradient_checkpointing(policy: nn.Module, enabled: bool) -> list[str]:
    """Turn activation recomputation on/off on the LM and the vision towers; returns the modules
    it applies to (a tower that does not support it is skipped, and named in the log)."""
    done = []
    for name in ("language_model", "siglip", "dinov2"):
        module = getattr(policy, name, None)
        if module is None or not hasattr(module, "gradient_checkpointing_enable"):
            continue
        if not getattr(module, "supports_gradient_checkpointing", False):
            log.info("gradient checkpointing: %s does not support it; its activations are kept", name)
            continue
        if enabled:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            module.gradient_checkpointing_disable()
        done.append(name)
    return done


def configure_training(policy: nn.Module, precision: str = "fp32", gradient_checkpointing: bool = False) -> nn.Module:
    """Precision and gradient checkpointing of a policy that is about to be trained."""
    set_precision(policy, precision)
    if gradient_checkpointing:
        set_gradient_checkpointing(policy, True)
    return policy


def trainable_adamw(policy: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the parameters that train only: frozen ones get no optimizer state."""
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameter (LoRA with lora_trainable=[] and no adapters?)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
