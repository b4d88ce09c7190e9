"""The driver's rollout buffer: one iteration's trajectories, and which column is which env.

:class:`ColumnLayout` is the one place that maps columns to envs. Env worker ``w`` holds envs
``w * E .. (w + 1) * E - 1`` in ``S`` stages of ``n = E / S``; one rollout call acts on a whole
stage (every worker's ``n`` envs), so batch columns are ordered stage, then env worker, then env::

    column = (stage * W + worker) * n + k      env_id = worker * E + stage * n + k

:class:`RolloutBuffer` fills the per-step arrays from the env workers'
:class:`~simbridge.training.rl.records.StageResult` as they arrive, drops the running episodes of
a crashed worker's stage, and assembles the :class:`~simbridge.training.rl.batch.RolloutBatch`
with the rollout worker's :class:`~simbridge.training.rl.records.RolloutRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import EnvConfig
from simbridge.training.rl.records import RolloutRecord, StageResult


@dataclass(frozen=True)
class ColumnLayout:
    """Columns <-> (stage, env worker, env) <-> global env ids."""

    num_stages: int  # S
    num_workers: int  # W
    envs_per_worker: int  # E

    @classmethod
    def from_config(cls, env: EnvConfig) -> ColumnLayout:
        return cls(env.pipeline_stage_num, env.num_workers, env.envs_per_worker)

    @property
    def per_stage(self) -> int:
        """Envs of one worker in one stage (n)."""
        return self.envs_per_worker // self.num_stages

    @property
    def num_envs(self) -> int:
        return self.num_workers * self.envs_per_worker

    # --- the env worker's view: its own envs ------------------------------------------------
    def stage_envs(self, stage: int) -> range:
        """A worker's local indices (0 .. E - 1) of the envs in ``stage``."""
        return range(stage * self.per_stage, (stage + 1) * self.per_stage)

    def env_id(self, worker: int, local: int) -> int:
        return worker * self.envs_per_worker + local

    # --- the driver's view: columns of the batch --------------------------------------------
    def stage_cols(self, stage: int) -> slice:
        """The columns of one rollout call: every worker's envs of ``stage``."""
        width = self.num_workers * self.per_stage
        return slice(stage * width, (stage + 1) * width)

    def cols(self, stage: int, worker: int) -> slice:
        """The columns of one worker's stage (its :class:`StageResult`)."""
        start = (stage * self.num_workers + worker) * self.per_stage
        return slice(start, start + self.per_stage)

    def row_offset(self, worker: int) -> int:
        """Where a worker's envs start among a stage's rows (the rollout call's actions)."""
        return worker * self.per_stage

    def env_ids(self) -> np.ndarray:
        """The global env id of each column."""
        ids = np.empty(self.num_envs, np.int64)
        for s in range(self.num_stages):
            for w in range(self.num_workers):
                ids[self.cols(s, w)] = [self.env_id(w, j) for j in self.stage_envs(s)]
        return ids

    def column(self, env_id: int) -> int:
        """The column of a global env id (the inverse of :meth:`env_ids`)."""
        worker, local = divmod(env_id, self.envs_per_worker)
        stage, k = divmod(local, self.per_stage)
        return self.cols(stage, worker).start + k


class RolloutBuffer:
    """One iteration of ``T`` policy steps x ``N`` columns, filled stage result by stage result."""

    def __init__(self, layout: ColumnLayout, num_steps: int, episodic: bool, group_size: int):
        T, N = num_steps, layout.num_envs
        self.layout = layout
        self.num_steps = num_steps
        self.episodic = episodic  # GRPO: one episode per env; a dropped one leaves its group
        self.group_size = group_size
        self.env_ids = layout.env_ids()
        # From the env workers, per policy step and column.
        self.rewards = np.zeros((T, N), np.float32)
        self.dones = np.zeros((T, N), bool)
        self.valid = np.zeros((T, N), bool)  # train on this step
        # Per column: where its running episode started (dropped from there after a crash), and
        # (GRPO) whether its episode was dropped and from which step on nothing is trained on.
        self.ep_start = np.zeros(N, np.int64)
        self.dropped = np.zeros(N, bool)
        self.excluded_from = np.full(N, T + 1)
        # From the rollout worker: the critic's estimates after the last step (PPO bootstraps them).
        self.last_values = np.zeros(N, np.float32)

    def add(self, t: int, stage: int, worker: int, result: StageResult, stepped: bool) -> None:
        """A worker's stage as policy step ``t`` sees it: its result of step ``t - 1`` when
        ``stepped`` (else a reset, or the previous iteration's last step), and who acts at ``t``."""
        cols = self.layout.cols(stage, worker)
        if not np.array_equal(result.env_ids, self.env_ids[cols]):
            raise RuntimeError(
                f"env worker {worker}, stage {stage} returned envs {result.env_ids.tolist()} for columns "
                f"{cols.start}..{cols.stop - 1}, which hold envs {self.env_ids[cols].tolist()}"
            )
        if stepped:
            self.rewards[t - 1, cols] = result.rewards
            self.dones[t - 1, cols] = result.dones
            self.ep_start[cols] = np.where(result.dones, t, self.ep_start[cols])
        if t < self.num_steps:
            self.valid[t, cols] = result.active

    def drop_running(self, t: int, stage: int, worker: int) -> int:
        """A worker's stage failed before step ``t`` (crash): mask its running episodes out of
        training, end them at ``t - 1``; returns how many episodes were running."""
        cols = self.layout.cols(stage, worker)
        # A copy: the loop masks valid[t - 1] before it reads who was running.
        active = self.valid[t - 1, cols].copy() if t > 0 else np.zeros(self.layout.per_stage, bool)
        running = int(active.sum())
        for k, col in enumerate(range(cols.start, cols.stop)):
            if t > 0:
                self.valid[self.ep_start[col] : t, col] = False
                self.dones[t - 1, col] = True
                self.rewards[t - 1, col] = 0.0
            if self.episodic:
                self.dropped[col] |= bool(active[k])
                self.excluded_from[col] = min(self.excluded_from[col], t)
            self.ep_start[col] = t
        return running

    def set_last_values(self, stage: int, values: np.ndarray) -> None:
        self.last_values[self.layout.stage_cols(stage)] = values

    def to_batch(self, records: list[list[RolloutRecord]], version: int) -> RolloutBatch:
        """The batch for the actor; ``records[t][s]``: the rollout call of step ``t`` on stage ``s``."""
        T, N = self.num_steps, self.layout.num_envs
        for col in np.flatnonzero(self.excluded_from <= T):  # GRPO: the steps after a crash-reset
            self.valid[self.excluded_from[col] :, col] = False
        first = records[0][0]
        obs = {k: np.empty((T, N, *v.shape[1:]), v.dtype) for k, v in first.obs.items()}
        tokens = np.empty((T, N, *first.tokens.shape[1:]), first.tokens.dtype)
        logprobs = np.empty((T, N), np.float32)
        values = np.empty((T, N), np.float32)
        for t, row in enumerate(records):
            for s, rec in enumerate(row):
                cols = self.layout.stage_cols(s)
                for k, v in rec.obs.items():
                    obs[k][t, cols] = v
                tokens[t, cols] = rec.tokens
                logprobs[t, cols] = rec.logprobs
                values[t, cols] = rec.values
        return RolloutBatch(
            obs=obs, tokens=tokens, logprobs=logprobs, values=values, rewards=self.rewards, dones=self.dones,
            valid=self.valid, last_values=self.last_values, group_ids=self.env_ids // self.group_size,
            dropped=self.dropped, weights_version=version, extra={"env_ids": self.env_ids.copy()},
        )
