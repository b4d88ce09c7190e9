"""Supervised fine-tuning (behaviour cloning) of a VLA policy on demonstrations in an episode store.

    simbridge train sft --config launch/configs/sft_tiny.yaml data.store=runs/demos/expert.zarr
    launch/train_sft.sh launch/configs/sft_tiny.yaml optim.steps=500

One training sample is the observation at step ``t`` of an episode and the chunk of the
next ``K`` executed actions (padded with the episode's last action at its end). Actions are
normalized with 1st/99th percentile statistics of the *training* episodes and discretized
into 256 bins; the loss is the cross-entropy of the action tokens (+ L1 on the normalized
actions when the OFT regression head is on). Episodes are split into train / validation.

The run directory (``runs/<name>/<stamp>/``) gets config.yaml, metrics.jsonl + TensorBoard,
checkpoints (``iter_NNNNNN`` with the optimizer state for resuming), a loss plot, and at the
end an evaluation on the training distribution when the simulation harness is installed.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from simbridge.data.config import ConfigError, config, load_config, to_dict
from simbridge.data.runs import RunDir
from simbridge.data.spec import ActionSpec, CameraSpec, ObservationSpec, PolicyContract, image_key
from simbridge.training.checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from simbridge.training.models import (
    PRESETS,
    ActionStats,
    InstructionTokenizer,
    VLAPolicy,
    build_policy,
)
from simbridge.training.models.modeling import resize_images

# --- configuration ------------------------------------------------------------------------


@config
class SFTModelConfig:
    family: Literal["openvla", "openvla-oft"] = "openvla-oft"
    preset: str = "tiny"
    chunk_size: int = 4
    use_regression_head: bool = False
    lora_rank: int = 0
    #: Feed the proprio vector (TCP pose + gripper, normalized with the demos' mean/std) as one
    #: more token, so the policy need not read its own arm's position from the pixels.
    #: null = the family's default: on for openvla-oft (as OpenVLA-OFT), off for openvla.
    use_proprio: bool | None = None
    #: Fine-tune from this checkpoint / policy directory instead of a fresh model ("" = fresh).
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: one of {sorted(PRESETS)}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size: a positive number of actions per prediction")
        if self.use_regression_head and self.family != "openvla-oft":
            raise ValueError("use_regression_head: only the openvla-oft family has a regression head")


@config
class SFTDataConfig:
    #: Episode store (zarr) with the demonstrations.
    store: str = ""
    val_fraction: float = 0.1
    only_successful: bool = True
    max_episodes: int = 0  # 0 = all
    #: Cameras to train on ([] = all cameras of the store).
    cameras: list[str] = field(default_factory=list)
    #: Only episodes recorded in these splits (EpisodeMeta.split; [] = all).
    splits: list[str] = field(default_factory=list)
    #: Which recorded action to imitate: ``action`` (executed) or ``policy_action`` (what the
    #: expert proposed; the clean label of DART demos, ``simbridge demos --dart``).
    action_label: Literal["action", "policy_action"] = "action"

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction: a fraction in [0, 1)")


@config
class AugmentConfig:
    enabled: bool = True
    #: Random shift: pad by this many pixels (replicate) and crop back at a random offset.
    shift_px: int = 4
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


@config
class OptimConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps: steps and batch_size must be positive")
        if not self.lr > 0:
            raise ValueError("lr: a positive learning rate")


@config
class SFTEvalConfig:
    enabled: bool = True
    suite: str = "train"
    episodes: int = 20
    seed: int = 10_000


@config
class SFTConfig:
    name: str = "sft"
    run_root: str = "runs"
    seed: int = 0
    threads: int = 2
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: SFTEvalConfig = field(default_factory=SFTEvalConfig)
    l1_weight: float = 1.0
    #: Std (in bins) of Gaussian soft targets for the token cross-entropy; 0 = one-hot targets.
    bin_sigma: float = 0.0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 500
    #: "" = fresh run; "auto" = continue the newest run of this name; or a run directory.
    resume: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.bin_sigma < 0:
            raise ValueError("bin_sigma: 0 (one-hot targets) or a positive width in bins, e.g. 1.5")


# --- demonstrations -----------------------------------------------------------------------


@dataclass
class Demos:
    """Demonstration steps held in memory (images already at the model's resolution)."""

    images: np.ndarray  # (N, C, S, S, 3) uint8
    proprio: np.ndarray  # (N, 8) float32
    actions: np.ndarray  # (N, 7) float32
    episode: np.ndarray  # (N,) int, index into ``instructions`` / episode bounds
    episode_end: np.ndarray  # (N,) int, exclusive end row of the step's episode
    instructions: list[str]
    cameras: tuple[CameraSpec, ...]

    def __len__(self) -> int:
        return len(self.actions)

    def chunk(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(B, k, 7) actions rows..rows+k-1, repeating each episode's last action past its end."""
        offs = rows[:, None] + np.arange(k)[None]
        offs = np.minimum(offs, self.episode_end[rows, None] - 1)
        return self.actions[offs]

    def subset(self, episodes: np.ndarray) -> Demos:
        keep = np.isin(self.episode, episodes)
        rows = np.flatnonzero(keep)
        # Re-base the episode ends onto the kept rows.
        new_index = np.full(len(self), -1)
        new_index[rows] = np.arange(len(rows))
        ends = new_index[self.episode_end[rows] - 1] + 1
        return Demos(self.images[rows], self.proprio[rows], self.actions[rows], self.episode[rows], ends,
                     self.instructions, self.cameras)  # fmt: skip


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3) with the policy's own resize (see resize_images)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = resize_images(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float(), size)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_demos(
    store_path: str | Path | list[str],
    image_size: int,
    cameras: list[str] | None = None,
    only_successful: bool = True,
    max_episodes: int = 0,
    splits: list[str] | None = None,
    action_label: str = "action",
) -> Demos:
    """Read the selected episodes of one or more episode stores into memory for training.

    Selection goes through :class:`simbridge.data.dataset.EpisodeDataset` (successful-only and
    split filters); images are read per episode and resized once to the model's resolution.
    """
    from simbridge.data.dataset import EpisodeDataset
    from simbridge.data.store import EpisodeStore, StoreError

    paths = [Path(p) for p in ([store_path] if isinstance(store_path, (str, Path)) else store_path)]
    for path in paths:
        if not str(path) or str(path) == "." or not path.exists():
            raise ConfigError(
                f"data.store {str(path)!r} does not exist; record demos first "
                "(simbridge demos --episodes 100 --out <path.zarr>, or simbridge collect) and pass data.store=<path.zarr>"
            )
    try:
        ds = EpisodeDataset(paths, chunk_size=1, cameras=cameras or None, successful_only=only_successful,
                            splits=splits or None)  # fmt: skip
    except StoreError as exc:
        raise ConfigError(f"data.store: {exc}") from None
    episodes = ds.episodes[:max_episodes] if max_episodes else ds.episodes
    if not episodes:
        raise ConfigError(
            f"{paths} hold no usable episodes (only_successful={only_successful}, splits={splits})"
        )
    stores = [EpisodeStore(p) for p in ds.paths]
    specs = {c.name: c for c in stores[0].cameras}
    names = list(ds.cameras)
    actions_all, proprio_all = ds.actions(action_label), ds.proprio()
    images, episode, ends, instructions = [], [], [], []
    total = 0
    for j, ep in enumerate(episodes):
        n = ep.rows.stop - ep.rows.start
        store = stores[ep.store]
        cams = [_resize(store.read(image_key(c), ep.rows, episode=ep.index), image_size) for c in names]
        images.append(np.stack(cams, axis=1))
        episode.append(np.full(n, j))
        total += n
        ends.append(np.full(n, total))
        instructions.append(ep.meta.instruction)
    missing = np.isnan(actions_all[:total]).any(axis=1)
    if missing.any():
        bad = sorted({instructions[j] for j in np.concatenate(episode)[missing]})[:3]
        raise ConfigError(
            f"data.action_label={action_label}: {int(missing.sum())} step(s) of {paths} have no {action_label} "
            f"recorded (episodes such as {bad}); use data.action_label=action or select other episodes"
        )
    return Demos(
        images=np.concatenate(images),
        proprio=proprio_all[:total].astype(np.float32),
        actions=actions_all[:total].astype(np.float32),
        episode=np.concatenate(episode),
        episode_end=np.concatenate(ends),
        instructions=instructions,
        cameras=tuple(CameraSpec(n, specs[n].height, specs[n].width) for n in names),
    )


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode ids for training / validation (at least one of each when there are >= 2 episodes)."""
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = round(num_episodes * val_fraction)
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --- augmentation -------------------------------------------------------------------------


def augment_images(pixels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random shift + colour jitter of (B, N, 3, S, S) images in [0, 1] (per image)."""
    if not cfg.enabled:
        return pixels
    b, n, c, h, w = pixels.shape
    x = pixels.reshape(b * n, c, h, w)
    if cfg.shift_px > 0:
        pad = cfg.shift_px
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        dx = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator)
        dy = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b * n)])

    def factor(strength: float) -> torch.Tensor:
        u = torch.rand(b * n, 1, 1, 1, generator=generator)
        return 1.0 + (2.0 * u - 1.0) * strength

    if cfg.brightness > 0:
        x = x * factor(cfg.brightness)
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(cfg.contrast) + mean
    if cfg.saturation > 0:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = (x - gray) * factor(cfg.saturation) + gray
    return x.clamp(0.0, 1.0).reshape(b, n, c, h, w)


# --- loss ---------------------------------------------------------------------------------


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
):
    """Token cross-entropy (one-hot, or Gaussian soft targets with ``bin_sigma`` > 0) + L1 of the
    regression head; returns (loss, metrics)."""
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
    return loss, metrics


# --- training -----------------------------------------------------------------------------


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
    runs = sorted((Path(cfg.run_root) / cfg.name).glob("*"), reverse=True)
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
        return policy
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
        **({} if cfg.model.use_proprio is None else {"use_proprio": cfg.model.use_proprio}),
    )


def evaluate_loss(policy: VLAPolicy, demos: Demos, cfg: SFTConfig, max_rows: int = 256) -> dict[str, float]:
    rows = np.arange(len(demos))
    if len(rows) > max_rows:
        rows = np.random.default_rng(0).choice(rows, max_rows, replace=False)
    policy.eval()
    totals: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(rows), cfg.optim.batch_size):
            part = rows[start : start + cfg.optim.batch_size]
            batch, target = make_batch(policy, demos, part)
            _, m = sft_loss(policy, batch, target, cfg.l1_weight, cfg.bin_sigma)
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v * len(part)
    return {f"val/{k}": v / len(rows) for k, v in totals.items()}


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
        run = RunDir.create(cfg.run_root, cfg.name, config=cfg)
    params = [p for p in policy.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    step = 0
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if state is not None:
        optim.load_state_dict(state["optimizer"])
        step = int(state["step"])
        gen.set_state(state["torch_generator"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])

    def checkpoint(metrics: dict[str, Any]) -> Path:
        training_state = {"optimizer": optim.state_dict(), "step": step, "torch_generator": gen.get_state(),
                          "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}  # fmt: skip
        return save_checkpoint(policy, run, step, metrics, config=to_dict(cfg), training_state=training_state,
                               extra={"num_train_episodes": len(train_eps), "num_val_episodes": len(val_eps),
                                      "num_train_steps": len(train)})  # fmt: skip

    from tqdm.auto import tqdm

    started = time.time()
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
            loss, metrics = sft_loss(policy, batch, target, cfg.l1_weight, cfg.bin_sigma)
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
                last.update(evaluate_loss(policy, val, cfg))
                run.log(step, **{k: v for k, v in last.items() if k.startswith("val/")})
            if step % cfg.checkpoint_every == 0 or step == cfg.optim.steps:
                checkpoint(last)
        bar.close()
        final = latest_checkpoint(run.path)
        summary = {"steps": step, "train_minutes": (time.time() - started) / 60.0, "final": last,
                   "checkpoint": str(final), "num_train_episodes": len(train_eps),
                   "num_val_episodes": len(val_eps), "num_train_samples": len(train)}  # fmt: skip
        plot_losses(run.path)
        if cfg.eval.enabled:
            summary["evaluation"] = evaluate_on_training_distribution(final, cfg, run.path)
        run.write_json("sft_summary.json", summary)
    finally:
        bar.close()
        run.close()
    return run.path


def evaluate_on_training_distribution(checkpoint: Path, cfg: SFTConfig, run_path: Path) -> dict:
    """Success rate on the training split(s) through the simulation harness, when it can run here."""
    try:
        from simbridge.training.envs import EnvUnavailable
        from simbridge.training.evaluation import evaluate, load_policy_source
    except ImportError as exc:  # SFT on robot data does not need the simulation extra
        return {"skipped": f"simulation evaluation harness unavailable: {exc}"}
    source = load_policy_source(str(checkpoint), kind="checkpoint")
    try:
        return evaluate(source, suite=cfg.eval.suite, episodes=cfg.eval.episodes, seed=cfg.eval.seed,
                        run_dir=run_path / "eval", progress=cfg.progress)  # fmt: skip
    except EnvUnavailable as exc:
        return {"skipped": f"simulator unavailable: {exc}"}


def plot_losses(run_path: Path) -> Path | None:
    """PNG of the training / validation loss curves next to metrics.jsonl."""
    from simbridge.data.runs import read_metrics

    records = read_metrics(run_path)
    train = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
    val = [(r["step"], r["val/loss"]) for r in records if "val/loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("action-token loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    out = run_path / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --- command line (``simbridge train sft``) -------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], help="YAML config (repeatable; later wins)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. optim.steps=500 data.store=x.zarr"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(SFTConfig, args.config or None, overrides=args.overrides)
    if args.print_config:
        from simbridge.data.config import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    run_path = train_sft(cfg)
    print(f"sft run: {run_path}")
    return 0


__all__ = ["SFTConfig", "add_arguments", "load_demos", "run", "sft_loss", "train_sft"]
