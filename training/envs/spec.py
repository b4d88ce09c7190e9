""":class:`SimEnvSpec`: what one simulated environment is, declared once.

Task, split, observation mode, cameras and their size, episode length and how a policy's action
chunks are executed. It is the argument of :func:`~simbridge.training.envs.make_env` and a nested
section of every config that makes environments::

    simbridge eval       env:        (launch/configs/eval_*.yaml)
    simbridge demo       env:        (the demonstrations stage, launch/configs/demo.yaml)
    simbridge train sft  eval.env:   (the evaluation after training)
    simbridge train ppo  env.spec:   (launch/configs/ppo_*.yaml, grpo_*.yaml)

Which cameras a policy needs is decided here and nowhere else (:meth:`SimEnvSpec.with_contract`):
every simulated task renders a ``scene`` camera and, optionally, a ``wrist`` one, both at
``camera_size``.

It lives in ``training/envs`` and not in the contract layer (``simbridge.data.spec``) because it
describes the simulation: the robot, the bundle and the episode store never need it. Importing it
costs neither a simulator nor torch (a config dataclass over the contract and
:class:`~simbridge.deploy.chunking.ChunkingConfig`), so data-facing code (collect, replay) can
build one too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Literal

from simbridge.data.config import config
from simbridge.data.spec import CameraSpec, ContractError, PolicyContract
from simbridge.deploy.chunking import ChunkingConfig

#: The cameras simulated tasks can render: ``scene`` always, ``wrist`` when asked for.
SIM_CAMERAS = ("scene", "wrist")


@config(frozen=True)
class SimEnvSpec:
    """One simulated environment: see the module docstring. Build variants with :meth:`of`."""

    #: A registered task (``simbridge eval --list``); the RL toy backend takes "ToyReach".
    task: str = "PutOnTarget-v1"
    #: The split environments start in (evaluation switches through the splits of its suite).
    split: str = "train"
    #: "rgb" renders the cameras; "state" renders nothing (black images, ``info["state"]``).
    obs_mode: Literal["rgb", "state"] = "rgb"
    #: (height, width) in pixels of every camera.
    camera_size: tuple[int, int] = (128, 128)
    #: Render the wrist camera too; null: the task's default (off for PutOnTarget, on for LIBERO).
    wrist_camera: bool | None = None
    #: Control steps before an episode is truncated.
    max_episode_steps: int = 80
    #: How a policy's action chunks are executed, as on the robot (simbridge.deploy.chunking).
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)

    def __post_init__(self) -> None:
        # Also checked here, not only by the config loader: code builds specs directly.
        if self.obs_mode not in ("rgb", "state"):
            raise ValueError(
                f"obs_mode: 'rgb' (camera images) or 'state' (no rendering, info['state']), got {self.obs_mode!r}"
            )
        size = self.camera_size
        if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
            raise ValueError(f"camera_size: (height, width) in pixels, got {size!r}")
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"camera_size: height and width must be positive, got {list(size)}")
        object.__setattr__(self, "camera_size", size)  # a list from code becomes the tuple configs give
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps: at least 1, got {self.max_episode_steps}")

    # --- variants -----------------------------------------------------------------------------
    @classmethod
    def of(cls, spec: SimEnvSpec | None = None, **fields: Any) -> SimEnvSpec:
        """``spec`` (default: all defaults) with ``fields`` replaced; an unknown name raises TypeError."""
        base = spec if spec is not None else cls()
        return dataclasses.replace(base, **fields) if fields else base

    @classmethod
    def pop_fields(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Remove and return the entries of ``options`` named like a field (the rest are builder options)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: options.pop(k) for k in list(options) if k in names}

    @classmethod
    def for_contract(cls, contract: PolicyContract, **fields: Any) -> SimEnvSpec:
        """A spec (``fields`` over the defaults) rendering the cameras ``contract`` expects."""
        return cls(**fields).with_contract(contract)

    def with_contract(self, contract: PolicyContract) -> SimEnvSpec:
        """This spec rendering the cameras ``contract`` expects: its names, at its size.

        Raises :class:`~simbridge.data.spec.ContractError` when the simulation cannot render them
        (a policy trained on a robot's cameras, say ``agentview``).
        """
        cams = contract.observation.cameras
        names = [c.name for c in cams]
        if "scene" not in names or not set(names) <= set(SIM_CAMERAS):
            raise ContractError(
                f"the policy was trained with cameras {names}; the simulation renders {list(SIM_CAMERAS)} "
                "(scene always, wrist with wrist_camera=true): use a policy trained in simulation"
            )
        # One size for all: the simulated cameras render at one camera_size (the first camera's).
        return dataclasses.replace(self, wrist_camera="wrist" in names, camera_size=(cams[0].height, cams[0].width))

    # --- what it renders --------------------------------------------------------------------------
    @property
    def renders_wrist(self) -> bool:
        """``wrist_camera``, with null resolved to the task's default."""
        if self.wrist_camera is not None:
            return bool(self.wrist_camera)
        from simbridge.training.envs.registry import TASKS  # the registry imports this module

        entry = TASKS.get(self.task)
        return bool(entry is not None and entry.wrist_camera)

    @property
    def cameras(self) -> tuple[CameraSpec, ...]:
        """The contract cameras environments of this spec render (``scene``, then ``wrist`` when on)."""
        h, w = self.camera_size
        return tuple(CameraSpec(name, h, w) for name in SIM_CAMERAS[: 1 + self.renders_wrist])
