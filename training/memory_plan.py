"""Memory planner: ``simbridge train sft|ppo|grpo ... --plan``.

For the configured model (built on the ``meta`` device: exact parameter counts, no memory) and
placement it prints, per worker group that holds a model (SFT's trainer; RL's actor and
rollout), the bytes of parameters, gradients, optimizer state (Adam: two float32 moments per
trainable parameter), activations (with and without gradient checkpointing) and KV cache, and
refuses (:class:`MemoryShortfall`) a config whose GPU cannot hold them, naming the shortfall and
what would close it: LoRA, gradient checkpointing, bf16, a smaller batch, more GPUs.

Activations are an estimate (elements kept for the backward pass per token and layer):
LM layer ``8h + 4I + 2kv`` (norm inputs/outputs, q/k/v, attention output, the MLP's gate/up/act/
product), ViT layer ``16h``; plus ``heads x S`` attention probabilities where attention is not
fused (the CPU's math path; GPU plans assume fused SDPA). Checkpointing keeps one ``h`` per
token and layer plus one layer's full set. A tower with no trainable parameter keeps none.
Per-GPU memory comes from ``gpu_memory_gb`` in the config, else ``torch.cuda``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from simbridge.data.config import ConfigError

GB = 1024**3


class MemoryShortfall(ConfigError):
    """The planned memory of a GPU exceeds what it has."""


@dataclass
class GroupPlan:
    name: str
    params: int  # bytes
    grads: int
    optimizer: int
    activations: int  # as configured (with or without checkpointing)
    activations_plain: int
    activations_checkpointed: int
    kv_cache: int = 0
    autocast_copies: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.kv_cache + self.autocast_copies


@dataclass
class MemoryPlan:
    model: str
    num_parameters: int
    num_trainable: int
    groups: list[GroupPlan]
    gpus: list[list[str]]  # which groups share each GPU
    gpu_memory: int | None  # bytes of one GPU (None: not known: nothing is refused)
    options: list[str] = field(default_factory=list)

    def per_gpu(self) -> list[tuple[list[str], int]]:
        by_name = {g.name: g for g in self.groups}
        return [(names, sum(by_name[n].total for n in names)) for names in self.gpus]

    def text(self) -> str:
        lines = [f"memory plan: {self.model}: {self.num_parameters:,} parameters, {self.num_trainable:,} trainable"]
        for g in self.groups:
            lines.append(
                f"  {g.name:8s} params {_gb(g.params)}  grads {_gb(g.grads)}  optimizer {_gb(g.optimizer)}  "
                f"activations {_gb(g.activations)} (plain {_gb(g.activations_plain)}, checkpointed "
                f"{_gb(g.activations_checkpointed)})  kv cache {_gb(g.kv_cache)}"
                + (f"  bf16 weight copies {_gb(g.autocast_copies)}" if g.autocast_copies else "")
                + f"  = {_gb(g.total)}"
            )
            lines += [f"           {note}" for note in g.notes]
        have = "unknown (set gpu_memory_gb)" if self.gpu_memory is None else _gb(self.gpu_memory)
        for names, need in self.per_gpu():
            lines.append(f"  GPU with {' + '.join(names)}: {_gb(need)} of {have}")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise :class:`MemoryShortfall` naming the shortfall and the options when a GPU is too small."""
        if self.gpu_memory is None:
            return
        short = [(names, need) for names, need in self.per_gpu() if need > self.gpu_memory]
        if short:
            names, need = max(short, key=lambda s: s[1])
            raise MemoryShortfall(
                f"{' + '.join(names)} need{'' if len(names) > 1 else 's'} {_gb(need)} on one GPU, which has {_gb(self.gpu_memory)}: short by "
                f"{_gb(need - self.gpu_memory)}. Options: " + "; ".join(self.options)
            )


def _gb(n: int) -> str:
    return f"{n / GB:.3f} GB" if n < 10 * GB else f"{n / GB:.1f} GB"


# --- the model --------------------------------------------------------------------------------


def meta_policy(family: str, preset: str, init: str | None, contract: Any, lora: Any, overrides: dict) -> Any:
    """The policy a run would train, on the meta device (exact shapes, no memory), LoRA applied."""
    from simbridge.training.models import POLICIES, VLAConfig, build_policy
    from simbridge.training.models.adapters import apply_lora

    with torch.device("meta"):
        if init:
            from simbridge.training.checkpoint import resolve_checkpoint

            config = VLAConfig.from_pretrained(resolve_checkpoint(init), local_files_only=True)
            if "sequence_layout" not in json.loads((resolve_checkpoint(init) / "config.json").read_text()):
                config.sequence_layout = "image-first"
            policy = POLICIES[config.family](config)
            return apply_lora(policy, lora)
        if lora.rank:
            overrides = {**overrides, "lora_rank": lora.rank, "lora_alpha": lora.alpha,
                         "lora_targets": list(lora.targets)}  # fmt: skip
        return build_policy(family, preset, contract=contract, seed=None, **overrides)


def sequence_length(policy: Any) -> int:
    """Tokens the LM sees in training: prefix (bos, vision, proprio, text) + action part."""
    cfg = policy.config
    per_camera = policy.num_patches // cfg.token_merge**2 + (cfg.keypoint_tokens if cfg.keypoint_stem else 0)
    return 1 + cfg.num_cameras * per_camera + int(cfg.use_proprio) + cfg.max_text_tokens + cfg.num_action_tokens + 1


def _trainable(module: Any) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def activation_bytes(policy: Any, batch: int, precision: str, fused_attention: bool) -> tuple[int, int]:
    """(plain, checkpointed) activation bytes of one training forward pass on ``batch`` samples."""
    cfg, size = policy.config, 2 if precision == "bf16" else 4
    text = cfg.text_config
    s = sequence_length(policy)
    kv = text.hidden_size // text.num_attention_heads * getattr(text, "num_key_value_heads", text.num_attention_heads)
    per_layer = s * (8 * text.hidden_size + 4 * text.intermediate_size + 2 * kv)
    per_layer += 0 if fused_attention else text.num_attention_heads * s * s
    layers = text.num_hidden_layers
    plain, ckpt = layers * per_layer, layers * s * text.hidden_size + per_layer
    for name in ("siglip", "dinov2"):
        tower = getattr(policy, name, None)
        if not _trainable(tower):
            continue  # frozen (LoRA): nothing is kept for a backward pass through it
        vc = tower.config
        p = (vc.image_size // vc.patch_size) ** 2 + 1
        vl = p * 16 * vc.hidden_size + (0 if fused_attention else vc.num_attention_heads * p * p)
        plain += cfg.num_cameras * vc.num_hidden_layers * vl
        ckpt += cfg.num_cameras * (vc.num_hidden_layers * p * vc.hidden_size + vl)
    return batch * plain * size, batch * ckpt * size


def kv_cache_bytes(policy: Any, batch: int) -> int:
    """The rollout's KV cache: autoregressive decoding only (OFT decodes in one pass, no cache)."""
    if not getattr(policy, "autoregressive", False):
        return 0
    text = policy.config.text_config
    head = text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", text.num_attention_heads)
    return 2 * text.num_hidden_layers * kv_heads * head * sequence_length(policy) * batch * 4


def train_group(name: str, policy: Any, batch: int, precision: str, checkpointing: bool, fused: bool) -> GroupPlan:
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    plain, ckpt = activation_bytes(policy, batch, precision, fused)
    return GroupPlan(name, params=4 * total, grads=4 * trainable, optimizer=8 * trainable,
                     activations=ckpt if checkpointing else plain, activations_plain=plain,
                     activations_checkpointed=ckpt, autocast_copies=2 * trainable if precision == "bf16" else 0,
                     notes=[f"batch {batch} x {sequence_length(policy)} tokens, {precision}"])  # fmt: skip


def _gpu_memory(configured: float | None) -> int | None:
    if configured is not None:
        return int(configured * GB)
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def _options(group: GroupPlan, lora: int, checkpointing: bool, precision: str, keys: dict[str, str]) -> list[str]:
    out = []
    if not lora:
        out.append(f"LoRA ({keys['lora']}=16: most of the {_gb(group.grads + group.optimizer)} of gradients and "
                   "optimizer state go)")  # fmt: skip
    if not checkpointing:
        out.append(f"gradient checkpointing ({keys['ckpt']}=true: activations "
                   f"{_gb(group.activations_plain)} -> {_gb(group.activations_checkpointed)})")  # fmt: skip
    if precision == "fp32":
        out.append(f"bf16 autocast ({keys['precision']}=bf16: about half the activations)")
    out.append(f"a smaller batch ({keys['batch']})")
    out.append(keys["gpus"])
    return out


def plan_sft(cfg: Any) -> MemoryPlan:
    from simbridge.data.spec import ActionSpec, ObservationSpec, PolicyContract

    m = cfg.model
    contract = PolicyContract(observation=ObservationSpec(), action=ActionSpec(), chunk_size=m.chunk_size)
    overrides: dict[str, Any] = {"use_regression_head": m.use_regression_head, "keypoint_stem": m.keypoint_stem}
    if m.use_proprio is not None:
        overrides["use_proprio"] = m.use_proprio
    policy = meta_policy(m.family, m.preset, m.init_from or None, contract, m.lora, overrides)
    fused = _gpu_memory(cfg.gpu_memory_gb) is not None
    group = train_group("trainer", policy, cfg.optim.batch_size, m.precision, m.gradient_checkpointing, fused)
    keys = {"lora": "model.lora_rank", "ckpt": "model.gradient_checkpointing", "precision": "model.precision",
            "batch": "optim.batch_size", "gpus": "more GPUs: not for SFT yet (one process, one GPU)"}  # fmt: skip
    return _plan(policy, [group], [["trainer"]], cfg.gpu_memory_gb,
                 _options(group, m.lora_rank, m.gradient_checkpointing, m.precision, keys))  # fmt: skip


def plan_rl(cfg: Any) -> MemoryPlan:
    from simbridge.training.models.adapters import split_lora_kwargs
    from simbridge.training.rl.toy import TOY_CONTRACT

    if cfg.policy.backend != "vla":
        raise ConfigError("--plan: plans VLA policies (policy.backend=vla); the toy policy is a few kB")
    lora, overrides = split_lora_kwargs(cfg.policy.kwargs)
    contract = TOY_CONTRACT if cfg.env.backend == "toy" else None
    if contract is None:
        from simbridge.training.envs.spec import SimEnvSpec  # noqa: F401  (the contract of the spec's cameras)
        from simbridge.training.rl.factories import env_contract

        contract = env_contract(cfg.env)
    policy = meta_policy(cfg.policy.family, cfg.policy.preset, cfg.policy.init_checkpoint, contract, lora, overrides)
    fused = _gpu_memory(cfg.cluster.gpu_memory_gb) is not None
    a = cfg.actor
    # One process holds its share of a minibatch, one micro-batch at a time (gradient accumulation).
    per_process = -(-a.minibatch_size // a.num_workers)
    batch = min(a.micro_batch_size or per_process, per_process)
    actor = train_group("actor", policy, batch, a.precision, a.gradient_checkpointing, fused)
    if a.parallel == "fsdp2" and a.num_workers > 1:  # fully_shard splits them over the actor's GPUs
        n = a.num_workers
        actor.params, actor.grads, actor.optimizer = actor.params // n, actor.grads // n, actor.optimizer // n
        actor.notes.append(f"fsdp2 over {n} GPUs: parameters, gradients and Adam state per GPU (+ one block "
                           "gathered while it runs)")  # fmt: skip
    rollout_batch = cfg.env.num_envs // cfg.env.pipeline_stage_num
    frozen = copy.copy(policy)
    rollout = GroupPlan("rollout", params=actor.params, grads=0, optimizer=0, activations=0, activations_plain=0,
                        activations_checkpointed=0, kv_cache=kv_cache_bytes(frozen, rollout_batch),
                        notes=[f"inference on {rollout_batch} envs per stage, fp32, no grad"])  # fmt: skip
    gpus = [["actor"], ["rollout"]] if cfg.cluster.placement == "disaggregated" else [["actor", "rollout"]]
    keys = {"lora": "policy.kwargs.lora_rank", "ckpt": "actor.gradient_checkpointing",
            "precision": "actor.precision", "batch": "actor.micro_batch_size: gradient accumulation, the minibatch stays",
            "gpus": "more GPUs (cluster.placement=disaggregated: the actor and the rollout on a GPU each; "
                    "actor.num_workers=N actor.parallel=fsdp2: the actor's state split over N GPUs)"}  # fmt: skip
    return _plan(policy, [actor, rollout], gpus, cfg.cluster.gpu_memory_gb,
                 _options(actor, lora.rank, a.gradient_checkpointing, a.precision, keys))  # fmt: skip


def _plan(policy: Any, groups: list[GroupPlan], gpus: list[list[str]], gb: float | None, opts: list[str]) -> MemoryPlan:
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    name = f"{policy.config.family}/{policy.config.preset}" + (f" + LoRA r{policy.config.lora_rank}"
                                                               if policy.config.lora_rank else "")  # fmt: skip
    return MemoryPlan(name, total, trainable, groups, gpus, _gpu_memory(gb), opts)


def plan_for(trainer: str, cfg: Any) -> MemoryPlan:
    return plan_sft(cfg) if trainer == "sft" else plan_rl(cfg)


def run_plan(trainer: str, cfg: Any) -> int:
    """``--plan``: print the plan; raise :class:`MemoryShortfall` (exit 2) when it cannot fit."""
    plan = plan_for(trainer, cfg)
    print(plan.text())
    plan.check()
    print("fits" if plan.gpu_memory is not None else "no GPU memory known (set gpu_memory_gb): not checked")
    return 0
