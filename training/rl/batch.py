"""The trajectory batch that flows rollout -> actor: time-major numpy arrays.

``T`` policy steps x ``N`` environments (ordered stage by stage, then env worker, then env:
:class:`~simbridge.training.rl.buffer.ColumnLayout`; ``extra["env_ids"]`` names each column's env).
One policy step may execute an action chunk of ``K`` env steps; its reward is the chunk's sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RolloutBatch:
    obs: dict[str, np.ndarray]  # policy inputs from ``policy.prepare``: each [T, N, ...]
    tokens: np.ndarray  # [T, N, D] sampled action tokens
    logprobs: np.ndarray  # [T, N] log-prob of the tokens under the rollout weights
    values: np.ndarray  # [T, N] critic estimates
    rewards: np.ndarray  # [T, N]
    dones: np.ndarray  # [T, N] bool: the episode ended with this step
    valid: np.ndarray  # [T, N] bool: train on this step (False: env idle, or episode dropped)
    last_values: np.ndarray  # [N] estimates for the observation after the last step
    group_ids: np.ndarray  # [N] GRPO groups (envs sharing an initial state)
    dropped: np.ndarray  # [N] bool: the env's episode in this batch was dropped (worker crash)
    weights_version: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rewards.shape  # type: ignore[return-value]

    def flat(self, mask: np.ndarray, **per_step: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays of the masked steps, flattened to [M, ...] (obs keys prefixed ``obs.``)."""
        out = {f"obs.{k}": v[mask] for k, v in self.obs.items()}
        out.update(tokens=self.tokens[mask], logprobs=self.logprobs[mask], values=self.values[mask])
        out.update({k: np.asarray(v)[mask] for k, v in per_step.items()})
        return out
