"""Simulation environments behind the SimBridge contract (ManiSkill3 tasks, LIBERO suites).

    from simbridge.training.envs import SimEnvSpec, make_env, make_expert
    env = make_env(SimEnvSpec("PutOnTarget-v1", split="train", obs_mode="rgb"), seed=0)
    obs, info = env.reset(seed=123)          # obs: simbridge.data.spec.Observation
    expert = make_expert(env)                # scripted, implements spec.Policy
    obs, reward, terminated, truncated, info = env.step(expert.predict(obs)[0])

* What an environment is (task, split, observation mode, cameras, episode length, chunk
  execution) is one :class:`SimEnvSpec` (:mod:`.spec`), also the ``env`` section of the configs.
* Tasks are a registry (:data:`TASKS`): ``PutOnTarget-v1`` (ManiSkill3, Panda) and the LIBERO
  suites ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``, ``libero_90``.
* Splits (``train`` and RL4VLA's vision / semantics / execution OOD splits) are named, seeded
  configurations: :func:`list_splits`, :func:`get_split`, :mod:`.splits`.
* Simulators are imported only when an environment is made; if one cannot run here,
  :class:`EnvUnavailable` says what is missing and how to fix it.
* CPU parallelism: one environment per process (:func:`make_vector_env`); ManiSkill's batched
  GPU simulation: :func:`make_gpu_batched_env` (not run here: no GPU; the same batched wrapper
  runs with one env on the CPU, :func:`make_batched_env`).
"""

from __future__ import annotations

from simbridge.training.envs.errors import EnvUnavailable
from simbridge.training.envs.registry import TASKS, list_tasks, make_env
from simbridge.training.envs.spec import SIM_CAMERAS, SimEnvSpec
from simbridge.training.envs.splits import SPLITS, SUITES, Split, get_split, list_splits, resolve_suite

__all__ = [
    "SIM_CAMERAS",
    "SPLITS",
    "SUITES",
    "TASKS",
    "EnvUnavailable",
    "SimEnvSpec",
    "Split",
    "get_split",
    "list_splits",
    "list_tasks",
    "make_batched_env",
    "make_env",
    "make_expert",
    "make_gpu_batched_env",
    "make_vector_env",
    "resolve_suite",
]


def make_expert(env, **kwargs):
    """The scripted expert for ``env`` (implements :class:`simbridge.data.spec.Policy`)."""
    from simbridge.training.envs.expert import make_expert as _make

    return _make(env, **kwargs)


def make_vector_env(*args, **kwargs):
    """One environment per process (gymnasium AsyncVectorEnv); see :mod:`.vector`."""
    from simbridge.training.envs.vector import make_vector_env as _make

    return _make(*args, **kwargs)


def make_batched_env(*args, **kwargs):
    """One batched ManiSkill scene behind the contract (``num_envs=1`` on the CPU); see :mod:`.vector`."""
    from simbridge.training.envs.vector import make_batched_env as _make

    return _make(*args, **kwargs)


def make_gpu_batched_env(*args, **kwargs):
    """ManiSkill's GPU-batched simulation (``physx_cuda``); see :mod:`.vector`."""
    from simbridge.training.envs.vector import make_gpu_batched_env as _make

    return _make(*args, **kwargs)
