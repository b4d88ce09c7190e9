""":class:`BatchedContractEnv`: one ManiSkill scene of ``num_envs`` sub-scenes behind the contract.

ManiSkill's GPU simulation (``physx_cuda``) runs ``num_envs`` copies of the task in one env; this
wrapper speaks the contract for all of them at once: ``step`` takes ``(num_envs, 7)`` contract
actions and returns one :class:`~simbridge.data.spec.Observation` and info per env, in env order.
Every env keeps its own target pose and anti-windup (:class:`ContractEnv`'s rows), its own
episode seed, instruction, step count and image-noise generator. Finished episodes reset on
their own (a partial reset of just those envs); their final observation / info are kept in
``info["final_observation"]`` / ``info["final_info"]``, as :class:`~.vector.ProcessVectorEnv` does.

ManiSkill refuses ``num_envs > 1`` on the CPU backend (``physx_cpu``): here the class runs with
``num_envs=1`` (then it computes exactly what :class:`ContractEnv` does) and the GPU figures are
not measured on this machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from simbridge.data.spec import Observation
from simbridge.training.envs.splits import Split, get_split
from simbridge.training.envs.wrapper import ContractEnv, _np


class BatchedContractEnv(ContractEnv):
    """``num_envs`` contract environments in one batched ManiSkill scene (see the module docstring).

    Env ``i`` starts from seed ``seed + 1000 * i`` (as in :class:`~.vector.ProcessVectorEnv`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.num_envs
        self._seeds = np.array([self._seed + 1000 * i for i in range(n)], np.int64)
        self._next_seeds = self._seeds.copy()
        self._steps_n = np.zeros(n, np.int64)
        self._instructions = [""] * n
        self._splits: list[Split] = [self.split] * n
        self._rngs = [np.random.default_rng(0) for _ in range(n)]
        self._gripper = np.ones(n, np.float32)  # last gripper command per env (held envs keep it)

    # --- per-env bookkeeping -------------------------------------------------------------
    def _env_rng(self, i: int) -> np.random.Generator:
        return self._rngs[i]

    def _env_instruction(self, i: int) -> str:
        return self._instructions[i]

    def _env_steps(self, i: int) -> int:
        return int(self._steps_n[i])

    def _env_seed(self, i: int) -> int:
        return int(self._seeds[i])

    def _env_split(self, i: int) -> Split:
        return self._splits[i]

    # --- batched API ---------------------------------------------------------------------
    def reset(  # type: ignore[override]
        self,
        *,
        seeds: Sequence[int] | None = None,
        env_idx: Sequence[int] | None = None,
        options: dict | None = None,
    ) -> tuple[list[Observation], list[dict]]:
        """Reset the envs ``env_idx`` (default: all), with ``seeds`` (one per reset env) or each
        env's next seed; the other envs go on untouched. Returns every env's observation / info."""
        idx = list(range(self.num_envs)) if env_idx is None else [int(i) for i in env_idx]
        options = dict(options or {})
        if "split" in options:
            self.split = get_split(options["split"])
        options["split"] = self.split
        for k, i in enumerate(idx):
            self._seeds[i] = self._next_seeds[i] if seeds is None else int(seeds[k])
            self._next_seeds[i] = self._seeds[i] + 1
            self._rngs[i] = np.random.default_rng([self.split.salt, int(self._seeds[i]), 7])
            self._steps_n[i] = 0
            self._gripper[i] = 1.0
            self._splits[i] = self.split
        if len(idx) < self.num_envs:
            options["env_idx"] = torch.as_tensor(idx, dtype=torch.int64, device=self.unwrapped_ms.device)
        raw_obs, ms_info = self.ms_env.reset(seed=self._seeds.tolist(), options=options)
        self._base = None
        tcp = self._tcp_poses_base()
        self._target_p[idx], self._target_q[idx] = tcp[idx, :3], tcp[idx, 3:]
        layouts = self.unwrapped_ms.layouts
        for i in idx:
            self._instructions[i] = layouts[i].instruction
        self.instruction = self._instructions[0]
        return self._observations(raw_obs), self._infos(raw_obs, ms_info, np.zeros(self.num_envs))

    def step(  # type: ignore[override]
        self,
        actions: np.ndarray,
        *,
        active: np.ndarray | None = None,
        observe: bool = True,
        auto_reset: bool = True,
    ) -> tuple[list[Observation | None], np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """``(num_envs, 7)`` contract actions -> per-env observations, rewards, terminated,
        truncated, infos.

        ``active`` (default: all): the envs that act; the others hold their target pose and last
        gripper command (one scene steps all its envs), and neither count a step nor end.
        ``observe=False``: the cameras are not rendered and the observations are ``None``, except
        for envs whose episode ends on this step. ``auto_reset``: finished envs are reset (their
        final observation / info in the info); otherwise the caller resets them.
        """
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {actions.shape}")
        act = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        a = np.stack([self.contract.action.clip(row) for row in actions])
        a[~act] = 0.0
        a[~act, 6] = self._gripper[~act]  # zero motion: the controller holds the target
        held_p, held_q = self._target_p[~act].copy(), self._target_q[~act].copy()
        self.unwrapped_ms.render_sensors = observe
        try:
            raw_obs, ms_reward, _, _, ms_info = self.ms_env.step(self._controller_actions(a))
        finally:
            self.unwrapped_ms.render_sensors = True
        self._target_p[~act], self._target_q[~act] = held_p, held_q
        self._gripper[act] = a[act, 6]
        self._steps_n[act] += 1
        dense = _np(ms_reward).reshape(self.num_envs).astype(np.float64)
        infos = self._infos(raw_obs, ms_info, dense)
        success = act & np.array([info["success"] for info in infos])
        rewards = np.where(act, success.astype(np.float32) + (dense.astype(np.float32) if self.dense_reward else 0.0), 0)
        truncated = act & ~success & (self._steps_n >= self.max_episode_steps)
        done = np.flatnonzero(success | truncated)
        obs: list[Observation | None]
        if observe:
            obs = list(self._observations(raw_obs))
        elif len(done):  # a final observation is always real
            rendered = self._observations(self.unwrapped_ms.get_obs(ms_info))
            obs = [rendered[i] if i in done else None for i in range(self.num_envs)]
        else:
            obs, self._last_tcp = [None] * self.num_envs, self._tcp_poses_base()
        if len(done) and auto_reset:
            final = {int(i): (obs[i], infos[i]) for i in done}
            obs, infos = self.reset(env_idx=done.tolist())  # type: ignore[assignment]
            for i, (final_obs, final_info) in final.items():
                infos[i] = dict(infos[i], final_observation=final_obs, final_info=final_info)
        return obs, rewards.astype(np.float32), success, truncated, infos

    @property
    def elapsed_steps(self) -> np.ndarray:  # type: ignore[override]
        return self._steps_n.copy()
