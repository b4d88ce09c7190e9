"""Evaluation protocols: the shipped files load, schedules are randomized, reproducible and blinded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from simbridge_ros.protocol import load_protocol, make_schedule

from simbridge.data.config import ConfigError

PROTOCOLS = Path(__file__).resolve().parents[2] / "launch" / "protocols"


@pytest.mark.parametrize("path", sorted(PROTOCOLS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_protocols_load(path: Path) -> None:
    protocol = load_protocol(path)
    assert protocol.conditions and protocol.policies


def test_hardware_protocol_mirrors_the_rl4vla_categories() -> None:
    protocol = load_protocol(PROTOCOLS / "rl4vla_hardware.yaml")
    categories = Counter(c.category for c in protocol.conditions)
    assert categories["vision"] >= 2 and categories["semantics"] >= 3 and categories["execution"] >= 3


def test_schedule_is_complete_randomized_reproducible_and_blinded() -> None:
    protocol = load_protocol(PROTOCOLS / "rl4vla_hardware.yaml", ["episodes_per_condition=4"])
    schedule = make_schedule(protocol)
    trials = schedule.trials
    assert len(trials) == len(protocol.conditions) * len(protocol.policies) * 4
    per_cell = Counter((t.condition.name, t.policy) for t in trials)
    assert set(per_cell.values()) == {4}
    # Randomized: not grouped by condition or policy; reproducible from the seed.
    order = [(t.condition.name, t.policy) for t in trials]
    assert order != sorted(order)
    assert order == [(t.condition.name, t.policy) for t in make_schedule(protocol).trials]
    other = load_protocol(PROTOCOLS / "rl4vla_hardware.yaml", ["episodes_per_condition=4", "seed=1"])
    assert order != [(t.condition.name, t.policy) for t in make_schedule(other).trials]
    # Blinded: letters only, a bijection onto the policy names; seeds differ per trial.
    assert set(schedule.blinding) == {t.blind_id for t in trials} <= {"A", "B"}
    assert sorted(schedule.blinding.values()) == sorted(protocol.policies)
    assert all(schedule.blinding[t.blind_id] == t.policy for t in trials)
    assert len({t.seed for t in trials}) == len(trials)
    # Condition-specific instructions win over the protocol's default.
    duck = next(t for t in trials if t.condition.name == "unseen_objects")
    assert "duck" in duck.instruction


def test_bad_protocol_is_rejected_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npolicies: {a: bundle}\nconditions:\n  - {name: c, category: colour}\n")
    with pytest.raises(ConfigError, match="category"):
        load_protocol(bad)
    bad.write_text("name: x\npolicies: {}\nconditions: [{name: c}]\n")
    with pytest.raises(ConfigError, match="policies"):
        load_protocol(bad)


def test_twin_conditions_are_valid_twin_scenes() -> None:
    """Every condition of the twin protocol builds a TwinScene (as the twin node does at reset)."""
    from simbridge.data.config import load_config
    from simbridge.deploy.twin import TwinScene

    protocol = load_protocol(PROTOCOLS / "twin_smoke.yaml")
    scenes = [load_config(TwinScene, data=c.twin) for c in protocol.conditions]
    assert len({repr(s) for s in scenes}) == len(scenes)  # each condition changes something
