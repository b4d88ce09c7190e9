"""GRPO: critic-free policy optimisation with group-normalised episode returns (RLinf, LIBERO).

Each group of ``group_size`` environments starts every iteration from the same initial state
(the same reset seed) and runs one whole episode. An episode's advantage is its return
normalised within its group, broadcast to all its steps; groups whose returns are all equal
carry no signal and are filtered out. The surrogate uses an asymmetric clip (0.2 / 0.28).
"""

from __future__ import annotations

import numpy as np
import torch

from simbridge.training.rl.advantages import group_advantages
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.ppo import PPO


class GRPO(PPO):
    name = "grpo"
    uses_critic = False
    episodic = True

    def compute_advantages(self, batch: RolloutBatch) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        episode_returns = np.where(batch.valid, batch.rewards, 0.0).sum(axis=0)
        alive = ~batch.dropped
        adv_alive, keep_alive = group_advantages(
            episode_returns[alive], batch.group_ids[alive], filter_equal=self.cfg.filter_equal_groups
        )
        advantages = np.zeros(batch.shape[1], np.float32)
        keep = np.zeros(batch.shape[1], bool)
        advantages[alive], keep[alive] = adv_alive, keep_alive
        mask = batch.valid & keep[None, :]
        per_step = np.broadcast_to(advantages[None, :], batch.shape)
        flat = batch.flat(mask, advantages=per_step)
        num_groups = len(np.unique(batch.group_ids))
        kept_groups = len(np.unique(batch.group_ids[keep]))
        return flat, {"groups_kept_fraction": kept_groups / max(num_groups, 1), "train_steps": int(mask.sum())}

    def loss(self, ev, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logratio = ev.logprobs - mb["logprobs"]
        ratio = logratio.exp()
        adv = mb["advantages"]
        pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - self.cfg.clip_low, 1 + self.cfg.clip_upper))
        pg_loss = pg_loss.mean()
        entropy = ev.entropy.mean()
        loss = pg_loss - self.cfg.entropy_coef * entropy
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - logratio).mean()
            clipped = (ratio < 1 - self.cfg.clip_low) | (ratio > 1 + self.cfg.clip_upper)
        return loss, {
            "policy_loss": pg_loss.item(),
            "entropy": entropy.item(),
            "approx_kl": approx_kl.item(),
            "clip_fraction": clipped.float().mean().item(),
        }
