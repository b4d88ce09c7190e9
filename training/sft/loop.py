"""The SFT training loop: build (or resume) the policy, train with AdamW, validate, checkpoint.

The run directory (``<root>/<name>/<stamp>/``) gets config.yaml, metrics.jsonl + TensorBoard and
checkpoints (``iter_NNNNNN`` with the optimizer and RNG states, so ``resume`` continues exactly);
at the end :mod:`.report` adds the loss plot and the evaluation in simulation.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.config import ConfigError, to_dict
from simbridge.data.runs import RunDir
from simbridge.data.spec import ActionSpec, ObservationSpec, PolicyContract
from simbridge.training.checkpoint import (
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    save_checkpoint,
)
from simbridge.training.models import PRESETS, ActionStats, InstructionTokenizer, VLAPolicy, build_policy
from simbridge.training.models.adapters import apply_lora
from simbridge.training.models.precision import configure_training, trainable_adamw
from simbridge.training.sft.action_error import ActionError, episode_start_error, flatten, predicted_actions
from simbridge.training.sft.auxiliary import AuxiliaryHeads, KeypointWaypointHead, waypoint_targets
from simbridge.training.sft.config import OptimConfig, SFTConfig
from simbridge.training.sft.data import Demos, augment_images, drop_proprio, load_demos, split_episodes
from simbridge.training.sft.loss import make_batch, sft_forward
from simbridge.training.sft.report import evaluate_on_training_distribution, plot_losses, write_action_error
from simbridge.training.sft.stem_warmup import warm_up_keypoint_stem


def _contract_for(demos: Demos, chunk_size: int) -> PolicyContract:
    return PolicyContract(
        observation=ObservationSpec(cameras=demos.cameras), action=ActionSpec(), chunk_size=chunk_size
    )


def _lr_at(step: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _find_resume_dir(cfg: SFTConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        p = Path(cfg.resume)
        if latest_checkpoint(p) is None:
            raise ConfigError(f"resume: {p} is not a run directory with checkpoints; pass one or resume=auto")
        return p
    runs = sorted((Path(cfg.root) / cfg.name).glob("*"), reverse=True)
    return next((r for r in runs if latest_checkpoint(r) is not None), None)


def build_for_demos(cfg: SFTConfig, demos: Demos) -> VLAPolicy:
    """A fresh (or ``init_from``) policy whose stats/tokenizer come from the training demos."""
    stats = ActionStats.from_actions(demos.actions, demos.proprio)
    if cfg.model.init_from:
        from simbridge.training.models.loaders import load_pretrained_policy

        policy = load_pretrained_policy(cfg.model.init_from)
        if cfg.model.use_proprio and policy.proprio_proj is None:
            raise ConfigError(
                f"model.use_proprio=true, but model.init_from={cfg.model.init_from} has no proprio projector; "
                "set model.use_proprio=false (the policy then sees the arm only in the images)"
            )
        policy.action_stats = stats
        return apply_lora(policy, cfg.model.lora)
    tokenizer = InstructionTokenizer.train(sorted(set(demos.instructions)),
                                           vocab_size=PRESETS[cfg.model.preset].get("text_vocab_size", 512))  # fmt: skip
    return build_policy(
        cfg.model.family,
        cfg.model.preset,
        contract=_contract_for(demos, cfg.model.chunk_size),
        action_stats=stats,
        tokenizer=tokenizer,
        seed=cfg.seed,
        use_regression_head=cfg.model.use_regression_head,
        lora_rank=cfg.model.lora_rank,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        lora_targets=list(cfg.model.lora_targets),
        keypoint_stem=cfg.model.keypoint_stem,
        **({} if cfg.model.use_proprio is None else {"use_proprio": cfg.model.use_proprio}),
    )


def evaluate_loss(
    policy: VLAPolicy,
    demos: Demos,
    cfg: SFTConfig,
    max_rows: int = 256,
    errors: ActionError | None = None,
    aux_head: AuxiliaryHeads | None = None,
) -> dict[str, float]:
    """Validation metrics on up to ``max_rows`` samples: the loss terms, the auxiliary head's
    errors (with ``aux_head``) and the teacher-forced action error per phase in mm / rad
    (``val/action_error/<phase>/...``, see :mod:`.action_error`); pass ``errors`` to keep the
    per-phase sums."""
    rows = np.arange(len(demos))
    if len(rows) > max_rows:
        rows = np.random.default_rng(0).choice(rows, max_rows, replace=False)
    policy.eval()
    totals: dict[str, float] = {}
    errors = errors if errors is not None else ActionError()
    waypoints = waypoint_targets(demos.proprio, demos.actions, demos.episode_end) if aux_head else None
    with torch.no_grad():
        for start in range(0, len(rows), cfg.optim.batch_size):
            part = rows[start : start + cfg.optim.batch_size]
            batch, target = make_batch(policy, demos, part)
            _, m, out = sft_forward(policy, batch, target, cfg.l1_weight, cfg.bin_sigma)
            if aux_head is not None and waypoints is not None:
                m |= aux_head.loss(out, batch["proprio"], waypoints[0][part], waypoints[1][part])[1]
            errors.add(predicted_actions(policy, out), demos.chunk(part, policy.config.chunk_size))
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v * len(part)
    phases = errors.result() | {"start": episode_start_error(policy, demos, cfg.optim.batch_size)}
    return {**{f"val/{k}": v / len(rows) for k, v in totals.items()}, **flatten(phases, "val/action_error")}


def _warm_up_stem(policy: VLAPolicy, aux_head: AuxiliaryHeads | None, train: Demos,
                  waypoints: tuple[np.ndarray, np.ndarray], cfg: SFTConfig, gen: torch.Generator,
                  rng: np.random.Generator, run: RunDir) -> None:
    """The keypoint stem's warm-up (sft/stem_warmup.py), with the auxiliary keypoint head when SFT
    keeps training it, else with a head of its own that is dropped afterwards."""
    if policy.keypoint_stem is None:
        raise ConfigError("stem_warmup_steps: the policy has no keypoint stem; set model.keypoint_stem=32")
    head = aux_head.keypoints if aux_head is not None else None
    own_head = head is None
    if head is None:
        head = KeypointWaypointHead(len(policy.contract.observation.cameras), policy.config.keypoint_stem)
        head.attach(policy.keypoint_stem)
    started = time.time()
    final = warm_up_keypoint_stem(
        policy, head, train, waypoints,
        steps=cfg.stem_warmup_steps, lr=cfg.stem_warmup_lr, batch_size=cfg.stem_warmup_batch_size,
        augment=cfg.augment, generator=gen, rng=rng, progress=cfg.progress,
        log=lambda step, metrics: run.log(0, warmup_step=step, **metrics, elapsed_s=time.time() - started),
    )  # fmt: skip
    if own_head:
        head.detach()
    print(f"keypoint stem warm-up: {cfg.stem_warmup_steps} steps in {(time.time() - started) / 60:.1f} min, "
          f"object error {final.get('warmup/object_error_mm', float('nan')):.1f} mm (training batches)")


def train_sft(cfg: SFTConfig, demos: Demos | None = None) -> Path:
    """Train; returns the run directory. ``demos`` overrides ``cfg.data.store`` (tests, notebooks)."""
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    resume_dir = _find_resume_dir(cfg)
    if demos is None:
        image_size = int(PRESETS[cfg.model.preset].get("image_size", 64))
        demos = load_demos(cfg.data.store, image_size, cfg.data.cameras or None, cfg.data.only_successful,
                           cfg.data.max_episodes, cfg.data.splits or None, cfg.data.action_label)  # fmt: skip
    train_eps, val_eps = split_episodes(len(demos.instructions), cfg.data.val_fraction, cfg.seed)
    train, val = demos.subset(train_eps), (demos.subset(val_eps) if len(val_eps) else None)

    state = None
    if resume_dir is not None:
        ckpt = latest_checkpoint(resume_dir)
        from simbridge.training.checkpoint import load_checkpoint

        policy = load_checkpoint(ckpt)
        state = load_training_state(ckpt)
        run = RunDir(resume_dir, config=cfg)
    else:
        policy = build_for_demos(cfg, train)
        run = RunDir.create(cfg.root, cfg.name, config=cfg)
    configure_training(policy, cfg.model.precision, cfg.model.gradient_checkpointing)
    optim = trainable_adamw(policy, cfg.optim.lr, cfg.optim.weight_decay)  # no state for frozen weights
    aux_head, waypoints = None, None
    if cfg.aux_weight > 0 or cfg.stem_warmup_steps > 0:
        waypoints = waypoint_targets(train.proprio, train.actions, train.episode_end)
    if cfg.aux_weight > 0:  # SFT-only: trained with the policy, not part of the checkpoint's model
        aux_head = AuxiliaryHeads(policy)
        optim.add_param_group({"params": list(aux_head.parameters()), "weight_decay": cfg.optim.weight_decay})
    params = [p for g in optim.param_groups for p in g["params"]]
    step = 0
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if state is not None:
        if (aux_head is None) != ("aux_head" not in state):
            raise ConfigError(f"resume: {resume_dir} was trained with{'out' if aux_head else ''} the auxiliary "
                              f"head; resume it with the aux_weight it was trained with (its config.yaml)")  # fmt: skip
        if aux_head is not None:
            aux_head.load_state_dict(state["aux_head"])
        optim.load_state_dict(state["optimizer"])
        step = int(state["step"])
        gen.set_state(state["torch_generator"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])

    def checkpoint(metrics: dict[str, Any]) -> Path:
        training_state = {"optimizer": optim.state_dict(), "step": step, "torch_generator": gen.get_state(),
                          "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}  # fmt: skip
        if aux_head is not None:
            training_state["aux_head"] = aux_head.state_dict()
        path = save_checkpoint(policy, run, step, metrics, config=to_dict(cfg), training_state=training_state,
                               extra={"num_train_episodes": len(train_eps), "num_val_episodes": len(val_eps),
                                      "num_train_steps": len(train)})  # fmt: skip
        prune_checkpoints(run, cfg.keep_checkpoints, "val/loss", higher_is_better=False)
        return path

    started = time.time()
    if state is None and waypoints is not None and cfg.stem_warmup_steps > 0:  # a resumed run had its warm-up
        _warm_up_stem(policy, aux_head, train, waypoints, cfg, gen, rng, run)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.optim.steps, initial=step, desc=f"sft {cfg.model.family}/{cfg.model.preset}",
               disable=not cfg.progress, dynamic_ncols=True)  # fmt: skip
    last: dict[str, Any] = {}
    try:
        while step < cfg.optim.steps:
            policy.train()
            rows = rng.integers(0, len(train), cfg.optim.batch_size)
            batch, target = make_batch(policy, train, rows)
            batch["pixel_values"] = augment_images(batch["pixel_values"], cfg.augment, gen)
            lr = _lr_at(step, cfg.optim)
            for group in optim.param_groups:
                group["lr"] = lr
            # The auxiliary head always reads the true proprio; only the policy's input is dropped.
            loss, metrics, out = sft_forward(policy, drop_proprio(batch, cfg.augment, gen), target, cfg.l1_weight,
                                             cfg.bin_sigma)  # fmt: skip
            if aux_head is not None and waypoints is not None:
                aux_loss, aux_metrics = aux_head.loss(out, batch["proprio"], waypoints[0][rows], waypoints[1][rows])
                loss = loss + cfg.aux_weight * aux_loss
                metrics |= aux_metrics
            optim.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optim.step()
            step += 1
            bar.update(1)
            last = {**metrics, "lr": lr, "grad_norm": float(grad_norm)}
            if step % cfg.log_every == 0 or step == 1:
                run.log(step, **{f"train/{k}": v for k, v in last.items()}, elapsed_s=time.time() - started)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['token_accuracy']:.2f}")
            if val is not None and (step % cfg.val_every == 0 or step == cfg.optim.steps):
                last.update(evaluate_loss(policy, val, cfg, aux_head=aux_head))
                run.log(step, **{k: v for k, v in last.items() if k.startswith("val/")})
            if step % cfg.checkpoint_every == 0 or step == cfg.optim.steps:
                checkpoint(last)
        bar.close()
        final = latest_checkpoint(run.path)
        summary = {"steps": step, "train_minutes": (time.time() - started) / 60.0, "final": last,
                   "checkpoint": str(final), "num_train_episodes": len(train_eps),
                   "num_val_episodes": len(val_eps), "num_train_samples": len(train)}  # fmt: skip
        plot_losses(run.path)
        errors = ActionError()  # on the validation episodes (the training ones without any)
        held = val if val is not None else train
        evaluate_loss(policy, held, cfg, errors=errors)
        phases = errors.result() | {"start": episode_start_error(policy, held, cfg.optim.batch_size)}
        summary["action_error"] = {"episodes": "validation" if val is not None else "training",
                                   "phases": phases}  # fmt: skip
        write_action_error(run.path, summary["action_error"])
        if cfg.eval.enabled:
            summary["evaluation"] = evaluate_on_training_distribution(final, cfg, run.path)
        run.write_json("sft_summary.json", summary)
    finally:
        bar.close()
        run.close()
    return run.path
