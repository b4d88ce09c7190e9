"""The task registry and :func:`make_env`, the one entry point to every simulated task.

A task entry maps a name to a builder ``(split, seed, **options) -> env``. Builders import
their simulator lazily, so listing tasks or splits imports neither ManiSkill nor LIBERO.
Add a task with :func:`register_task`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from simbridge.training.envs.errors import MANISKILL_FIX, VULKAN_FIX, EnvUnavailable
from simbridge.training.envs.splits import get_split


@dataclass(frozen=True)
class TaskEntry:
    name: str
    builder: Callable[..., object]
    description: str
    uses_splits: bool = True  # ManiSkill tasks take SimBridge splits; LIBERO suites have their own


TASKS: dict[str, TaskEntry] = {}


def register_task(
    name: str, builder: Callable[..., object], description: str, uses_splits: bool = True
) -> None:
    if name in TASKS:
        raise ValueError(f"a task named {name!r} is already registered")
    TASKS[name] = TaskEntry(name, builder, description, uses_splits)


def list_tasks() -> list[str]:
    return list(TASKS)


def make_env(
    task: str = "PutOnTarget-v1",
    split: str = "train",
    seed: int = 0,
    obs_mode: str = "rgb",
    camera_size: tuple[int, int] = (128, 128),
    wrist_camera: bool | None = None,
    max_episode_steps: int = 80,
    **kwargs,
):
    """Create one contract environment (see :class:`~simbridge.training.envs.wrapper.ContractEnv`).

    ``wrist_camera=None`` takes the task's default (off for PutOnTarget, on for LIBERO).
    Raises ``KeyError`` listing the valid names for an unknown task or split, ``ValueError`` for a
    bad ``obs_mode`` and :class:`EnvUnavailable` when the simulator cannot run here.
    """
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if obs_mode not in ("rgb", "state"):
        raise ValueError(
            f"obs_mode: 'rgb' (camera images) or 'state' (no rendering, info['state']), got {obs_mode!r}"
        )
    entry = TASKS[task]
    if wrist_camera is None:  # the task's default: LIBERO has a wrist camera, PutOnTarget's is optional
        wrist_camera = not entry.uses_splits
    return entry.builder(
        split=split,
        seed=seed,
        obs_mode=obs_mode,
        camera_size=tuple(camera_size),
        wrist_camera=wrist_camera,
        max_episode_steps=max_episode_steps,
        **kwargs,
    )


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
    *,
    split: str,
    seed: int,
    obs_mode: str,
    camera_size: tuple[int, int],
    wrist_camera: bool,
    max_episode_steps: int,
    task_id: str = "PutOnTarget-v1",
    dense_reward: bool = False,
    sim_backend: str = "physx_cpu",
    render_human: bool = False,
    **kwargs,
):
    split_obj = get_split(split)  # fail on a bad name before paying for the simulator
    require_maniskill()
    import gymnasium as gym

    import simbridge.training.envs.put_on_target  # noqa: F401  (registers the task)
    from simbridge.training.envs.wrapper import CONTROL_MODE, ContractEnv

    try:
        ms_env = gym.make(
            task_id,
            num_envs=1,
            obs_mode=obs_mode,
            control_mode=CONTROL_MODE,
            reward_mode="normalized_dense",
            render_mode="rgb_array" if render_human else None,
            sim_backend=sim_backend,
            max_episode_steps=max_episode_steps + 1,  # truncation is the wrapper's job
            split=split_obj,
            camera_size=camera_size,
            wrist_camera=wrist_camera,
            **kwargs,
        )
    except RuntimeError as exc:
        if "vulkan" in str(exc).lower() or "device" in str(exc).lower():
            raise EnvUnavailable(f"SAPIEN could not create a render device ({exc}). {VULKAN_FIX}") from exc
        raise
    return ContractEnv(
        ms_env,
        task=task_id,
        split=split_obj,
        seed=seed,
        obs_mode=obs_mode,
        camera_size=camera_size,
        wrist_camera=wrist_camera,
        max_episode_steps=max_episode_steps,
        dense_reward=dense_reward,
    )


def _make_libero(suite: str) -> Callable[..., object]:
    def build(**kwargs):
        from simbridge.training.envs.libero import make_libero_env

        return make_libero_env(suite=suite, **kwargs)

    return build


register_task(
    "PutOnTarget-v1",
    _make_maniskill,
    "ManiSkill3 Panda: put the <object> on the <receptacle> (RL4VLA splits)",
)
for _suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
    register_task(
        _suite, _make_libero(_suite), f"LIBERO suite {_suite} (fixed init states)", uses_splits=False
    )
