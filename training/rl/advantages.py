"""Advantage estimators: GAE for PPO, group-normalised episode returns for GRPO.

Conventions (time-major arrays, ``T`` policy steps x ``N`` environments):

* ``rewards[t, i]``: reward received after the action of step ``t``;
* ``dones[t, i]``: the episode of env ``i`` ended with step ``t`` (terminated or truncated),
  so nothing after ``t`` is bootstrapped into it;
* ``values[t, i]``: the critic's estimate for the observation of step ``t``;
* ``last_values[i]``: the estimate for the observation after the last step.
"""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation; returns ``(advantages, returns)`` shaped like rewards.

    ``delta_t = r_t + gamma * V_{t+1} * (1 - d_t) - V_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - d_t) * A_{t+1}``; ``returns = A + V``.
    """
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    not_done = 1.0 - np.asarray(dones, np.float64)
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros(rewards.shape[1:])
    next_values = np.asarray(last_values, np.float64)
    for t in reversed(range(num_steps)):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


def group_advantages(
    episode_returns: np.ndarray,
    group_ids: np.ndarray,
    filter_equal: bool = True,
    eps: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """GRPO: ``A = (R - mean_group) / (std_group + eps)`` per episode.

    Returns ``(advantages, keep)``: ``keep`` is False for episodes of groups whose returns are
    all equal (no signal: every member would get advantage 0) when ``filter_equal``, and for
    groups with a single surviving member (e.g. the others were dropped after a worker crash).
    """
    episode_returns = np.asarray(episode_returns, np.float64)
    group_ids = np.asarray(group_ids)
    advantages = np.zeros_like(episode_returns)
    keep = np.zeros(episode_returns.shape, dtype=bool)
    for g in np.unique(group_ids):
        members = group_ids == g
        r = episode_returns[members]
        if r.size < 2:
            continue
        std = r.std()
        if filter_equal and np.allclose(r, r[0]):
            continue
        advantages[members] = (r - r.mean()) / (std + eps)
        keep[members] = True
    return advantages.astype(np.float32), keep
