"""LoRA on any policy, fresh or loaded from a checkpoint, and what of it trains.

:func:`apply_lora` puts peft LoRA adapters on the LM of an existing policy (a loaded SFT
checkpoint, a converted OpenVLA): it records the options in the policy's config (so a saved
checkpoint reloads with the same adapters and the same trainable set) and freezes everything
but the adapters and the modules named in ``trainable`` (the value head, the action heads).
:meth:`VLAPolicy.merge_lora` folds the adapters back into the base weights (export does it).

:class:`LoRAOptions` is the one parse of the options both trainers take (SFT's ``model.lora_*``,
RL's ``policy.kwargs.lora_*``); :func:`trainable_names` lists what an optimizer should hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (imported by the configs, which need no torch)
    from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: Modules that train next to the adapters on a loaded checkpoint: the critic and the action heads.
DEFAULT_TRAINABLE = ("value_head", "action_queries", "regression_head")
#: The keys of RL's ``policy.kwargs`` that are LoRA options (not VLAConfig fields).
LORA_KWARGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "lora_trainable")


@dataclass(frozen=True)
class LoRAOptions:
    rank: int = 0
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    trainable: tuple[str, ...] = DEFAULT_TRAINABLE

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError("lora_rank: 0 (no LoRA) or a positive rank, e.g. 8")
        if self.rank and not self.targets:
            raise ValueError("lora_targets: name at least one LM module (e.g. q_proj,v_proj)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("lora_dropout: a probability in [0, 1)")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> LoRAOptions:
        """From RL's ``policy.kwargs``: ``lora_targets`` / ``lora_trainable`` as comma-separated strings
        (or lists); ``lora_trainable=""`` trains the adapters alone."""

        def names(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
            if value is None:
                return default
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(s.strip() for s in items if s.strip())

        return cls(
            rank=int(kwargs.get("lora_rank", 0)),
            alpha=int(kwargs.get("lora_alpha", 16)),
            dropout=float(kwargs.get("lora_dropout", 0.0)),
            targets=names(kwargs.get("lora_targets"), DEFAULT_TARGETS),
            trainable=names(kwargs.get("lora_trainable"), DEFAULT_TRAINABLE),
        )


def split_lora_kwargs(kwargs: Mapping[str, Any]) -> tuple[LoRAOptions, dict[str, Any]]:
    """RL's ``policy.kwargs`` -> (the LoRA options, the rest: VLAConfig overrides)."""
    rest = {k: v for k, v in kwargs.items() if k not in LORA_KWARGS}
    return LoRAOptions.from_kwargs(kwargs), rest


def apply_lora(policy: Any, options: LoRAOptions) -> Any:
    """Adapters on ``policy``'s LM; only they and ``options.trainable`` train. Returns the policy.

    A policy that already has adapters (a checkpoint saved with LoRA) keeps them when the rank
    matches (their trainable set becomes ``options.trainable``) and is refused otherwise.
    """
    if options.rank <= 0:
        return policy
    cfg = policy.config
    unknown = [m for m in options.trainable if not _has_module(policy, m)]
    if unknown:
        raise ValueError(f"lora_trainable: {unknown} name no module of this policy; choose from "
                         f"{sorted(n for n, _ in policy.named_children())}")  # fmt: skip
    targets = set(options.targets)
    found = {n.rsplit(".", 1)[-1] for n, _ in policy.language_model.named_modules()}
    if not targets & found:
        raise ValueError(f"lora_targets: {sorted(targets)} match no module of the LM (it has e.g. "
                         f"{sorted(t for t in found if t.endswith('proj'))})")  # fmt: skip
    if cfg.lora_rank > 0:
        if cfg.lora_rank != options.rank:
            raise ValueError(
                f"this checkpoint already has LoRA adapters of rank {cfg.lora_rank}; train them with "
                f"lora_rank={cfg.lora_rank} (or 0), or merge them first (policy.merge_lora() + save)"
            )
        cfg.lora_trainable = list(options.trainable)
        policy._set_lora_trainable()
        return policy
    cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout = options.rank, options.alpha, options.dropout
    cfg.lora_targets, cfg.lora_trainable = list(options.targets), list(options.trainable)
    policy._inject_lora()
    return policy


def _has_module(policy: nn.Module, path: str) -> bool:
    """``path`` is a module of the policy, or one of its optional heads it was built without (None)."""
    try:
        return policy.get_submodule(path) is not None
    except AttributeError:
        return "." not in path and hasattr(policy, path) and getattr(policy, path) is None


def trainable_names(policy: nn.Module) -> list[str]:
    """Names of the parameters that train (the optimizer's, and what weight sync sends)."""
    return [n for n, p in policy.named_parameters() if p.requires_grad]


def count_parameters(policy: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in policy.parameters())
    return total, sum(p.numel() for p in policy.parameters() if p.requires_grad)
