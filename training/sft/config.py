"""The SFT run's configuration (``simbridge train sft --config launch/configs/sft_tiny.yaml``).

Sections: ``model`` (family, preset, chunk size, heads), ``data`` (which episodes of which
store, which action label), ``augment`` (image augmentation), ``optim`` (schedule) and ``eval``
(the evaluation in simulation after training, with its environment as ``eval.env``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from simbridge.data.config import config
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.models import PRESETS
from simbridge.training.models.adapters import DEFAULT_TARGETS, DEFAULT_TRAINABLE, LoRAOptions
from simbridge.training.renamed_keys import renamed_keys


@config
class SFTModelConfig:
    family: Literal["openvla", "openvla-oft"] = "openvla-oft"
    preset: str = "tiny"
    chunk_size: int = 4
    use_regression_head: bool = False
    #: LoRA adapters on the LM (0 = full fine-tuning), on a fresh model or on ``init_from``.
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    #: LM modules (by name) that get adapters.
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    #: With LoRA on ``init_from``: modules that train next to the adapters (the heads). A fresh
    #: model trains everything outside the LM and the vision encoders (its projector is random).
    lora_trainable: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))
    #: "bf16": autocast to bfloat16 (weights, gradients and optimizer state stay float32).
    precision: Literal["fp32", "bf16"] = "fp32"
    #: Recompute the LM's and the vision towers' activations in the backward pass (less memory).
    gradient_checkpointing: bool = False
    #: Feed the proprio vector (TCP pose + gripper, normalized with the demos' mean/std) as one
    #: more token, so the policy need not read its own arm's position from the pixels.
    #: null = the family's default: on for openvla-oft (as OpenVLA-OFT), off for openvla.
    use_proprio: bool | None = None
    #: Keypoints of the convolutional spatial-softmax stem next to the ViT (0 = none): vision
    #: tokens that localize objects from the first steps (``VLAConfig.keypoint_stem``).
    keypoint_stem: int = 0
    #: Fine-tune from this checkpoint / policy directory instead of a fresh model ("" = fresh).
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: one of {sorted(PRESETS)}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size: a positive number of actions per prediction")
        if self.use_regression_head and self.family != "openvla-oft":
            raise ValueError("use_regression_head: only the openvla-oft family has a regression head")
        LoRAOptions(self.lora_rank, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets),
                    tuple(self.lora_trainable))  # fmt: skip  (raises ValueError naming the field)

    @property
    def lora(self) -> LoRAOptions:
        return LoRAOptions(self.lora_rank, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets),
                           tuple(self.lora_trainable))  # fmt: skip


@config
class SFTDataConfig:
    #: Episode store (zarr) with the demonstrations.
    store: str = ""
    val_fraction: float = 0.1
    only_successful: bool = True
    max_episodes: int = 0  # 0 = all
    #: Cameras to train on ([] = all cameras of the store).
    cameras: list[str] = field(default_factory=list)
    #: Only episodes recorded in these task splits (EpisodeMeta.split; [] = all).
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
    # Visual domain randomization (sim-to-real: another renderer or camera); 0 = off. Factors are
    # drawn per image in [1 - x, 1 + x]. Hue shifts change colour names: keep ``hue`` small.
    #: Hue rotation, a fraction of the colour wheel (+-).
    hue: float = 0.0
    #: Per-channel gain (white balance, the colour of the light).
    channel_gain: float = 0.0
    #: Gamma (exponent) factor: a renderer's or a camera's tone curve.
    gamma: float = 0.0
    #: Gaussian pixel noise, standard deviation in [0, 1] intensity units.
    noise_std: float = 0.0
    #: Probability, per sample, that the policy is shown the demos' mean arm state (0 after
    #: normalization) instead of its proprio: it learns to act from the images when proprio is off.
    proprio_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("shift_px", "brightness", "contrast", "saturation", "hue", "channel_gain", "gamma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: 0 (off) or a positive strength, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "channel_gain", "gamma"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name}: a factor range [1 - x, 1 + x] needs x < 1, got {getattr(self, name)}")
        if not 0.0 <= self.proprio_dropout <= 1.0:
            raise ValueError(f"proprio_dropout: a probability in [0, 1], got {self.proprio_dropout}")
        if self.hue > 0.5:
            raise ValueError(f"hue: at most 0.5 (half the colour wheel), got {self.hue}")


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
    #: The evaluation's environment; the checkpoint's contract decides the cameras.
    env: SimEnvSpec = field(default_factory=SimEnvSpec)


@config
class SFTConfig:
    name: str = "sft"
    #: Runs are written to ``<root>/<name>/<timestamp>/`` (the same key as RL's ``runner.root``).
    root: str = "runs"
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
    #: Weight of the auxiliary loss on where the object and the target are relative to the TCP,
    #: taken from the demonstrations' grasp and release points (see sft/auxiliary.py); 0 = off.
    aux_weight: float = 0.0
    #: Steps of the keypoint stem's warm-up before SFT: the stem alone learns the same waypoints
    #: (see sft/stem_warmup.py); 0 = off. Needs model.keypoint_stem > 0.
    stem_warmup_steps: int = 0
    stem_warmup_lr: float = 1e-3
    stem_warmup_batch_size: int = 64
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 500
    #: Keep only the newest N checkpoints plus the one with the lowest validation loss (0: keep all).
    keep_checkpoints: int = 0
    #: "" = fresh run; "auto" = continue the newest run of this name; or a run directory.
    resume: str = ""
    progress: bool = True
    #: Memory of one GPU in GB for ``--plan`` (null: torch.cuda's, when a GPU is present).
    gpu_memory_gb: float | None = None

    _renamed = renamed_keys({"run_root": "root"})

    def __post_init__(self) -> None:
        if self.bin_sigma < 0:
            raise ValueError("bin_sigma: 0 (one-hot targets) or a positive width in bins, e.g. 1.5")
        if self.keep_checkpoints < 0:
            raise ValueError("keep_checkpoints: 0 (keep all) or how many of the newest to keep")
        if self.aux_weight < 0:
            raise ValueError("aux_weight: 0 (off) or a positive weight of the auxiliary loss, e.g. 1.0")
        if self.stem_warmup_steps < 0 or not self.stem_warmup_lr > 0 or self.stem_warmup_batch_size < 1:
            raise ValueError("stem_warmup_steps: >= 0 steps (0 = off) with a positive stem_warmup_lr and batch size")
        if self.stem_warmup_steps > 0 and not self.model.keypoint_stem:
            raise ValueError("stem_warmup_steps: the warm-up trains the keypoint stem; set model.keypoint_stem "
                             "(e.g. 32) or stem_warmup_steps=0")
        if self.aux_weight > 0 and self.model.family != "openvla-oft":
            raise ValueError("aux_weight: the auxiliary head reads OFT's action-query states; use model.family=openvla-oft")
