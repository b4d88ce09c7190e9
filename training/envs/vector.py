"""Many environments at once.

* CPU (this machine): :class:`ProcessVectorEnv` — one environment per process (SAPIEN's CPU
  simulation runs one scene per process), stepped in lock-step over pipes. Each worker owns a
  ``make_env`` environment, so observations are contract :class:`~simbridge.data.spec.Observation`
  objects; finished episodes reset automatically (the final observation/info are kept in
  ``info["final_observation"]`` / ``info["final_info"]``). The RL layer's Ray env workers are
  an alternative built on the same ``make_env``.
* GPU: :func:`make_gpu_batched_env` — ManiSkill's batched simulation (``sim_backend="physx_cuda"``,
  ``num_envs > 1``) of the same task behind :class:`~simbridge.training.envs.batched.BatchedContractEnv`
  (per-env target poses, partial resets). ManiSkill refuses ``num_envs > 1`` on ``physx_cpu``,
  so on this machine the batched path runs with ``num_envs=1`` (:func:`make_batched_env`);
  **the GPU path itself is not run here (no GPU).**
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from simbridge.training.envs.errors import EnvUnavailable
from simbridge.training.envs.spec import SimEnvSpec


def _worker(conn, env_kwargs: dict) -> None:
    from simbridge.training.envs import make_env

    try:
        env = make_env(**env_kwargs)
        conn.send(("ok", env.contract))
    except BaseException as exc:  # report to the parent: it raises with the worker's message
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        return
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(env.reset(**arg))
            elif cmd == "step":
                obs, reward, terminated, truncated, info = env.step(arg)
                if terminated or truncated:
                    final_obs, final_info = obs, info
                    obs, info = env.reset()
                    info = dict(info, final_observation=final_obs, final_info=final_info)
                conn.send((obs, reward, terminated, truncated, info))
            elif cmd == "call":
                name, args, kwargs = arg
                conn.send(getattr(env, name)(*args, **kwargs))
            elif cmd == "close":
                break
    finally:
        env.close()
        conn.close()


class ProcessVectorEnv:
    """``num_envs`` contract environments in worker processes, stepped together.

    Worker ``i`` is created with ``seed = seed + 1000 * i`` so their episode seeds never collide.
    """

    def __init__(self, num_envs: int, *, seed: int = 0, start_method: str = "spawn", **make_env_kwargs: Any):
        if num_envs < 1:
            raise ValueError(f"num_envs: at least 1, got {num_envs}")
        ctx = mp.get_context(start_method)  # spawn: SAPIEN / Vulkan state must not be forked
        self.num_envs = num_envs
        self._conns, self._procs = [], []
        for i in range(num_envs):
            parent, child = ctx.Pipe()
            kwargs = dict(make_env_kwargs, seed=seed + 1000 * i)
            proc = ctx.Process(target=_worker, args=(child, kwargs), daemon=True, name=f"simbridge-env-{i}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        replies = [c.recv() for c in self._conns]
        errors = [r[1] for r in replies if r[0] == "error"]
        if errors:
            self.close()
            first = errors[0].splitlines()[0]
            if first.startswith("EnvUnavailable"):
                raise EnvUnavailable(first.split(": ", 1)[1])
            raise RuntimeError(f"an environment worker failed to start: {errors[0]}")
        self.contract = replies[0][1]

    def reset(
        self, seeds: Sequence[int] | None = None, options: dict | None = None, env_idx: Sequence[int] | None = None
    ) -> tuple[list, list[dict]]:
        """Reset the workers ``env_idx`` (default: all; ``seeds``: one per reset worker).

        A partial reset returns only the reset workers' observations / infos, in ``env_idx`` order.
        """
        idx = list(range(self.num_envs)) if env_idx is None else [int(i) for i in env_idx]
        for k, i in enumerate(idx):
            self._conns[i].send(("reset", {"seed": None if seeds is None else int(seeds[k]), "options": options}))
        results = [self._conns[i].recv() for i in idx]
        return [r[0] for r in results], [r[1] for r in results]

    def step(self, actions: np.ndarray) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {actions.shape}")
        for c, a in zip(self._conns, actions, strict=True):
            c.send(("step", a))
        results = [c.recv() for c in self._conns]
        obs, rew, term, trunc, infos = zip(*results, strict=True)
        return list(obs), np.array(rew, np.float32), np.array(term), np.array(trunc), list(infos)

    def call(self, name: str, *args, **kwargs) -> list:
        """Call a method of every worker's environment (e.g. ``call("set_split", "vision_noise")``)."""
        for c in self._conns:
            c.send(("call", (name, args, kwargs)))
        return [c.recv() for c in self._conns]

    def close(self) -> None:
        for c in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(("close", None))
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> ProcessVectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_vector_env(num_envs: int, **make_env_kwargs: Any) -> ProcessVectorEnv:
    """One ``make_env`` environment per process (see :class:`ProcessVectorEnv`); ``spec=`` or
    :class:`~simbridge.training.envs.spec.SimEnvSpec` field names as keywords, as for ``make_env``."""
    return ProcessVectorEnv(num_envs, **make_env_kwargs)


def make_batched_env(
    num_envs: int, spec: SimEnvSpec | None = None, *, seed: int = 0, sim_backend: str = "physx_cuda", **kwargs: Any
):
    """``num_envs`` envs of ``PutOnTarget-v1`` in one batched ManiSkill scene, behind the contract
    (:class:`~simbridge.training.envs.batched.BatchedContractEnv`).

    ManiSkill batches on ``physx_cuda`` only; ``sim_backend="physx_cpu"`` allows ``num_envs=1``
    (the batched code path on this CPU) and raises :class:`EnvUnavailable` for more.
    """
    from simbridge.training.envs.registry import _make_maniskill

    spec = SimEnvSpec.of(spec, **SimEnvSpec.pop_fields(kwargs))
    if num_envs < 1:
        raise ValueError(f"num_envs: at least 1, got {num_envs}")
    if sim_backend in ("physx_cpu", "cpu") and num_envs > 1:
        raise EnvUnavailable(
            f"ManiSkill cannot batch {num_envs} envs on the CPU backend (one scene per process): use "
            "make_vector_env(num_envs, ...) here, or sim_backend='physx_cuda' on a GPU."
        )
    return _make_maniskill(spec, seed=seed, sim_backend=sim_backend, num_envs=num_envs, batched=True, **kwargs)


def make_gpu_batched_env(num_envs: int, spec: SimEnvSpec | None = None, **kwargs: Any):
    """ManiSkill's GPU-batched ``PutOnTarget-v1`` (``physx_cuda``) behind the contract: see
    :func:`make_batched_env`. Not run on this machine (no GPU).

    Keywords named like a :class:`SimEnvSpec` field override ``spec``; ``seed`` and the others go
    to :func:`make_batched_env`. Raises :class:`EnvUnavailable` when CUDA is not available.
    """
    import torch

    if not torch.cuda.is_available():
        raise EnvUnavailable(
            "GPU-batched simulation needs CUDA (sim_backend='physx_cuda'); none found. On the CPU use "
            "make_vector_env(num_envs, ...) (one environment per process)."
        )
    return make_batched_env(num_envs, spec, sim_backend="physx_cuda", **kwargs)
