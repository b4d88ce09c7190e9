"""The task registry and :func:`make_env`, the one entry point to every simulated task.

A task entry maps a name to a builder ``(spec, *, seed, **options) -> env`` taking a
:class:`~simbridge.training.envs.spec.SimEnvSpec`. Builders import their simulator lazily, so
listing tasks or splits imports neither ManiSkill nor LIBERO. Add a task with :func:`register_task`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simbridge.training.envs.errors import MANISKILL_FIX, VULKAN_FIX, EnvUnavailable
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.envs.splits import get_split


@dataclass(frozen=True)
class TaskEntry:
    name: str
    builder: Callable[..., object]  # (spec: SimEnvSpec, *, seed: int, **options) -> env
    description: str
    uses_splits: bool = True  # ManiSkill tasks take SimBridge splits; LIBERO suites have their own
    wrist_camera: bool = False  # rendered when SimEnvSpec.wrist_camera is null


TASKS: dict[str, TaskEntry] = {}


def register_task(
    name: str, builder: Callable[..., object], description: str, uses_splits: bool = True,
    wrist_camera: bool = False,
) -> None:
    if name in TASKS:
        raise ValueError(f"a task named {name!r} is already registered")
    TASKS[name] = TaskEntry(name, builder, description, uses_splits, wrist_camera)


def list_tasks() -> list[str]:
    return list(TASKS)


def make_env(spec: SimEnvSpec | str | None = None, *, seed: int = 0, **options: Any):
    """Create one contract environment (see :class:`~simbridge.training.envs.wrapper.ContractEnv`).

    ``spec`` is a :class:`SimEnvSpec` or a task name. Keyword arguments named like a field of
    :class:`SimEnvSpec` (``split=``, ``obs_mode=``, ``camera_size=`` ...) override it; the others go
    to the task's builder (ManiSkill: ``dense_reward``, ``sim_backend``; LIBERO: ``task_index``...).
    Raises ``KeyError`` listing the valid names for an unknown task or split, ``ValueError`` for a
    bad ``obs_mode`` and :class:`EnvUnavailable` when the simulator cannot run here.
    """
    fields = SimEnvSpec.pop_fields(options)
    if isinstance(spec, str):
        if "task" in fields:
            raise TypeError(f"make_env: the task is given twice ({spec!r} and task={fields['task']!r})")
        spec, fields = None, {"task": spec, **fields}
    spec = SimEnvSpec.of(spec, **fields)
    if spec.task not in TASKS:
        raise KeyError(f"unknown task {spec.task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[spec.task].builder(spec, seed=seed, **options)


def require_maniskill() -> None:
    """Raise :class:`EnvUnavailable` unless ManiSkill is installed and SAPIEN finds a Vulkan device."""
    if importlib.util.find_spec("mani_skill") is None or importlib.util.find_spec("sapien") is None:
        raise EnvUnavailable(f"ManiSkill3 is not installed: {MANISKILL_FIX}")
    try:
        import sapien

        sapien.render.get_device_summary()
    except Exception as exc:  # SAPIEN raises RuntimeError subclasses with driver text
        raise EnvUnavailable(f"no usable Vulkan device ({exc}). {VULKAN_FIX}") from exc


def _make_maniskill(
    spec: SimEnvSpec,
    *,
    seed: int,
    task_id: str = "PutOnTarget-v1",
    dense_reward: bool = False,
    sim_backend: str = "physx_cpu",
    render_human: bool = False,
    num_envs: int = 1,
    **kwargs,
):
    """``num_envs > 1``: one batched scene (ManiSkill allows it on ``physx_cuda`` only) behind a
    :class:`~simbridge.training.envs.batched.BatchedContractEnv`, as is ``batched=True``."""
    batched = bool(kwargs.pop("batched", False)) or num_envs > 1
    split_obj = get_split(spec.split)  # fail on a bad name before paying for the simulator
    require_maniskill()
    import gymnasium as gym

    import simbridge.training.envs.put_on_target  # noqa: F401  (registers the task)
    from simbridge.training.envs.wrapper import CONTROL_MODE, ContractEnv

    try:
        ms_env = gym.make(
            task_id,
            num_envs=num_envs,
            obs_mode=spec.obs_mode,
            control_mode=CONTROL_MODE,
            reward_mode="normalized_dense",
            render_mode="rgb_array" if render_human else None,
            sim_backend=sim_backend,
            max_episode_steps=spec.max_episode_steps + 1,  # truncation is the wrapper's job
            split=split_obj,
            cameras=spec.cameras,
            **kwargs,
        )
    except RuntimeError as exc:
        if "vulkan" in str(exc).lower() or "device" in str(exc).lower():
            raise EnvUnavailable(f"SAPIEN could not create a render device ({exc}). {VULKAN_FIX}") from exc
        raise
    if batched:
        from simbridge.training.envs.batched import BatchedContractEnv

        return BatchedContractEnv(
            ms_env, spec, task=task_id, split=split_obj, seed=seed, dense_reward=dense_reward
        )
    return ContractEnv(ms_env, spec, task=task_id, split=split_obj, seed=seed, dense_reward=dense_reward)


def _make_libero(suite: str) -> Callable[..., object]:
    def build(spec: SimEnvSpec, **kwargs):
        from simbridge.training.envs.libero import make_libero_env

        return make_libero_env(suite, spec, **kwargs)

    return build


register_task(
    "PutOnTarget-v1",
    _make_maniskill,
    "ManiSkill3 Panda: put the <object> on the <receptacle> (RL4VLA splits)",
)
for _suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
    register_task(
        _suite, _make_libero(_suite), f"LIBERO suite {_suite} (fixed init states)", uses_splits=False,
        wrist_camera=True,
    )
