"""SimEnvSpec (one environment, declared once), the configs that nest it, and renamed config keys.

No simulator starts here: the errors make_env raises come before it would.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from simbridge.data.config import ConfigError, load_config
from simbridge.data.spec import CameraSpec, ContractError, ObservationSpec, PolicyContract
from simbridge.deploy.chunking import ChunkingConfig
from simbridge.training.cli_eval import EvalConfig
from simbridge.training.demo import DemoConfig
from simbridge.training.envs import SimEnvSpec, make_env
from simbridge.training.rl.config import RLConfig
from simbridge.training.sft import SFTConfig

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs"
#: Every shipped config and the schema it is loaded with (a new file must be listed here).
SCHEMAS = {
    "demo.yaml": DemoConfig,
    "eval_all.yaml": EvalConfig,
    "eval_quick.yaml": EvalConfig,
    "grpo_maniskill.yaml": RLConfig,
    "grpo_toy.yaml": RLConfig,
    "model_small_oft.yaml": SFTConfig,
    "model_tiny_oft.yaml": SFTConfig,
    "model_tiny_openvla.yaml": SFTConfig,
    "ppo_maniskill.yaml": RLConfig,
    "ppo_toy.yaml": RLConfig,
    "sft_tiny.yaml": SFTConfig,
}


def contract(*cams: str, size: int = 96) -> PolicyContract:
    return PolicyContract(observation=ObservationSpec(cameras=tuple(CameraSpec(c, size, size) for c in cams)))


def test_the_spec_decides_the_cameras():
    assert SimEnvSpec().cameras == (CameraSpec("scene", 128, 128),)
    assert [c.name for c in SimEnvSpec("libero_spatial").cameras] == ["scene", "wrist"]  # the task's default
    assert [c.name for c in SimEnvSpec("libero_spatial", wrist_camera=False).cameras] == ["scene"]
    wide = SimEnvSpec(camera_size=[96, 128], wrist_camera=True)  # a list from code: the tuple configs give
    assert wide.camera_size == (96, 128) and wide.cameras[1] == CameraSpec("wrist", 96, 128)
    assert SimEnvSpec("ToyReach").cameras == (CameraSpec("scene", 128, 128),)  # not a registered task


def test_a_contract_sets_cameras_and_size_and_nothing_else():
    base = SimEnvSpec(split="vision_noise", max_episode_steps=50, chunking=ChunkingConfig(execute_steps=1))
    spec = base.with_contract(contract("scene", "wrist"))
    assert spec.cameras == (CameraSpec("scene", 96, 96), CameraSpec("wrist", 96, 96))
    assert (spec.split, spec.max_episode_steps, spec.chunking) == (base.split, 50, base.chunking)
    assert not SimEnvSpec("libero_spatial").with_contract(contract("scene")).renders_wrist
    made = SimEnvSpec.for_contract(contract("scene", size=64), task="PutOnTarget-v1", split="train")
    assert made.cameras == (CameraSpec("scene", 64, 64),) and made.split == "train"
    for cams in (("agentview",), ("wrist",), ("scene", "agentview")):
        with pytest.raises(ContractError, match=r"renders \['scene', 'wrist'\]"):
            base.with_contract(contract(*cams))


def test_bad_values_and_variants():
    with pytest.raises(ValueError, match="obs_mode"):
        SimEnvSpec(obs_mode="depth")
    with pytest.raises(ValueError, match="camera_size"):
        SimEnvSpec(camera_size=128)
    with pytest.raises(ValueError, match="camera_size"):
        SimEnvSpec(camera_size=(0, 64))
    with pytest.raises(ValueError, match="max_episode_steps"):
        SimEnvSpec(max_episode_steps=0)
    base = SimEnvSpec(split="vision_noise")
    assert SimEnvSpec.of() == SimEnvSpec() and SimEnvSpec.of(base) is base
    assert SimEnvSpec.of(base, obs_mode="state") == SimEnvSpec(split="vision_noise", obs_mode="state")
    with pytest.raises(TypeError):
        SimEnvSpec.of(base, camera_px=64)
    options = {"split": "train", "task_index": 3}
    assert SimEnvSpec.pop_fields(options) == {"split": "train"} and options == {"task_index": 3}


def test_make_env_takes_a_spec_or_a_task_and_fails_before_the_simulator():
    with pytest.raises(KeyError, match="valid tasks"):
        make_env(SimEnvSpec("PutOnTable-v9"))
    with pytest.raises(KeyError, match="valid splits"):
        make_env(SimEnvSpec(), split="nope")  # a keyword named like a field overrides the spec
    with pytest.raises(ValueError, match="obs_mode"):
        make_env("PutOnTarget-v1", obs_mode="depth")
    with pytest.raises(TypeError, match="given twice"):
        make_env("PutOnTarget-v1", task="libero_spatial")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_shipped_config_loads_without_old_keys(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a shipped config uses no deprecated key
        cfg = load_config(SCHEMAS[name], CONFIGS / name)
    spec = {DemoConfig: lambda c: c.env, EvalConfig: lambda c: c.env, RLConfig: lambda c: c.env.spec,
            SFTConfig: lambda c: c.eval.env}[SCHEMAS[name]](cfg)  # fmt: skip
    assert isinstance(spec, SimEnvSpec)


def test_the_schema_table_lists_every_shipped_config():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SCHEMAS)


def test_shipped_configs_keep_their_values():
    ppo = load_config(RLConfig, CONFIGS / "ppo_maniskill.yaml")
    assert ppo.env.spec == SimEnvSpec("PutOnTarget-v1", "train", "rgb", (128, 128), None, 80)
    assert ppo.env.max_episode_steps == 80  # where the rollout reads it
    toy = load_config(RLConfig, CONFIGS / "grpo_toy.yaml")
    assert (toy.env.spec.task, toy.env.spec.max_episode_steps) == ("ToyReach", 20)
    ev = load_config(EvalConfig, CONFIGS / "eval_all.yaml")
    assert ev.env == SimEnvSpec(wrist_camera=False) and ev.env.cameras == (CameraSpec("scene"),)
    assert load_config(DemoConfig, CONFIGS / "demo.yaml").env.camera_size == (128, 128)
    assert load_config(SFTConfig, CONFIGS / "sft_tiny.yaml").root == "runs"


def old_keys(schema, *overrides, path=None):
    with pytest.warns(FutureWarning, match="deprecated"):
        return load_config(schema, path, overrides=list(overrides))


def test_old_keys_still_load_into_their_new_places():
    assert old_keys(SFTConfig, "run_root=/tmp/x").root == "/tmp/x"
    demo = old_keys(DemoConfig, "camera_size=64", "run_root=/tmp/y")
    assert demo.env.camera_size == (64, 64) and demo.root == "/tmp/y"
    ev = old_keys(EvalConfig, "task=libero_spatial", "max_episode_steps=300", "chunking.mode=ensemble",
                  "wrist_camera=false", "camera_size=[64,64]", "obs_mode=state")  # fmt: skip
    assert ev.env == SimEnvSpec("libero_spatial", obs_mode="state", camera_size=(64, 64), wrist_camera=False,
                                max_episode_steps=300, chunking=ChunkingConfig(mode="ensemble"))  # fmt: skip
    # what launch/reproduce_mini.sh and the RL benchmarks pass
    rl = old_keys(RLConfig, "env.wrist_camera=true", "env.max_episode_steps=40", path=CONFIGS / "ppo_maniskill.yaml")
    assert rl.env.spec.renders_wrist and rl.env.spec.max_episode_steps == 40 and rl.env.spec.camera_size == (128, 128)
    toy = old_keys(RLConfig, "env.task=ToyReach", "env.split=train", "env.obs_mode=state", path=CONFIGS / "ppo_toy.yaml")
    assert (toy.env.spec.task, toy.env.spec.obs_mode, toy.env.spec.max_episode_steps) == ("ToyReach", "state", 20)


def test_an_old_key_over_a_new_one_wins_and_says_so():
    """An old ``key=value`` override on a shipped config that already has the new key (scripts)."""
    with pytest.warns(FutureWarning, match=r"env\.spec\.max_episode_steps' \(its value 10 replaces 80\)"):
        cfg = load_config(RLConfig, CONFIGS / "ppo_maniskill.yaml", overrides=["env.max_episode_steps=10"])
    assert cfg.env.spec.max_episode_steps == 10
    with pytest.raises(ConfigError, match="a section of keys"):
        load_config(RLConfig, data={"env": {"spec": 3, "task": "x"}})


def test_config_checks_of_the_nested_spec():
    with pytest.raises(ConfigError, match=r"env\.spec\.obs_mode"):
        load_config(RLConfig, overrides=["env.spec.obs_mode=depth"])
    with pytest.raises(ConfigError, match="RL executes every predicted chunk whole"):
        load_config(RLConfig, overrides=["env.spec.chunking.execute_steps=1"])
    with pytest.raises(ConfigError, match="suite"):  # evaluation's splits come from its suite
        load_config(EvalConfig, overrides=["env.split=vision_noise"])
    with pytest.raises(ConfigError, match=r"unknown key 'eval\.env\.camera_px'"):
        load_config(SFTConfig, overrides=["eval.env.camera_px=3"])


def test_sft_names_stay_importable_from_the_package():
    import simbridge.training.sft as sft

    for name in sft.__all__:
        assert getattr(sft, name) is not None, name
    assert callable(sft.add_arguments) and callable(sft.run) and sft.__doc__.startswith("Supervised")
