"""The three worker groups of an RL run (RLinf's design): env, rollout and actor workers.

They are plain classes, made Ray actors by :mod:`simbridge.training.rl.placement`, so they
can also be used in-process (tests, debugging). Given the run directory, each checks at start
that it can write and read it (:func:`.paths.check_run_dir`).

* :class:`EnvWorker` holds ``envs_per_worker`` environments split into
  ``pipeline_stage_num`` stages and steps one stage at a time (action chunks of ``K``
  actions, shaped reward, auto-reset or freeze at episode end, seeded resets).
* :class:`RolloutWorker` holds the current weights (with their version; synced as trainable
  tensors only, :mod:`.weight_sync`) and turns a stage's observations into sampled actions,
  tokens, log-probs and values.
* :class:`~.actor_worker.ActorWorker` (its own module) holds the trainable policy and the
  optimizer, runs the algorithm's update and writes checkpoints; ``actor.num_workers`` of them
  form a data-parallel group (:mod:`.distributed`, driven by :class:`~.actor_group.ActorGroup`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import Observation, PolicyContract
from simbridge.training.rl.buffer import ColumnLayout
from simbridge.training.rl.config import RLConfig
from simbridge.training.rl.env_stage import make_stage
from simbridge.training.rl.factories import build_rl_policy, make_rl_env
from simbridge.training.rl.paths import check_run_dir
from simbridge.training.rl.records import EpisodeRecord, RolloutRecord, StageResult
from simbridge.training.rl.weight_sync import WeightPayload, apply_payload


class EnvStageNotReset(RuntimeError):
    """A stage was stepped before it was reset (e.g. its worker was restarted after a crash)."""


class StaleWeights(RuntimeError):
    """The rollout worker was asked to act with a weights version it does not hold."""


def episode_seed(base: int, env_id: int, num_envs: int, episode: int, num_initial_states: int = 0) -> int:
    """Reproducible reset seed of episode ``episode`` of env (or GRPO group) ``env_id``: unique per
    episode, or cycling through ``base .. base + num_initial_states - 1`` when that is > 0."""
    k = env_id + num_envs * episode
    return base + (k % num_initial_states if num_initial_states > 0 else k)


def _device(gpus: float) -> torch.device:
    """The GPU Ray assigned to this worker (``gpus_per_worker`` > 0), else the CPU."""
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def _set_threads(cpus: float) -> None:
    torch.set_num_threads(max(1, round(cpus)))


def pad_text_inputs(policy: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Left-pad instruction tokens to the tokenizer's fixed width, so that batches of different
    stages/iterations stack into one training batch (positions come from the mask: same outputs)."""
    tokenizer = getattr(policy, "tokenizer", None)
    if tokenizer is None or "input_ids" not in batch:
        return batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    extra = int(tokenizer.max_length) - ids.shape[1]
    if extra <= 0:
        return batch
    pad_ids = torch.full((ids.shape[0], extra), int(tokenizer.pad_id), dtype=ids.dtype, device=ids.device)
    return {
        **batch,
        "input_ids": torch.cat([pad_ids, ids], dim=1),
        "attention_mask": torch.cat([torch.zeros_like(pad_ids, dtype=mask.dtype), mask], dim=1),
    }


# --- env workers --------------------------------------------------------------------------------


class EnvWorker:
    """Environments ``[index * E, (index + 1) * E)`` of the run, stepped stage by stage.

    Each stage is an :class:`~.env_stage.EnvStage` (one batched ManiSkill scene on the GPU, one
    scene per env on the CPU); the episode bookkeeping (seeds, returns, freezing) lives here.
    """

    def __init__(self, cfg: RLConfig, index: int, episodic: bool, cpus: float = 1.0, run_dir: str | None = None):
        if run_dir is not None:
            check_run_dir(run_dir, f"env worker {index}")
        _set_threads(cpus)
        self.cfg = cfg
        self.index = index
        self.episodic = episodic  # True (GRPO): freeze finished envs until the next reset
        env_cfg = cfg.env
        self.layout = ColumnLayout.from_config(env_cfg)  # the driver's buffer places results by the same layout
        self.per_stage = self.layout.per_stage
        self.env_ids = [self.layout.env_id(index, j) for j in range(env_cfg.envs_per_worker)]
        self.stages = [
            make_stage(env_cfg, [self.env_ids[j] for j in self._stage(s)], lambda i: make_rl_env(env_cfg, seed=env_cfg.seed + i))
            for s in range(env_cfg.pipeline_stage_num)
        ]  # fmt: skip
        n = len(self.env_ids)
        self.obs: list[Observation | None] = [None] * n
        self.active = np.zeros(n, bool)
        self.is_reset = np.zeros(env_cfg.pipeline_stage_num, bool)
        self.episode_counter = np.zeros(n, np.int64)
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, np.int64)
        self.ep_seed = np.zeros(n, np.int64)

    def ping(self) -> int:
        return self.index

    def pid(self) -> int:
        return os.getpid()

    def _stage(self, stage: int) -> range:
        return self.layout.stage_envs(stage)

    def _seed_for(self, j: int) -> int:
        if self.episodic:  # GRPO: all members of a group share the initial state
            group = self.env_ids[j] // self.cfg.algorithm.group_size
            num_groups = self.cfg.env.num_envs // self.cfg.algorithm.group_size
            return episode_seed(self.cfg.env.seed, group, num_groups, int(self.episode_counter[j]),
                                self.cfg.env.num_initial_states)  # fmt: skip
        return episode_seed(self.cfg.env.seed, self.env_ids[j], self.cfg.env.num_envs, int(self.episode_counter[j]),
                            self.cfg.env.num_initial_states)  # fmt: skip

    def _reset_envs(self, stage: int, local: list[int]) -> None:
        """Reset the worker's envs ``local`` (all in ``stage``) to their next episode's seed."""
        if not local:
            return
        seeds = [self._seed_for(j) for j in local]
        first = self._stage(stage).start
        for j, seed, obs in zip(local, seeds, self.stages[stage].reset([j - first for j in local], seeds), strict=True):
            self.obs[j] = obs
            self.ep_seed[j], self.ep_return[j], self.ep_length[j] = seed, 0.0, 0
            self.active[j] = True

    def reset_stage(self, stage: int, episode: int) -> StageResult:
        """Reset the stage's envs to episode number ``episode`` (GRPO: the iteration)."""
        t0 = time.perf_counter()
        for j in self._stage(stage):
            self.episode_counter[j] = episode if self.episodic else episode * 100_000
        self._reset_envs(stage, list(self._stage(stage)))
        self.is_reset[stage] = True
        return self._result(stage, np.zeros(self.per_stage), np.zeros(self.per_stage, bool), [], t0)

    def _shape_reward(self, reward: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return self.cfg.reward.success * reward + self.cfg.reward.dense_coef * dense

    def step_stage(self, stage: int, actions: np.ndarray, offset: int) -> StageResult:
        """Execute the stage's action chunks ``actions[offset : offset + per_stage]`` (each env its
        whole chunk of ``K`` actions, stopping at its episode's end)."""
        if not self.is_reset[stage]:
            raise EnvStageNotReset(f"env worker {self.index}: stage {stage} stepped before reset")
        t0 = time.perf_counter()
        envs = self._stage(stage)
        chunk = np.asarray(actions)[offset : offset + self.per_stage]
        res = self.stages[stage].step_chunk(chunk, self.active[envs.start : envs.stop].copy(), self._shape_reward)
        finished: list[EpisodeRecord] = []
        for k, j in enumerate(envs):
            if res.obs[k] is not None:
                self.obs[j] = res.obs[k]
            self.ep_return[j] += res.rewards[k]
            self.ep_length[j] += res.steps[k]
            if res.ended[k]:
                finished.append(EpisodeRecord(env_id=self.env_ids[j], seed=int(self.ep_seed[j]),
                                              episode_return=float(self.ep_return[j]), length=int(self.ep_length[j]),
                                              success=bool(res.success[k])))  # fmt: skip
                self.episode_counter[j] += 1
                self.active[j] = False
        if not self.episodic:  # envs that finished start their next episode now
            self._reset_envs(stage, [j for k, j in enumerate(envs) if res.ended[k]])
        return self._result(stage, res.rewards, res.ended, finished, t0, int(res.steps.sum()))

    def _result(
        self, stage: int, rewards: np.ndarray, dones: np.ndarray, finished: list[EpisodeRecord], t0: float, steps: int = 0
    ) -> StageResult:
        idx = list(self._stage(stage))
        return StageResult(
            env_ids=np.array([self.env_ids[j] for j in idx], np.int64),
            obs=[self.obs[j] for j in idx],
            rewards=rewards.astype(np.float32),
            dones=dones,
            active=self.active[idx].copy(),  # these envs act on the next step
            episodes=finished,
            env_time=time.perf_counter() - t0,
            env_steps=steps,
        )

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


# --- rollout worker -----------------------------------------------------------------------------


class RolloutWorker:
    """Inference with the latest synced weights; sampling is seeded per call for reproducibility."""

    def __init__(self, cfg: RLConfig, contract: PolicyContract, cpus: float = 1.0, gpus: float = 0.0,
                 run_dir: str | None = None):  # fmt: skip
        if run_dir is not None:
            check_run_dir(run_dir, "rollout worker")
        _set_threads(cpus)
        self.cfg = cfg
        self.device = _device(gpus)
        self.policy = build_rl_policy(cfg.policy, contract, seed=cfg.runner.seed).to(self.device)
        self.version = -1

    def ping(self) -> str:
        return "rollout"

    def chunk_size(self) -> int:
        """Actions per policy call (K): the env workers execute the whole chunk."""
        return int(self.policy.contract.chunk_size)

    def set_weights(self, weights: WeightPayload | tuple[int, dict[str, torch.Tensor]]) -> int:
        """Load :meth:`ActorWorker.get_weights`' payload (its trainable tensors; or a whole
        ``(version, state_dict)``); returns the version now held."""
        if isinstance(weights, WeightPayload):
            self.version = apply_payload(self.policy, weights, self.version)
            return self.version
        version, state_dict = weights
        self.policy.load_state_dict(state_dict)
        self.version = int(version)
        return self.version

    @torch.no_grad()
    def act(
        self, call_seed: int, expected_version: int, *stage_results: StageResult
    ) -> tuple[np.ndarray, RolloutRecord]:
        """Actions for the envs of one stage (the results of every env worker, concatenated).

        Returns ``(actions (B, K, 7), record)``; the record holds what training needs.
        """
        if expected_version != self.version:
            raise StaleWeights(
                f"rollout worker holds weights version {self.version}, asked to act with {expected_version}"
            )
        t0 = time.perf_counter()
        observations = [o for result in stage_results for o in result.obs]
        batch = pad_text_inputs(self.policy, self.policy.prepare(observations))
        torch.manual_seed(call_seed)
        out = self.policy.act(batch, deterministic=False, temperature=self.cfg.policy.temperature)
        record = RolloutRecord(
            obs={k: v.cpu().numpy() for k, v in batch.items()},
            tokens=out.tokens.cpu().numpy(),
            logprobs=out.logprobs.float().cpu().numpy(),
            values=out.values.float().cpu().numpy(),
            version=self.version,
            inference_time=time.perf_counter() - t0,
        )
        return out.actions.float().cpu().numpy(), record
