"""Backends for the RL workers: which env and which policy a config names.

Two small registries, so a new simulator or policy family plugs in without touching workers:

* ``ENV_BACKENDS[name](env_cfg, seed) -> env`` ("sim": ``simbridge.training.envs.make_env``;
  "toy": :class:`~simbridge.training.rl.toy.ToyReachEnv`).
* ``POLICY_BACKENDS[name]``: ``build(policy_cfg, contract, seed)`` and ``load(path)``
  ("vla": ``simbridge.training.models`` + ``simbridge.training.checkpoint``; "toy": ToyPolicy).

Heavy imports (ManiSkill, transformers) happen inside the functions, in the worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simbridge.data.spec import PolicyContract
from simbridge.training.rl.config import EnvConfig, PolicyConfig


def _make_sim_env(cfg: EnvConfig, seed: int) -> Any:
    from simbridge.training.envs import make_env

    return make_env(
        task=cfg.task,
        split=cfg.split,
        seed=seed,
        obs_mode=cfg.obs_mode,
        camera_size=tuple(cfg.camera_size),
        wrist_camera=cfg.wrist_camera,
        max_episode_steps=cfg.max_episode_steps,
        **cfg.kwargs,
    )


def _make_toy_env(cfg: EnvConfig, seed: int) -> Any:
    from simbridge.training.rl.toy import ToyReachEnv

    return ToyReachEnv(split=cfg.split, seed=seed, max_episode_steps=cfg.max_episode_steps, **cfg.kwargs)


ENV_BACKENDS: dict[str, Callable[[EnvConfig, int], Any]] = {"sim": _make_sim_env, "toy": _make_toy_env}


def make_rl_env(cfg: EnvConfig, seed: int) -> Any:
    return ENV_BACKENDS[cfg.backend](cfg, seed)


def env_contract(cfg: EnvConfig) -> PolicyContract:
    """The contract of the configured task (creates and closes one env: call once, in the driver)."""
    if cfg.backend == "toy":
        from simbridge.training.rl.toy import TOY_CONTRACT

        return TOY_CONTRACT
    env = make_rl_env(cfg, seed=cfg.seed)
    try:
        return env.contract
    finally:
        env.close()


@dataclass(frozen=True)
class PolicyBackend:
    build: Callable[[PolicyConfig, PolicyContract, int], Any]
    load: Callable[[str | Path], Any]


def _build_vla(cfg: PolicyConfig, contract: PolicyContract, seed: int) -> Any:
    if cfg.init_checkpoint:
        return _load_vla(cfg.init_checkpoint)
    from simbridge.training.models import build_policy

    return build_policy(family=cfg.family, preset=cfg.preset, contract=contract, seed=seed, **cfg.kwargs)


def _load_vla(path: str | Path) -> Any:
    from simbridge.training.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _build_toy(cfg: PolicyConfig, contract: PolicyContract, seed: int) -> Any:
    from simbridge.training.rl.toy import ToyPolicy

    if cfg.init_checkpoint:
        return ToyPolicy.from_pretrained(cfg.init_checkpoint)
    return ToyPolicy(contract, seed=seed, **cfg.kwargs)


def _load_toy(path: str | Path) -> Any:
    from simbridge.training.rl.toy import ToyPolicy

    return ToyPolicy.from_pretrained(path)


POLICY_BACKENDS: dict[str, PolicyBackend] = {
    "vla": PolicyBackend(_build_vla, _load_vla),
    "toy": PolicyBackend(_build_toy, _load_toy),
}


def build_rl_policy(cfg: PolicyConfig, contract: PolicyContract, seed: int) -> Any:
    return POLICY_BACKENDS[cfg.backend].build(cfg, contract, seed).eval()


def load_rl_policy(cfg: PolicyConfig, path: str | Path) -> Any:
    return POLICY_BACKENDS[cfg.backend].load(path).eval()
