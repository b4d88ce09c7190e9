"""One pipeline stage of an env worker: ``n`` envs stepped together, one action chunk at a time.

An :class:`EnvStage` is a row of *blocks* in env order. A block is ``num_envs`` envs stepped by one
call: :class:`BatchedBlock` is one batched ManiSkill scene (:class:`~simbridge.training.envs.batched.
BatchedContractEnv`, hundreds of envs on ``physx_cuda``, one on the CPU backend, which refuses
more); :class:`SingleEnvBlock` is any single contract env (ManiSkill on the CPU, LIBERO, the toy
task). :func:`make_stage` picks them from the config (``env.scene_batching``).

Chunk semantics (RLinf's ``chunk_step``): all envs of the stage execute action ``i`` of their
chunk together; an env whose episode ends inside the chunk is held still for the rest of it and
is reset (or frozen, GRPO) by the worker after the chunk. On the CPU that is exactly the old
one-env-at-a-time loop; in a batched GPU scene the held envs receive a hold action (their target
pose, last gripper command) because one scene steps all its envs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from simbridge.data.spec import Observation
from simbridge.training.rl.config import EnvConfig

GPU_BACKENDS = ("physx_cuda", "gpu", "cuda")


@dataclass
class BlockStep:
    """One control step of a block's envs (rows: the block's envs; inactive rows are zeros/None)."""

    obs: list[Observation | None]  # None: not observed this step (inside a chunk), or inactive
    rewards: np.ndarray  # [m] float64, the env's own reward
    dense: np.ndarray  # [m] float64, info["dense_reward"]
    terminated: np.ndarray  # [m] bool
    truncated: np.ndarray  # [m] bool
    success: np.ndarray  # [m] bool


class EnvBlock(Protocol):
    num_envs: int

    def reset_envs(self, idx: Sequence[int], seeds: Sequence[int]) -> list[Observation]: ...

    def step_envs(self, actions: np.ndarray, active: np.ndarray, observe: bool) -> BlockStep: ...

    def close(self) -> None: ...


class SingleEnvBlock:
    """A single contract env (``reset(seed=)``, ``step(action, observe=)``) as a block of one."""

    num_envs = 1

    def __init__(self, env: Any):
        self.env = env

    def reset_envs(self, idx: Sequence[int], seeds: Sequence[int]) -> list[Observation]:
        return [self.env.reset(seed=int(seeds[0]))[0]] if len(idx) else []

    def step_envs(self, actions: np.ndarray, active: np.ndarray, observe: bool) -> BlockStep:
        out = BlockStep([None], np.zeros(1), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), np.zeros(1, bool))
        if active[0]:
            obs, reward, terminated, truncated, info = self.env.step(actions[0], observe=observe)
            out.obs[0] = obs
            out.rewards[0], out.dense[0] = float(reward), float(info.get("dense_reward", 0.0))
            out.terminated[0], out.truncated[0] = bool(terminated), bool(truncated)
            out.success[0] = bool(info.get("success", False))
        return out

    def close(self) -> None:
        self.env.close()


class BatchedBlock:
    """A batched ManiSkill scene: every env steps in one call, held ones with a hold action."""

    def __init__(self, env: Any):
        self.env = env
        self.num_envs = int(env.num_envs)

    def reset_envs(self, idx: Sequence[int], seeds: Sequence[int]) -> list[Observation]:
        obs, _ = self.env.reset(seeds=list(seeds), env_idx=list(idx))
        return [obs[i] for i in idx]

    def step_envs(self, actions: np.ndarray, active: np.ndarray, observe: bool) -> BlockStep:
        obs, rewards, terminated, truncated, infos = self.env.step(
            actions, active=active, observe=observe, auto_reset=False
        )
        dense = np.array([info["dense_reward"] if info else 0.0 for info in infos], np.float64)
        success = np.array([bool(info and info["success"]) for info in infos])
        return BlockStep(list(obs), np.asarray(rewards, np.float64), dense, np.asarray(terminated, bool),
                         np.asarray(truncated, bool), success)  # fmt: skip

    def close(self) -> None:
        self.env.close()


@dataclass
class ChunkResult:
    """What a stage's action chunk did, per env of the stage."""

    rewards: np.ndarray  # [n] shaped reward summed over the executed actions
    ended: np.ndarray  # [n] bool: the episode ended inside the chunk
    success: np.ndarray  # [n] bool: ... with success
    steps: np.ndarray  # [n] int: actions executed (stops at the episode's end)
    obs: list[Observation | None]  # the last observation of each env that stepped


class EnvStage:
    """``n`` envs (blocks in env order) of one env worker's stage."""

    def __init__(self, blocks: list[EnvBlock]):
        self.blocks = blocks
        self.num_envs = sum(b.num_envs for b in blocks)
        self._starts = np.cumsum([0] + [b.num_envs for b in blocks])

    def _split(self, rows: Sequence[int]) -> list[tuple[int, list[int], list[int]]]:
        """Stage rows -> (block, rows within it, positions in ``rows``) for the blocks they touch."""
        out = []
        for b, (lo, hi) in enumerate(zip(self._starts[:-1], self._starts[1:], strict=True)):
            pos = [p for p, r in enumerate(rows) if lo <= r < hi]
            if pos:
                out.append((b, [int(rows[p] - lo) for p in pos], pos))
        return out

    def reset(self, rows: Sequence[int], seeds: Sequence[int]) -> list[Observation]:
        """Reset the stage's envs ``rows`` with ``seeds``; their observations, in that order."""
        obs: list[Observation | None] = [None] * len(rows)
        for b, local, pos in self._split(rows):
            for p, o in zip(pos, self.blocks[b].reset_envs(local, [seeds[p] for p in pos]), strict=True):
                obs[p] = o
        return obs  # type: ignore[return-value]

    def step_chunk(
        self, chunk: np.ndarray, active: np.ndarray, shape_reward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> ChunkResult:
        """Execute ``chunk`` ``(n, K, 7)`` on the ``active`` envs; ``shape_reward(reward, dense)``
        turns the envs' rewards into the training reward. Only the chunk's last observation is
        rendered (the next policy call reads it), and the final one of an episode that ends."""
        n, k = chunk.shape[:2]
        res = ChunkResult(np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64), [None] * n)
        for i in range(k):
            stepping = active & ~res.ended
            if not stepping.any():
                break
            for b, block in enumerate(self.blocks):
                lo, hi = self._starts[b], self._starts[b + 1]
                if not stepping[lo:hi].any():
                    continue
                out = block.step_envs(chunk[lo:hi, i], stepping[lo:hi], observe=i == k - 1)
                res.steps[lo:hi] += stepping[lo:hi]
                for r in np.flatnonzero(stepping[lo:hi]):
                    if out.obs[r] is not None:
                        res.obs[lo + r] = out.obs[r]
                res.rewards[lo:hi] += np.where(stepping[lo:hi], shape_reward(out.rewards, out.dense), 0.0)
                ended = stepping[lo:hi] & (out.terminated | out.truncated)
                res.ended[lo:hi] |= ended
                res.success[lo:hi] |= ended & out.success
        return res

    def close(self) -> None:
        for block in self.blocks:
            block.close()


def batched_scenes(cfg: EnvConfig) -> bool:
    """Whether this config's envs live in batched ManiSkill scenes (``env.scene_batching``)."""
    if cfg.backend != "sim" or cfg.spec.task != "PutOnTarget-v1" or cfg.scene_batching == "single":
        return False
    return cfg.scene_batching == "batched" or str(cfg.kwargs.get("sim_backend", "")) in GPU_BACKENDS


def make_stage(cfg: EnvConfig, env_ids: Sequence[int], make_single: Callable[[int], Any]) -> EnvStage:
    """The envs ``env_ids`` (global ids, one stage of one worker) as an :class:`EnvStage`.

    Batched (:func:`batched_scenes`): one ManiSkill scene for the whole stage on a GPU backend; on
    the CPU backend one single-env batched scene per env. Otherwise ``make_single(env_id)`` per env.
    """
    if not batched_scenes(cfg):
        return EnvStage([SingleEnvBlock(make_single(i)) for i in env_ids])
    from simbridge.training.envs import make_batched_env

    kwargs = dict(cfg.kwargs)
    backend = str(kwargs.pop("sim_backend", "physx_cpu"))
    if backend in GPU_BACKENDS:  # one scene; env i of it starts from seed + 1000 i (resets pass seeds)
        return EnvStage([BatchedBlock(make_batched_env(len(env_ids), cfg.spec, seed=cfg.seed + env_ids[0],
                                                       sim_backend=backend, **kwargs))])  # fmt: skip
    return EnvStage([BatchedBlock(make_batched_env(1, cfg.spec, seed=cfg.seed + i, sim_backend=backend, **kwargs))
                     for i in env_ids])  # fmt: skip
