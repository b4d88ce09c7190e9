"""Hardware evaluation protocols (plain Python, no ROS): conditions x policies x N episodes.

A protocol file (``launch/protocols/*.yaml``) lists the policies to compare (bundle paths), the
conditions (RL4VLA categories: vision / semantics / execution) and the episodes per condition.
:func:`make_schedule` turns it into a randomized trial order (seeded, reproducible) with
**blinded** policy ids: the operator who labels success only ever sees ``A``, ``B``, ...; the
mapping is written to ``blinding.json`` in the evaluation directory and revealed in the results.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simbridge.data.config import config, load_config


@config
class ConditionConfig:
    name: str
    category: Literal["train", "vision", "semantics", "execution"] = "train"
    instruction: str = ""  # empty: the protocol's default instruction
    setup: str = ""  # what the operator changes before each episode of this condition
    episodes: int = 0  # 0: the protocol's episodes_per_condition
    #: In the twin: TwinScene fields that realise this condition (light_range, tablecloth_colours,
    #: num_distractors, object_colours, region, ...); ignored on the real robot.
    twin: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError("name: letters, digits, '-' and '_' only")
        if self.episodes < 0:
            raise ValueError("episodes: >= 0 (0 = episodes_per_condition)")


@config
class ProtocolConfig:
    name: str
    policies: dict[str, str]  # policy name -> bundle dir (or export dir with a `latest` pointer)
    conditions: list[ConditionConfig]
    instruction: str = "put the red cube on the green target"
    episodes_per_condition: int = 10
    episode_time_s: float = 30.0
    seed: int = 0
    randomize: bool = True
    blind: bool = True
    label: Literal["prompt", "service", "twin"] = "prompt"  # who decides success

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("policies: at least one policy name -> bundle path")
        if not self.conditions:
            raise ValueError("conditions: at least one condition")
        if self.episodes_per_condition < 1:
            raise ValueError("episodes_per_condition: >= 1")
        if self.episode_time_s <= 0:
            raise ValueError("episode_time_s: > 0 seconds")
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"conditions: names must be unique, got {names}")


def load_protocol(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ProtocolConfig:
    """Load and validate a protocol file (bundle paths are relative to the current directory)."""
    return load_config(ProtocolConfig, path, overrides=list(overrides))


@dataclass(frozen=True)
class Trial:
    index: int
    condition: ConditionConfig
    policy: str  # real name (never shown to the operator)
    blind_id: str  # what the operator sees
    bundle: str
    instruction: str
    seed: int


@dataclass
class Schedule:
    trials: list[Trial]
    blinding: dict[str, str] = field(default_factory=dict)  # blind id -> policy name


def make_schedule(protocol: ProtocolConfig) -> Schedule:
    rng = random.Random(protocol.seed)
    names = sorted(protocol.policies)
    letters = list(string.ascii_uppercase[: len(names)])
    if protocol.blind:
        rng.shuffle(letters)
    blind_of = dict(zip(names, letters, strict=True))
    trials: list[tuple[ConditionConfig, str]] = []
    for cond in protocol.conditions:
        n = cond.episodes or protocol.episodes_per_condition
        trials += [(cond, name) for name in names for _ in range(n)]
    if protocol.randomize:
        rng.shuffle(trials)
    out = [
        Trial(i, cond, name, blind_of[name], protocol.policies[name], cond.instruction or protocol.instruction,
              protocol.seed * 100_003 + i)
        for i, (cond, name) in enumerate(trials)
    ]
    return Schedule(out, {b: n for n, b in blind_of.items()})
