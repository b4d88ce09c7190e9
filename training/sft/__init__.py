"""Supervised fine-tuning (behaviour cloning) of a VLA policy on demonstrations in an episode store.

    simbridge train sft --config launch/configs/sft_tiny.yaml data.store=runs/demos/expert.zarr
    launch/train_sft.sh launch/configs/sft_tiny.yaml optim.steps=500

One training sample is the observation at step ``t`` of an episode and the chunk of the
next ``K`` executed actions (padded with the episode's last action at its end). Actions are
normalized with 1st/99th percentile statistics of the *training* episodes and discretized
into 256 bins; the loss is the cross-entropy of the action tokens (+ L1 on the normalized
actions when the OFT regression head is on). Episodes are split into train / validation.

The run directory (``<root>/<name>/<stamp>/``) gets config.yaml, metrics.jsonl + TensorBoard,
checkpoints (``iter_NNNNNN`` with the optimizer state for resuming), a loss plot, and at the
end an evaluation on the training distribution when the simulation harness is installed.

Modules, in the order a sample flows through them:

* :mod:`.config`  — :class:`SFTConfig` and its sections (model, data, augment, optim, eval);
* :mod:`.data`    — :class:`Demos` (:func:`load_demos`), :func:`split_episodes`, :func:`augment_images`;
* :mod:`.loss`    — :func:`make_batch`, :func:`sft_loss` (+ :func:`soft_bin_targets`);
* :mod:`.loop`    — :func:`train_sft` (build or resume, optimize, validate, checkpoint);
* :mod:`.report`  — the loss plot and the evaluation in simulation at the end;
* :mod:`.action_error` — teacher-forced action error per phase in mm / rad (validation, end of run);
* :mod:`.cli`     — ``simbridge train sft``: :data:`~.cli.CONFIG` and :func:`~.cli.run_config` (and
  :func:`add_arguments`, :func:`run`: the same command line on a parser of your own).
"""

from simbridge.training.sft.cli import add_arguments, run
from simbridge.training.sft.config import (
    AugmentConfig,
    OptimConfig,
    SFTConfig,
    SFTDataConfig,
    SFTEvalConfig,
    SFTModelConfig,
)
from simbridge.training.sft.data import Demos, augment_images, load_demos, split_episodes
from simbridge.training.sft.loop import build_for_demos, evaluate_loss, train_sft
from simbridge.training.sft.loss import make_batch, sft_loss, soft_bin_targets
from simbridge.training.sft.report import evaluate_on_training_distribution, plot_losses

__all__ = [
    "AugmentConfig",
    "Demos",
    "OptimConfig",
    "SFTConfig",
    "SFTDataConfig",
    "SFTEvalConfig",
    "SFTModelConfig",
    "add_arguments",
    "augment_images",
    "build_for_demos",
    "evaluate_loss",
    "evaluate_on_training_distribution",
    "load_demos",
    "make_batch",
    "plot_losses",
    "run",
    "sft_loss",
    "soft_bin_targets",
    "split_episodes",
    "train_sft",
]
