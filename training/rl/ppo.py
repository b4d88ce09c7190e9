"""PPO for token-action policies (CleanRL's ppo.py structure, RLinf's VLA recipe).

Read top to bottom: advantages with GAE, then the clipped surrogate objective with a clipped
Huber value loss and an entropy bonus, minibatch SGD with gradient clipping, monitored by the
approximate KL and the clip fraction. One epoch per batch by default (RL4VLA's efficient
recipe). The policy is any module with ``evaluate(batch, tokens, temperature) -> (logprobs,
entropy, values)``; log-probs are sums over a step's action tokens.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from simbridge.training.rl.advantages import compute_gae
from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import ActorConfig, AlgorithmConfig
from simbridge.training.rl.distributed import DataParallel

#: The critic's module in every policy family (``VLAPolicy.value_head``, ``ToyPolicy.value_head``).
VALUE_HEAD = "value_head"
#: What wrappers put in front of parameter names: peft's ``get_peft_model``, ``torch.compile``, DDP.
WRAPPER_PREFIXES = ("base_model.model.", "_orig_mod.", "module.")


def is_critic_parameter(name: str) -> bool:
    """The value head's parameters (own learning rate; the only ones trained in critic warm-up).

    Matched by module path, not by substring: vision encoders name attention projections
    ``value`` too (DINOv2's ``attention.attention.value`` in transformers 4), and those belong
    to the policy.
    """
    while prefix := next((p for p in WRAPPER_PREFIXES if name.startswith(p)), None):
        name = name.removeprefix(prefix)
    return name.partition(".")[0] == VALUE_HEAD


def ppo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    cfg: AlgorithmConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO objective on one minibatch (advantages already normalised if wanted)."""
    # Policy loss: clipped surrogate, possibly asymmetric (clip_low / clip_upper).
    logratio = new_logprobs - old_logprobs
    ratio = logratio.exp()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_upper)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss: Huber on the error, clipped around the rollout's estimate (take the worse).
    values_clipped = old_values + torch.clamp(new_values - old_values, -cfg.value_clip, cfg.value_clip)
    v_loss_unclipped = F.huber_loss(new_values, returns, reduction="none", delta=cfg.huber_delta)
    v_loss_clipped = F.huber_loss(values_clipped, returns, reduction="none", delta=cfg.huber_delta)
    v_loss = torch.max(v_loss_unclipped, v_loss_clipped).mean()

    entropy_mean = entropy.mean()
    loss = pg_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy_mean

    with torch.no_grad():  # monitors (http://joschu.net/blog/kl-approx.html)
        approx_kl = ((ratio - 1.0) - logratio).mean()
        clipped = (ratio < 1.0 - cfg.clip_low) | (ratio > 1.0 + cfg.clip_upper)
    metrics = {
        "policy_loss": pg_loss.item(),
        "value_loss": v_loss.item(),
        "entropy": entropy_mean.item(),
        "approx_kl": approx_kl.item(),
        "clip_fraction": clipped.float().mean().item(),
    }
    return loss, metrics


class PPO:
    """Proximal policy optimisation with a shared actor-critic."""

    name = "ppo"
    uses_critic = True
    #: PPO keeps episodes running across iterations (auto-reset); GRPO runs whole episodes.
    episodic = False

    def __init__(self, cfg: AlgorithmConfig, actor: ActorConfig):
        self.cfg = cfg
        self.actor = actor

    # 1. Advantages --------------------------------------------------------------------------
    def compute_advantages(self, batch: RolloutBatch) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per-step training targets of the valid steps, flattened: obs, tokens, advantages..."""
        advantages, returns = compute_gae(
            batch.rewards, batch.values, batch.dones, batch.last_values, self.cfg.gamma, self.cfg.gae_lambda
        )
        mask = batch.valid
        flat = batch.flat(mask, advantages=advantages, returns=returns)
        v, r = batch.values[mask], returns[mask]
        explained = 1.0 - np.var(r - v) / np.var(r) if r.size > 1 and np.var(r) > 0 else float("nan")
        return flat, {"explained_variance": float(explained), "train_steps": int(mask.sum())}

    # 2. Loss on one minibatch --------------------------------------------------------------
    def prepare_minibatch(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Whole-minibatch statistics, taken before the minibatch is split into processes and
        micro-batches (so the split does not change them): advantage normalisation."""
        advantages = mb["advantages"]
        if self.cfg.normalize_advantages and advantages.numel() > 1:
            mb = {**mb, "advantages": (advantages - advantages.mean()) / (advantages.std() + 1e-8)}
        return mb

    def loss(self, ev, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss of a (micro-)batch of :meth:`prepare_minibatch`'s rows, and its mean metrics."""
        return ppo_loss(
            ev.logprobs, mb["logprobs"], mb["advantages"], ev.values, mb["values"], mb["returns"], ev.entropy,
            self.cfg,
        )

    # 3. Update: epochs x shuffled minibatches, gradient clipping ---------------------------
    def update(
        self,
        policy: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: RolloutBatch,
        seed: int = 0,
        device: torch.device | str = "cpu",
        iteration: int = 0,
        temperature: float = 1.0,
        parallel: DataParallel | None = None,
    ) -> dict[str, float]:
        """``temperature``: the rollout's sampling temperature; its log-probs are of that distribution.

        ``parallel``: this process's share of a data-parallel actor (:mod:`.distributed`); every
        process calls ``update`` on the whole batch with the same seed and takes its slice of each
        minibatch, in micro-batches of ``actor.micro_batch_size`` (gradient accumulation).
        """
        parallel = parallel or DataParallel(policy, device=device)
        flat, metrics = self.compute_advantages(batch)
        # Critic warm-up: only the value head learns (the policy's parameters get no gradient,
        # so Adam leaves them and their moments untouched).
        warmup = iteration < self.cfg.critic_warmup_iterations
        metrics["critic_warmup"] = float(warmup)
        num = len(flat["logprobs"])
        if num == 0:
            return {**metrics, "skipped_update": 1.0}
        tensors = {k: torch.as_tensor(v, device=device) for k, v in flat.items()}
        rng = np.random.default_rng(seed)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        policy.train()
        for _epoch in range(self.actor.update_epochs):
            order = rng.permutation(num)
            for start in range(0, num, self.actor.minibatch_size):
                idx = torch.as_tensor(order[start : start + self.actor.minibatch_size], device=device)
                mb = self.prepare_minibatch({k: v[idx] for k, v in tensors.items()})
                optimizer.zero_grad(set_to_none=True)
                pieces = parallel.micro_batches(len(idx), self.actor.micro_batch_size)
                mb_sums: dict[str, float] = defaultdict(float)
                for i, (rows, weight) in enumerate(pieces):
                    micro = {k: v[torch.as_tensor(rows, device=device)] for k, v in mb.items()}
                    obs = {k[4:]: v for k, v in micro.items() if k.startswith("obs.")}
                    with parallel.gradient_sync(i == len(pieces) - 1):
                        ev = parallel.evaluate(obs, micro["tokens"], temperature)
                        loss, m = self.loss(ev, micro)
                        parallel.backward(loss, weight, ev)
                    for k, v in m.items():
                        mb_sums[k] += weight * v  # the minibatch's means, once summed over the processes
                m = parallel.sum_metrics(mb_sums)
                if warmup:
                    for name, p in policy.named_parameters():
                        if not is_critic_parameter(name):
                            p.grad = None
                m["grad_norm"] = parallel.clip_grad_norm(self.actor.max_grad_norm)
                optimizer.step()
                for k, v in m.items():
                    sums[k] += v
                count += 1
        policy.eval()
        return {**metrics, **{k: v / count for k, v in sums.items()}}
