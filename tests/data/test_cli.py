"""The `simbridge` command line: help, unknown verbs, bad arguments, every verb's config-derived flags."""

from __future__ import annotations

import importlib
import subprocess
import sys
import typing

import pytest

from simbridge.data import cli
from simbridge.data.config_fields import config_fields


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simbridge.data.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_verb():
    out = run_cli("--help")
    assert out.returncode == 0
    for verb in ("train", "demos", "eval", "export", "deploy", "collect", "calibrate", "data", "report"):
        assert f"  {verb}" in out.stdout


def test_no_arguments_prints_help_and_exits_2():
    out = run_cli()
    assert out.returncode == 2 and "verbs:" in out.stdout


def test_unknown_verb_exits_2_with_suggestion():
    out = run_cli("trian")
    assert out.returncode == 2
    assert "unknown verb 'trian'" in out.stderr and "train" in out.stderr


def test_every_registered_verb_has_help(capsys):
    for name in cli.VERBS:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0, name


#: Converted verbs: their options are a config dataclass (CONFIG, or COMMANDS for subcommands).
CONFIG_VERBS = {
    "export": "simbridge.deploy.cli_export",
    "deploy": "simbridge.deploy.cli_deploy",
    "collect": "simbridge.data.cli_collect",
    "report": "simbridge.data.cli_report",
    "demo": "simbridge.training.cli_demo",
    "data": "simbridge.data.cli_data",
    "calibrate": "simbridge.calibration.cli_calibrate",
    "eval": "simbridge.training.cli_eval",
    "demos": "simbridge.training.cli_demos",
    "check-checkpoint": "simbridge.training.cli_check_checkpoint",
    "serve": "simbridge.training.cli_serve",
}


def _help_cases():
    for verb, module in CONFIG_VERBS.items():
        mod = importlib.import_module(module)
        if hasattr(mod, "CONFIG"):
            yield pytest.param([verb], mod.CONFIG, id=verb)
        for command, entry in getattr(mod, "COMMANDS", {}).items():
            yield pytest.param([verb, command], entry[0], id=f"{verb}-{command}")
    # `train <trainer>` imports its trainer only when named (the RL runner pulls in Ray).
    from simbridge.training.rl.config import RLConfig
    from simbridge.training.sft.config import SFTConfig

    yield pytest.param(["train", "sft"], SFTConfig, id="train-sft")
    yield pytest.param(["train", "ppo"], RLConfig, id="train-ppo")


@pytest.mark.parametrize(("argv", "schema"), list(_help_cases()))
def test_help_lists_every_config_field_as_a_flag_with_its_doc(argv, schema, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in text and "KEY=VALUE" in text
    for f in config_fields(schema):
        assert "--" + f.path.replace("_", "-") in text, f.path
        first_words = " ".join(f.doc.replace("``", "").split()[:4]).rstrip(".")
        assert first_words in text, (f.path, first_words)


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["export", "ckpt", "-o", "x", "opsett=3"], "unknown key 'opsett'"),
        (["export", "ckpt", "-o", "x", "opset=many"], "key 'opset': bad value 'many'"),
        (["export", "ckpt", "-o", "x", "--opset", "many"], "argument --opset: invalid int value"),
        (["deploy", "durashun=3"], "unknown key 'durashun'"),
        (["deploy", "--duration", "soon"], "argument --duration: invalid float value"),
        (["collect", "--out", "x.zarr", "mapping.deadzonee=1"], "unknown key 'mapping.deadzonee'"),
        (["collect", "--out", "x.zarr", "episodes=many"], "key 'episodes': bad value 'many'"),
        (["report", "run", "--name", "nolabel"], "key 'names'"),
        (["data", "info", "s.zarr", "episodes=maybe"], "key 'episodes': bad value 'maybe'"),
        (["calibrate", "board", "-o", "x", "board.squares_x=1"], "key 'board.squares_x': bad value 1"),
        (["demo", "--from-stage", "sft"], "key 'from_stage'"),
        (["demo", "demos=1"], "key 'demos': bad value 1"),
        (["eval", "episodez=3"], "unknown key 'episodez'"),
        (["eval", "--max-steps", "soon"], "argument --max-steps"),
        (["eval", "env.chunking.mode=all"], "key 'env.chunking.mode'"),
        (["check-checkpoint", "ckpt", "proprio=[1]"], "key 'proprio'"),
        (["demos", "--episodes", "2"], "missing required key 'out'"),
        (["train", "sft", "optim.stepz=3"], "unknown key 'optim.stepz'"),
        (["train", "sft", "--optim.steps", "many"], "argument --optim.steps: invalid int value"),
        (["train", "ppo", "runner.iterations=x"], "key 'runner.iterations'"),
        (["demos", "--out", "x.zarr", "--camera-size", "8"], "env.camera_size at least 16"),
        (["demos", "--out", "x.zarr", "--split", "nope"], "unknown split 'nope'"),
    ],
)
def test_bad_key_or_type_exits_2_with_one_line_naming_the_key(argv, key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and key in err, err
    assert err.count("\n") == 1 and err.startswith(f"simbridge {argv[0]}") and "error:" in err, err


def test_config_file_then_flag_then_override(tmp_path, monkeypatch):
    from simbridge.deploy import cli_deploy

    seen = []
    monkeypatch.setattr(cli_deploy, "run_processes", lambda cfg, sets: seen.append((cfg, sets)) or 0)
    (tmp_path / "deploy.yaml").write_text("sim: true\nbundle: from-file\nduration: 5\ninstruction: file\n")
    argv = ["deploy", "--config", str(tmp_path / "deploy.yaml"), "--processes", "--bundle", "from-flag",
            "--duration", "6", "duration=7", "--set", "policy.chunk_mode=ensemble"]
    assert cli.main(argv) == 0
    cfg, sets = seen[0]
    assert (cfg.sim, cfg.bundle, cfg.duration, cfg.instruction) == (True, "from-flag", 7.0, "file")
    assert sets == ["policy.chunk_mode=ensemble"]  # ROS node parameters stay --set node.key=value


def test_demo_usage_error_exits_2_naming_the_option(capsys):
    assert cli.main(["demo", "--from-stage", "export"]) == 2
    assert "--from-stage export needs --run-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--from-stage", "nope"])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_demo_stages_are_the_demo_modules():
    from simbridge.training.cli_demo import DemoCommand
    from simbridge.training.demo import STAGES

    assert typing.get_args(typing.get_type_hints(DemoCommand)["from_stage"]) == STAGES


@pytest.mark.parametrize(
    "args",
    [
        ["data", "--no-such-flag"],
        ["train", "sft", "--no-such-flag"],
        ["export", "--no-such-flag"],
        ["eval", "--episodes", "many"],
        ["demos", "--episodes", "2"],  # --out is required
        ["report"],
    ],
)
def test_bad_verb_arguments_exit_2(args):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert f"simbridge {args[0]}" in out.stderr and "error:" in out.stderr


def test_train_without_trainer_names_the_choices():
    out = run_cli("train")
    assert out.returncode == 2 and "sft" in out.stderr and "ppo" in out.stderr


def test_demos_old_flags_set_the_env_keys(tmp_path, monkeypatch):
    from simbridge.training.cli_demos import DemosConfig

    seen: list[DemosConfig] = []

    def fake_write(out, episodes, *, spec, **kwargs):
        seen.append(DemosConfig(out=out, episodes=episodes, env=spec))
        return {"written": episodes, "store": out, "successes": episodes, "attempted": episodes}

    monkeypatch.setattr("simbridge.training.envs.demos.write_expert_demos", fake_write)
    argv = ["demos", "--out", str(tmp_path / "d.zarr"), "--episodes", "1", "--split", "vision_noise", "--obs-mode",
            "state", "--camera-size", "32", "--wrist-camera", "--max-steps", "9", "--no-progress"]
    assert cli.main(argv) == 0
    env = seen[0].env
    assert (env.split, env.obs_mode, env.camera_size, env.wrist_camera, env.max_episode_steps) == (
        "vision_noise", "state", (32, 32), True, 9)
    assert cli.main([*argv, "env.camera_size=[48,64]"]) == 0  # key=value wins over the flag
    assert seen[1].env.camera_size == (48, 64)


def test_train_names_the_algorithm_over_the_config_file_and_keeps_resume(tmp_path, capsys):
    import yaml

    (tmp_path / "rl.yaml").write_text("algorithm: {name: ppo, group_size: 4}\nrunner: {iterations: 4}\n")
    argv = ["train", "grpo", "--config", str(tmp_path / "rl.yaml"), "--runner.iterations", "5", "--resume",
            str(tmp_path), "--print-config"]
    assert cli.main([*argv, "runner.seed=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["algorithm"]["name"] == "grpo" and cfg["runner"]["resume"] == str(tmp_path)
    assert (cfg["runner"]["iterations"], cfg["runner"]["seed"]) == (5, 3)
