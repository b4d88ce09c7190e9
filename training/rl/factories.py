"""Backends for the RL workers: which env and which policy a config names.

Two small registries, so a new simulator or policy family plugs in without touching workers:

* ``ENV_BACKENDS[name](env_cfg, seed) -> env`` ("sim": ``simbridge.training.envs.make_env``;
  "toy": :class:`~simbridge.training.rl.toy.ToyReachEnv`).
* ``POLICY_BACKENDS[name]``: ``build(policy_cfg, contract, seed)`` and ``load(path)``
  ("vla": ``simbridge.training.models`` + ``simbridge.training.checkpoint``; "toy": ToyPolicy).

Heavy imports (ManiSkill, transformers) happen inside the functions, in the worker processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simbridge.data.config import ConfigError
from simbridge.data.spec import ContractError, ObservationSpec, PolicyContract
from simbridge.training.rl.config import EnvConfig, PolicyConfig

log = logging.getLogger(__name__)


def _make_sim_env(cfg: EnvConfig, seed: int) -> Any:
    from simbridge.training.envs import make_env

    return make_env(cfg.spec, seed=seed, **cfg.kwargs)


def _make_toy_env(cfg: EnvConfig, seed: int) -> Any:
    from simbridge.training.rl.toy import ToyReachEnv

    return ToyReachEnv(split=cfg.spec.split, seed=seed, max_episode_steps=cfg.spec.max_episode_steps, **cfg.kwargs)


ENV_BACKENDS: dict[str, Callable[[EnvConfig, int], Any]] = {"sim": _make_sim_env, "toy": _make_toy_env}


def make_rl_env(cfg: EnvConfig, seed: int) -> Any:
    return ENV_BACKENDS[cfg.backend](cfg, seed)


def env_for_warm_start(env_cfg: EnvConfig, policy_cfg: PolicyConfig) -> EnvConfig:
    """The env config rendering what ``policy.init_checkpoint`` was trained on (cameras, size).

    Evaluation does the same (:meth:`SimEnvSpec.with_contract`); without it a scene + wrist SFT
    checkpoint would fail in the rollout worker, after Ray and the simulators started. Other
    backends are returned unchanged.
    """
    if policy_cfg.backend != "vla" or not policy_cfg.init_checkpoint or env_cfg.backend != "sim":
        return env_cfg
    from simbridge.training.checkpoint import CheckpointError, resolve_checkpoint

    try:
        config_file = resolve_checkpoint(policy_cfg.init_checkpoint) / "config.json"
    except CheckpointError as exc:
        raise ConfigError(f"policy.init_checkpoint: {exc}") from None
    try:
        contract = json.loads(config_file.read_text()).get("contract") or {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"policy.init_checkpoint: cannot read {config_file} ({exc}); pass a complete checkpoint") from None
    if not (contract.get("observation") or {}).get("cameras"):
        return env_cfg
    try:
        observation = ObservationSpec.from_dict(contract["observation"])
        spec = env_cfg.spec.with_contract(PolicyContract(observation=observation))
    except (ContractError, KeyError, TypeError) as exc:
        raise ConfigError(f"policy.init_checkpoint: {exc}") from None
    if spec.cameras == env_cfg.spec.cameras:
        return env_cfg
    log.info("env: rendering the checkpoint's cameras %s at %dx%d (config had wrist_camera=%s, camera_size=%s)",
             [c.name for c in spec.cameras], *spec.camera_size, env_cfg.spec.wrist_camera,
             list(env_cfg.spec.camera_size))  # fmt: skip
    return replace(env_cfg, spec=spec)


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
    """A fresh policy (``kwargs``: config overrides) or ``init_checkpoint``; LoRA on either when
    ``kwargs.lora_rank`` > 0 (the checkpoint's own adapters are kept when their rank matches)."""
    from simbridge.training.models.adapters import apply_lora, split_lora_kwargs

    lora, overrides = split_lora_kwargs(cfg.kwargs)
    if cfg.init_checkpoint:
        return apply_lora(_load_vla(cfg.init_checkpoint), lora)
    from simbridge.training.models import build_policy

    if not lora.rank:
        return build_policy(family=cfg.family, preset=cfg.preset, contract=contract, seed=seed, **overrides)
    # A fresh model's projector and heads are random: everything outside the LM and the towers trains.
    return build_policy(family=cfg.family, preset=cfg.preset, contract=contract, seed=seed, lora_rank=lora.rank,
                        lora_alpha=lora.alpha, lora_dropout=lora.dropout, lora_targets=list(lora.targets),
                        **overrides)  # fmt: skip


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
