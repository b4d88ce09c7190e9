"""Registry of RL algorithms: ``ALGORITHMS[name](algorithm_cfg, actor_cfg)``.

Add a variant by writing a class with ``compute_advantages``, ``loss`` and ``update`` (see
:class:`~simbridge.training.rl.ppo.PPO`) and registering it here or with
:func:`register_algorithm`; ``algorithm.name`` in the config selects it.
"""

from __future__ import annotations

from simbridge.training.rl.grpo import GRPO
from simbridge.training.rl.ppo import PPO

ALGORITHMS: dict[str, type[PPO]] = {"ppo": PPO, "grpo": GRPO}


def register_algorithm(name: str, cls: type[PPO]) -> None:
    ALGORITHMS[name] = cls


def build_algorithm(cfg, actor_cfg) -> PPO:
    try:
        cls = ALGORITHMS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown algorithm {cfg.name!r}; registered: {', '.join(ALGORITHMS)}") from None
    return cls(cfg, actor_cfg)
