"""Teacher-forced action error of an SFT policy in physical units, per phase of the demonstration.

The normalized L1 of :mod:`.loss` says little about the robot: 0.05 of a normalized range is a
different distance for every dataset. Here the policy's prediction on demonstration inputs
(teacher forcing: the true observation, instruction and, for autoregressive decoders, the true
previous action tokens) and the demonstrated label chunk are both unnormalized with the
checkpoint's own :class:`~simbridge.training.models.ActionStats` and compared per action
dimension group:

* translation (x, y, z): Euclidean error of the per-step translation, in **millimetres**;
* rotation (rx, ry, rz): Euclidean error of the per-step rotation deltas, in **radians**;
* gripper: the **agreement rate** of the open (>= 0) / closed (< 0) command.

The prediction is what the deployed policy would execute: the regression head's output when
the model has one, otherwise the centre of the most likely bin of every action token.

**Phases.** The episode store does not record the scripted expert's phase (a demo step holds the
observation, ``action`` and ``policy_action``; teleoperated and robot episodes have no phase at
all), so phases are derived from the label action itself, the one thing every demonstration
has. With ``MOVE_THRESHOLD_M`` = 5 mm per step (5 cm/s at 10 Hz; the expert's fine moves
before a grasp or a release fall below it, its transfers are 1-5 cm per step):

* ``reach``: gripper open, translation >= 5 mm (approach, descent, retreat);
* ``align``: gripper open, translation < 5 mm (final alignment over the object, release, waits);
* ``grasp``: gripper closed, translation < 5 mm (closing and holding still);
* ``transport``: gripper closed, translation >= 5 mm (lift, carry, lower).

Every phase's numbers come with the number of action steps they average over; ``all`` is
the whole set. ``start`` (:func:`episode_start_error`) is the first step of every episode on its
first frame: where the policy must find the object from the first view alone. A policy that
fits the later steps but not this one descends wherever it is (docs/experiments/sft_recipe.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from simbridge.training.models import ActionStats

PHASES: tuple[str, ...] = ("reach", "align", "grasp", "transport")
#: Translation per step (metres) that separates moving from fine / still actions.
MOVE_THRESHOLD_M = 0.005


def action_phases(actions: np.ndarray, move_threshold_m: float = MOVE_THRESHOLD_M) -> np.ndarray:
    """Phase index into :data:`PHASES` of every label action (..., 7) (see module docstring)."""
    a = np.asarray(actions, np.float64)
    moving = np.linalg.norm(a[..., :3], axis=-1) >= move_threshold_m
    closed = a[..., 6] < 0
    return np.where(closed, np.where(moving, 3, 2), np.where(moving, 0, 1)).astype(np.int64)


def predicted_actions(policy: Any, out: Any) -> torch.Tensor:
    """Physical actions (B, K, 7) the policy predicts in a teacher-forced ``forward`` output ``out``."""
    if out.regression is not None:
        normalized = out.regression
    else:
        normalized = policy.bin_values(out.action_logits.argmax(-1))
    b = normalized.shape[0]
    normalized = normalized.reshape(b, policy.config.chunk_size, policy.config.action_dim)
    stats = policy.action_stats or ActionStats.from_action_spec(policy.contract.action)
    clip = not (out.regression is not None and policy.config.regression_head_kind == "mlp-resnet")
    return stats.denormalize(normalized.float(), clip=clip)


class ActionError:
    """Sums of per-step errors by phase; :meth:`result` turns them into mm / rad / agreement."""

    def __init__(self) -> None:
        self.steps = np.zeros(len(PHASES), np.int64)
        self.translation_m = np.zeros(len(PHASES))
        self.rotation_rad = np.zeros(len(PHASES))
        self.gripper_agree = np.zeros(len(PHASES))

    def add(self, predicted: np.ndarray | torch.Tensor, label: np.ndarray) -> None:
        """Add physical predictions and labels of the same shape (..., 7)."""
        if isinstance(predicted, torch.Tensor):
            predicted = predicted.detach().cpu().numpy()
        p = np.asarray(predicted, np.float64).reshape(-1, 7)
        y = np.asarray(label, np.float64).reshape(-1, 7)
        phase = action_phases(y)
        trans = np.linalg.norm(p[:, :3] - y[:, :3], axis=1)
        rot = np.linalg.norm(p[:, 3:6] - y[:, 3:6], axis=1)
        agree = (p[:, 6] >= 0) == (y[:, 6] >= 0)
        self.steps += np.bincount(phase, minlength=len(PHASES))
        self.translation_m += np.bincount(phase, trans, minlength=len(PHASES))
        self.rotation_rad += np.bincount(phase, rot, minlength=len(PHASES))
        self.gripper_agree += np.bincount(phase, agree.astype(np.float64), minlength=len(PHASES))

    def result(self) -> dict[str, dict[str, float]]:
        """``{phase: {steps, translation_mm, rotation_rad, gripper_agreement}}`` for the phases seen, and ``all``."""

        def block(n: float, t: float, r: float, g: float) -> dict[str, float]:
            return {"steps": int(n), "translation_mm": 1000.0 * t / n, "rotation_rad": r / n,
                    "gripper_agreement": g / n}  # fmt: skip

        out = {
            name: block(self.steps[i], self.translation_m[i], self.rotation_rad[i], self.gripper_agree[i])
            for i, name in enumerate(PHASES)
            if self.steps[i]
        }
        if self.steps.sum():
            out["all"] = block(self.steps.sum(), self.translation_m.sum(), self.rotation_rad.sum(),
                               self.gripper_agree.sum())  # fmt: skip
        return out


def flatten(result: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """Metric names for metrics.jsonl / TensorBoard: ``<prefix>/<phase>/<quantity>``."""
    return {f"{prefix}/{phase}/{k}": float(v) for phase, r in result.items() for k, v in r.items()}


def format_action_error(result: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :meth:`ActionError.result`."""
    lines = [f"{'phase':10s} {'steps':>6s} {'translation mm':>15s} {'rotation rad':>13s} {'gripper agree':>14s}"]
    for phase, r in result.items():
        lines.append(f"{phase:10s} {r['steps']:6d} {r['translation_mm']:15.2f} {r['rotation_rad']:13.4f} "
                     f"{100 * r['gripper_agreement']:13.1f}%")  # fmt: skip
    return "\n".join(lines)


def episode_start_error(policy: Any, demos: Any, batch_size: int = 32) -> dict[str, float]:
    """The first predicted step's error on the first frame of every episode of ``demos``
    (an :class:`~simbridge.training.sft.data.Demos`), as one block of :meth:`ActionError.result`."""
    from simbridge.training.sft.loss import make_batch

    starts = np.r_[0, np.unique(demos.episode_end)[:-1]]
    errors = ActionError()
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            rows = starts[i : i + batch_size]
            batch, _ = make_batch(policy, demos, rows)
            errors.add(predicted_actions(policy, policy.forward(**batch))[:, 0], demos.actions[rows])
    return errors.result()["all"]
