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

The per-step arrays and the column <-> env layout belong to
:class:`~simbridge.training.rl.buffer.RolloutBuffer`; this module only drives the workers.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from simbridge.training.rl.batch import RolloutBatch
from simbridge.training.rl.buffer import ColumnLayout, RolloutBuffer
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

    def count(self, result: StageResult) -> None:
        self.episodes.extend(result.episodes)
        self.env_time += result.env_time
        self.env_steps += result.env_steps


class RolloutCollector:
    def __init__(self, cfg: RLConfig, env_workers: list[Any], rollout: Any, episodic: bool, uses_critic: bool,
                 chunk_size: int = 1):
        self.cfg = cfg
        self.env_workers = env_workers
        self.rollout = rollout
        self.episodic = episodic
        self.uses_critic = uses_critic
        self.chunk_size = chunk_size
        self.layout = ColumnLayout.from_config(cfg.env)
        self.pipelined = cfg.cluster.placement != "collocated"
        self._refs: list[list[Any]] | None = None  # per stage, per worker: result giving the next obs
        self.restart_timeout_s = 300.0
        self._pids: list[int] = []  # env worker processes, to count restarts

    @property
    def num_steps(self) -> int:
        if self.episodic:  # one whole episode per env
            return math.ceil(self.cfg.env.max_episode_steps / self.chunk_size)
        return self.cfg.runner.rollout_steps

    def collect(self, iteration: int, version: int) -> tuple[RolloutBatch, RolloutStats]:
        import ray

        T, S, W = self.num_steps, self.layout.num_stages, self.layout.num_workers
        buffer = RolloutBuffer(self.layout, T, self.episodic, self.cfg.algorithm.group_size)
        records: list[list[Any]] = [[None] * S for _ in range(T)]  # Ray refs of RolloutRecords
        last_records: list[tuple[int, Any]] = []
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
                    try:
                        result: StageResult = ray.get(self._refs[s][w])
                        stepped = t > 0  # at t = 0: a reset or last iteration's result
                    except (ray.exceptions.RayActorError, EnvStageNotReset) as exc:
                        result = self._recover(s, w, t, exc, buffer, stats, iteration)
                        stepped = False
                    buffer.add(t, s, w, result, stepped)
                    if t > 0 or fresh:  # at t = 0 a carried result was counted last iteration
                        stats.count(result)
                seed = call_seed(self.cfg.runner.seed, iteration, t, s)
                act = self.rollout.act.options(num_returns=2)
                if t == T:  # bootstrap values for the observations after the last step
                    if self.uses_critic:
                        last_records.append((s, act.remote(seed, version, *self._refs[s])[1]))
                    continue
                actions_ref, record_ref = act.remote(seed, version, *self._refs[s])
                records[t][s] = record_ref
                self._refs[s] = [ew.step_stage.remote(s, actions_ref, self.layout.row_offset(w))
                                 for w, ew in enumerate(self.env_workers)]  # fmt: skip
                if not self.pipelined:
                    ray.wait(self._refs[s], num_returns=W)

        for s, ref in last_records:
            buffer.set_last_values(s, ray.get(ref).values)
        fetched: list[RolloutRecord] = ray.get([r for row in records for r in row])
        stats.wall_time = time.perf_counter() - t_start
        stats.inference_time = sum(r.inference_time for r in fetched)
        batch = buffer.to_batch([fetched[t * S : (t + 1) * S] for t in range(T)], version)
        return batch, stats

    def _recover(
        self, s: int, w: int, t: int, exc: Exception, buffer: RolloutBuffer, stats: RolloutStats, iteration: int
    ) -> StageResult:
        """An env worker crashed: drop its stage's running episodes, reset the stage, go on."""
        import ray

        n_dropped = buffer.drop_running(t, s, w)
        stats.dropped_episodes += n_dropped
        log.warning(
            "env worker %d crashed or was restarted (%s) at step %d, stage %d: %d running episode(s) dropped; "
            "resetting its envs", w, type(exc).__name__, t, s, n_dropped,
        )
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
