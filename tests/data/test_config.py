"""Config loading: composition, overrides and the errors users see for bad input."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

import pytest

from simbridge.data.config import ConfigError, config, load_config, to_yaml


@config
class Optim:
    lr: float = 1e-4
    kind: Literal["adam", "sgd"] = "adam"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr: must be > 0 (a learning rate)")


@config
class Job:
    name: str = "job"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_defaults_and_overrides():
    cfg = load_config(Job, overrides=["steps=20", "optim.lr=3e-4"])
    assert cfg.steps == 20 and cfg.optim.lr == pytest.approx(3e-4) and cfg.optim.kind == "adam"


def test_yaml_composition_with_defaults_list(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 5\noptim:\n  lr: 0.1\n")
    (tmp_path / "job.yaml").write_text("defaults: [base]\nname: mine\noptim:\n  kind: sgd\n")
    cfg = load_config(Job, tmp_path / "job.yaml")
    assert (cfg.name, cfg.steps, cfg.optim.lr, cfg.optim.kind) == ("mine", 5, 0.1, "sgd")
    assert "kind: sgd" in to_yaml(cfg)


def test_unknown_key_names_key_and_allowed_keys(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(Job, tmp_path / "bad.yaml")
    msg = str(err.value)
    assert "unknown key 'optim.lrr'" in msg and "lr, kind" in msg and "bad.yaml" in msg


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(Job, overrides=["steps=many"])
    assert "key 'steps'" in str(err.value) and "'many'" in str(err.value)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(Job, overrides=["optim.kind=rmsprop"])
    msg = str(err.value)
    assert "optim.kind" in msg and "'rmsprop'" in msg and "'adam'" in msg and "'sgd'" in msg


def test_value_check_in_post_init():
    with pytest.raises(ConfigError) as err:
        load_config(Job, overrides=["optim.lr=-1"])
    assert "key 'optim.lr': bad value -1: must be > 0" in str(err.value)


def test_missing_file_and_bad_yaml_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Job, tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Job, tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(Job, overrides=["steps"])


def test_defaults_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Job, tmp_path / "a.yaml")
