"""What the worker groups send each other through Ray, as typed records (not string-keyed dicts).

* :class:`StageResult`: env worker -> rollout worker and driver, one stage after a reset or a step;
  it carries the :class:`EpisodeRecord` of every episode that finished during the step.
* :class:`RolloutRecord`: rollout worker -> driver, what training needs from one policy call
  (the actions themselves go to the env workers as a separate Ray object).

The driver gathers them into a :class:`~simbridge.training.rl.buffer.RolloutBuffer`, which makes
the :class:`~simbridge.training.rl.batch.RolloutBatch` it sends the actor. Rows of a stage's arrays
follow the env workers' order, then their envs' (:class:`~simbridge.training.rl.buffer.ColumnLayout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simbridge.data.spec import Observation


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished training episode (a line of the run's ``rollout_episodes.jsonl``)."""

    # Which env ran it, from which initial state.
    env_id: int  # global env id: env worker ``w`` numbers its envs ``w * envs_per_worker + j``
    seed: int  # the reset seed (GRPO: shared by the env's group)
    # How it went: the shaped reward summed over env steps, and the task's success flag.
    episode_return: float
    length: int  # env steps (a policy step executes a chunk of K of them)
    success: bool

    def to_dict(self) -> dict[str, int | float | bool]:
        """The ``rollout_episodes.jsonl`` keys (``env``, ``seed``, ``return``, ``length``, ``success``)."""
        return {"env": self.env_id, "seed": self.seed, "return": self.episode_return, "length": self.length,
                "success": self.success}  # fmt: skip


@dataclass
class StageResult:
    """The ``n`` envs of one env worker's stage after ``reset_stage`` or ``step_stage``."""

    # The envs, in row order, and the observation each acts on at the next policy step.
    env_ids: np.ndarray  # [n] int64 global env ids
    obs: list[Observation]
    # What the step did (zeros / False after a reset): reward summed over the executed action
    # chunk, whether the episode ended in it, and whether the env acts at the next step.
    rewards: np.ndarray  # [n] float32
    dones: np.ndarray  # [n] bool
    active: np.ndarray  # [n] bool: False while an env waits for the next reset (GRPO)
    episodes: list[EpisodeRecord]  # those that finished during the step
    # Cost: seconds the env worker spent, and env steps executed (chunk actions, not policy calls).
    env_time: float
    env_steps: int


@dataclass
class RolloutRecord:
    """What training needs from one policy call on a stage (``B`` rows: every env worker's envs)."""

    # The policy's inputs and its samples, per row.
    obs: dict[str, np.ndarray]  # ``policy.prepare`` outputs (text padded to a fixed width), each [B, ...]
    tokens: np.ndarray  # [B, D] sampled action tokens
    logprobs: np.ndarray  # [B] float32, summed over the tokens, at the rollout temperature
    values: np.ndarray  # [B] float32 critic estimates
    # The weights version that acted (the actor's, when synced) and the time the call took.
    version: int
    inference_time: float
