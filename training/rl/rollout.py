"""Collecting one iteration's trajectories from the env and rollout worker groups.

Every env worker holds ``S`` stages of ``n`` envs. For each policy step ``t`` and stage ``s``
the driver hands the stage's observations (the env workers' last results, as Ray object
references) to the rollout worker and chains the env workers' ``step_stage`` on the returned
actions. In *pipelined* mode (hybrid / disaggregated placement) the driver does not wait: the
env workers step stage ``s`` while the rollout worker already infers on stage ``s + 1``. In
*sequential* mode (collocated) it waits for each stage before the next, so simulation and
inference never overlap. Both issue the same calls with the same per-call sampling seeds,
so they produce identical trajectories.

Faults: when an env worker dies (Ray restarts it) the episodes its envs were running are
dropped (their steps are masked out of training and they are not counted in the
statistics), the stages are reset and the rollout goes on.

Columns of the batch are ordered stage, then env worker, then env.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.records import EpisodeRecord, RolloutRecord, StageResult
from simbridge.training.rl.workers import EnvStageNotReset

log = logging.getLogger(__name__)


def call_seed(run_seed: int, iteration: int, step: int, stage: int) -> int:
    """Sampling seed of one rollout call: the same in every placement mode."""
    return (run_seed * 1_000_003 + iteration * 10_007 + step * 101 + stage) % (2**31 - 1)


@dataclass
class RolloutStats:
    wall_time: float = 0.0
    env_time: float = 0.0  # summed over env workers
    inference_time: float = 0.0
    env_steps: int = 0
    episodes: list[EpisodeRecord] = field(default_factory=list)
    crashes: int = 0
    dropped_episodes: int = 0


class RolloutCollector:
    def __init__(self, cfg: RLConfig, env_workers: list[Any], rollout: Any, episodic: bool, uses_critic: bool,
                 chunk_size: int = 1):
        self.cfg = cfg
        self.env_workers = env_workers
        self.rollout = rollout
        self.episodic = episodic
        self.uses_critic = uses_critic
        self.chunk_size = chunk_size
        self.num_stages = cfg.env.pipeline_stage_num
        self.num_workers = cfg.env.num_workers
        self.per_stage = cfg.env.envs_per_worker // self.num_stages
        self.num_envs = cfg.env.num_envs
        self.pipelined = cfg.cluster.placement != "collocated"
        self._refs: list[list[Any]] | None = None  # per stage, per worker: result giving the next obs
        self.restart_timeout_s = 300.0
        self._pids: list[int] = []  # env worker processes, to count restarts

    @property
    def num_steps(self) -> int:
        if self.episodic:  # one whole episode per env
            return math.ceil(self.cfg.env.max_episode_steps / self.chunk_size)
        return self.cfg.runner.rollout_steps

    def _cols(self, stage: int, worker: int) -> slice:
        start = (stage * self.num_workers + worker) * self.per_stage
        return slice(start, start + self.per_stage)

    def collect(self, iteration: int, version: int) -> tuple[RolloutBatch, RolloutStats]:
        import ray

        T, N, S, W = self.num_steps, self.num_envs, self.num_stages, self.num_workers
        rewards = np.zeros((T, N), np.float32)
        dones = np.zeros((T, N), bool)
        valid = np.zeros((T, N), bool)
        ep_start = np.zeros(N, np.int64)
        dropped = np.zeros(N, bool)
        excluded_from = np.full(N, T + 1)  # GRPO: steps after a crash-reset are not trained on
        last_values = np.zeros(N, np.float32)
        records: list[list[Any]] = [[None] * S for _ in range(T)]
        last_records: list[Any] = []
        stats = RolloutStats()
        if not self._pids:
            self._pids = ray.get([w.pid.remote() for w in self.env_workers])
        fresh = self._refs is None or self.episodic
        if fresh:
            self._refs = [[w.reset_stage.remote(s, iteration) for w in self.env_workers] for s in range(S)]
        t_start = time.perf_counter()

        for t in range(T + 1):
            for s in range(S):
                for w in range(W):
                    cols = self._cols(s, w)
                    try:
                        result: StageResult = ray.get(self._refs[s][w])
                        row = t - 1 if t > 0 else None  # at t = 0: a reset or last iteration's result
                    except (ray.exceptions.RayActorError, EnvStageNotReset) as exc:
                        result = self._recover(s, w, t, exc, cols, valid, dones, rewards, ep_start, dropped,
                                               excluded_from, stats, iteration)
                        row = None
                    if row is not None:
                        rewards[row, cols] = result.rewards
                        dones[row, cols] = result.dones
                        ep_start[cols] = np.where(result.dones, row + 1, ep_start[cols])
                    if t > 0 or fresh:  # at t = 0 a carried result was counted last iteration
                        stats.episodes.extend(result.episodes)
                        stats.env_time += result.env_time
                        stats.env_steps += result.env_steps
                    if t < T:
                        valid[t, cols] = result.active
                seed = call_seed(self.cfg.runner.seed, iteration, t, s)
                act = self.rollout.act.options(num_returns=2)
                if t == T:  # bootstrap values for the observations after the last step
                    if self.uses_critic:
                        last_records.append((s, act.remote(seed, version, *self._refs[s])[1]))
                    continue
                actions_ref, record_ref = act.remote(seed, version, *self._refs[s])
                records[t][s] = record_ref
                per = self.per_stage
                self._refs[s] = [ew.step_stage.remote(s, actions_ref, w * per) for w, ew in enumerate(self.env_workers)]
                if not self.pipelined:
                    ray.wait(self._refs[s], num_returns=W)

        for s, ref in last_records:
            rec: RolloutRecord = ray.get(ref)
            stage_cols = slice(s * W * self.per_stage, (s + 1) * W * self.per_stage)
            last_values[stage_cols] = rec.values
        batch_records: list[RolloutRecord] = ray.get([r for row in records for r in row])
        stats.wall_time = time.perf_counter() - t_start
        stats.inference_time = sum(r.inference_time for r in batch_records)
        for col in np.flatnonzero(excluded_from <= T):
            valid[excluded_from[col] :, col] = False
        batch = self._assemble(batch_records, rewards, dones, valid, last_values, dropped, version)
        return batch, stats

    def _recover(self, s, w, t, exc, cols, valid, dones, rewards, ep_start, dropped, excluded_from, stats, iteration):
        """An env worker crashed: drop its stage's running episodes, reset the stage, go on."""
        import ray

        active = valid[t - 1, cols] if t > 0 else np.zeros(self.per_stage, bool)
        n_dropped = int(active.sum())
        stats.dropped_episodes += n_dropped
        log.warning(
            "env worker %d crashed or was restarted (%s) at step %d, stage %d: %d running episode(s) dropped; "
            "resetting its envs", w, type(exc).__name__, t, s, n_dropped,
        )
        for k, col in enumerate(range(cols.start, cols.stop)):
            if t > 0:
                valid[ep_start[col] : t, col] = False
                dones[t - 1, col] = True
                rewards[t - 1, col] = 0.0
            if self.episodic:
                dropped[col] |= bool(active[k])
                excluded_from[col] = min(excluded_from[col], t)
            ep_start[col] = t
        deadline = time.monotonic() + self.restart_timeout_s
        while True:  # calls made while Ray restarts the actor fail as "unavailable": retry until it is back
            self._refs[s][w] = self.env_workers[w].reset_stage.remote(s, iteration)
            try:
                result = ray.get(self._refs[s][w])
                pid = ray.get(self.env_workers[w].pid.remote())
                if pid != self._pids[w]:  # one crash fails every stage of the worker: count it once
                    stats.crashes += 1
                    self._pids[w] = pid
                return result
            except ray.exceptions.ActorDiedError as err:
                raise RuntimeError(
                    f"env worker {w} died and was not restarted (cluster.env_max_restarts="
                    f"{self.cfg.cluster.env_max_restarts} exhausted?): {err}"
                ) from err
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _assemble(self, recs, rewards, dones, valid, last_values, dropped, version) -> RolloutBatch:
        T, S = self.num_steps, self.num_stages
        first = recs[0]
        obs = {k: np.empty((T, self.num_envs, *v.shape[1:]), v.dtype) for k, v in first.obs.items()}
        tokens = np.empty((T, self.num_envs, *first.tokens.shape[1:]), first.tokens.dtype)
        logprobs = np.empty((T, self.num_envs), np.float32)
        values = np.empty((T, self.num_envs), np.float32)
        width = self.num_workers * self.per_stage
        for i, rec in enumerate(recs):
            t, s = divmod(i, S)
            cols = slice(s * width, (s + 1) * width)
            for k, v in rec.obs.items():
                obs[k][t, cols] = v
            tokens[t, cols] = rec.tokens
            logprobs[t, cols] = rec.logprobs
            values[t, cols] = rec.values
        env_ids = self._env_ids()
        group_ids = env_ids // self.cfg.algorithm.group_size
        return RolloutBatch(
            obs=obs, tokens=tokens, logprobs=logprobs, values=values, rewards=rewards, dones=dones, valid=valid,
            last_values=last_values, group_ids=group_ids, dropped=dropped, weights_version=version,
            extra={"env_ids": env_ids},
        )

    def _env_ids(self) -> np.ndarray:
        """Global env id of each column (env workers number their envs ``w * E + j``)."""
        ids = np.empty(self.num_envs, np.int64)
        for s in range(self.num_stages):
            for w in range(self.num_workers):
                cols = self._cols(s, w)
                ids[cols] = [w * self.cfg.env.envs_per_worker + s * self.per_stage + k for k in range(self.per_stage)]
        return ids
