"""The evaluation harness and ``simbridge eval`` (real ManiSkill env in state mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simbridge.data.cli import main as simbridge
from simbridge.data.spec import PolicyContract
from simbridge.deploy.chunking import ChunkingConfig
from simbridge.training.envs import SimEnvSpec, make_env, make_expert
from simbridge.training.evaluation import (
    POLICY_LOADERS,
    PolicySource,
    detect_policy_kind,
    evaluate,
    format_table,
    load_policy_source,
    wilson_interval,
)

EPISODE_KEYS = {"policy", "split", "category", "seed", "episode", "success", "grasped", "steps", "instruction"}


@pytest.fixture(scope="module")
def env():
    e = make_env(SimEnvSpec("PutOnTarget-v1", split="train", obs_mode="state", camera_size=(32, 32)), seed=0)
    yield e
    e.close()


class ChunkedExpert:
    """The expert re-planning only every ``k`` steps: it plans k identical steps at once."""

    def __init__(self, env, k: int):
        self.expert = make_expert(env)
        self.contract = PolicyContract(chunk_size=k)
        self.k = k
        self.calls = 0

    def reset(self) -> None:
        self.expert.reset()

    def predict(self, obs):
        self.calls += 1
        return np.repeat(self.expert.predict(obs), self.k, axis=0)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = wilson_interval(7, 20)
    assert lo == pytest.approx(0.1812, abs=1e-3) and hi == pytest.approx(0.5671, abs=1e-3)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_evaluate_writes_episodes_and_summary(env, tmp_path):
    summary = evaluate(
        load_policy_source("expert"),
        splits=["train", "execution_moved_object"],
        episodes=2,
        seed=3,
        env=env,
        run_dir=tmp_path,
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(set(r) >= EPISODE_KEYS for r in rows)
    assert [r["seed"] for r in rows] == [3, 4, 3, 4] and rows[2]["category"] == "execution"
    assert all(r["success"] for r in rows) and all(0 < r["steps"] <= 80 for r in rows)
    assert all(r["grasped"] is True for r in rows) and summary["overall"]["grasp_rate"] == 1.0
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["splits"]["train"]["success_rate"] == 1.0 == summary["overall"]["success_rate"]
    assert on_disk["splits"]["train"]["ci95_low"] == pytest.approx(wilson_interval(2, 2)[0])
    assert set(on_disk["categories"]) == {"train", "execution"}
    assert (tmp_path / "summary.png").stat().st_size > 5000
    assert "execution_moved_object" in format_table(summary)


def test_a_policy_that_never_grasps_scores_no_grasps(env):
    class StandStill:
        contract = PolicyContract(chunk_size=8)

        def reset(self):
            pass

        def predict(self, obs):
            return np.zeros((8, 7), np.float32) + np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # open gripper

    summary = evaluate(lambda _env: StandStill(), splits=["train"], episodes=1, env=env, progress=False,
                       policy_name="still")  # fmt: skip
    split = summary["splits"]["train"]
    assert split["success_rate"] == 0.0 and split["grasp_rate"] == 0.0
    assert "0.0%" in format_table(summary).splitlines()[1].split()[-1]


def test_same_seeds_give_the_same_episodes(env, tmp_path):
    # Scenes are identical for equal seeds; contact-rich rollouts may differ by a step or so
    # (PhysX keeps contact caches across resets), so compare what the policy was asked to do.
    for run in ("a", "b"):
        evaluate(
            make_expert,
            splits=["semantic_instruction"],
            episodes=2,
            seed=7,
            env=env,
            progress=False,
            run_dir=tmp_path / run,
        )
    a, b = ([json.loads(x) for x in (tmp_path / r / "episodes.jsonl").read_text().splitlines()] for r in "ab")
    keys = ("split", "seed", "instruction", "success")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert a[0]["instruction"] != a[1]["instruction"]


def test_action_chunks_run_open_loop(env, tmp_path):
    policy = ChunkedExpert(env, k=4)
    summary = evaluate(
        lambda e: policy, splits=["train"], episodes=1, seed=0, env=env, progress=False, policy_name="chunked"
    )
    steps = summary["splits"]["train"]["mean_steps"]
    assert policy.calls == int(np.ceil(steps / 4))
    assert summary["policy"] == "chunked"
    assert summary["chunking"] == {"mode": "receding", "chunk_size": 4, "execute_steps": 4, "ensemble_decay": None}


@pytest.mark.parametrize(
    ("chunking", "calls_per_step"),
    [(ChunkingConfig(execute_steps=1), 1.0), (ChunkingConfig(execute_steps=2), 0.5), (ChunkingConfig(mode="ensemble"), 1.0)],
)
def test_chunks_are_executed_as_on_the_robot(env, tmp_path, chunking, calls_per_step):
    """The eval harness uses the deploy chunk executors: re-planning more often asks the policy more."""
    policy = ChunkedExpert(env, k=4)
    summary = evaluate(lambda e: policy, splits=["train"], episodes=1, seed=0, env=env, progress=False,
                       spec=SimEnvSpec(chunking=chunking), run_dir=tmp_path)  # fmt: skip
    row = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert row["predictions"] == policy.calls == int(np.ceil(row["steps"] * calls_per_step))
    if chunking.mode == "receding":  # the expert re-planning more often still succeeds (an average may lag)
        assert row["success"]
    assert summary["chunking"]["mode"] == chunking.mode


def test_eval_cli_chunking_flags(tmp_path, capsys):
    out = tmp_path / "eval"
    code = simbridge(["eval", "--policy", "expert", "--suite", "train", "--episodes", "1", "--obs-mode", "state",
                      "--chunking", "ensemble", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["chunking"]["mode"] == "ensemble"
    assert simbridge(["eval", "--policy", "expert", "--episodes", "1", "--execute-steps", "-1", "--out",
                      str(tmp_path / "bad"), "--no-progress"]) == 2  # fmt: skip
    assert "execute_steps" in capsys.readouterr().err


def test_a_policy_needing_cameras_the_simulation_lacks_fails_before_any_env(tmp_path):
    from simbridge.data.spec import CameraSpec, ContractError, ObservationSpec

    contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("agentview"),)))
    source = PolicySource(name="robot-trained", make=lambda env: None, contract=contract)
    with pytest.raises(ContractError, match="agentview"):
        evaluate(source, splits=["train"], episodes=1, progress=False, task="no-such-task")  # no env is made


def test_policy_sources_and_their_errors(tmp_path):
    assert set(POLICY_LOADERS) == {"expert", "checkpoint", "bundle", "remote"}
    assert detect_policy_kind("expert") == "expert"
    assert detect_policy_kind("ws://gpu-box:8765") == "remote"  # `simbridge serve`
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    assert detect_policy_kind(str(tmp_path / "bundle")) == "bundle"
    (tmp_path / "ckpt").mkdir()
    assert detect_policy_kind(str(tmp_path / "ckpt")) == "checkpoint"
    with pytest.raises(FileNotFoundError, match="neither one of"):
        detect_policy_kind(str(tmp_path / "missing"))
    with pytest.raises(KeyError, match="valid kinds"):
        load_policy_source("expert", kind="onnx")


def test_cli_eval_runs_and_writes_results(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = simbridge(
        [
            "eval",
            "--policy",
            "expert",
            "--suite",
            "train",
            "--episodes",
            "1",
            "--obs-mode",
            "state",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "train" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["episodes"] == 1 and summary["policy"] == "expert"


def test_cli_eval_bad_input(tmp_path, capsys):
    assert simbridge(["eval", "--suite", "nonsense", "--episodes", "1"]) == 2
    assert "valid suites" in capsys.readouterr().err
    assert simbridge(["eval", "--policy", str(tmp_path / "nope"), "--suite", "train"]) == 1
    assert "neither one of" in capsys.readouterr().err
    assert simbridge(["eval", "episodes=0"]) == 2
    assert simbridge(["eval", "--list"]) == 0
    assert "execution_moved_object" in capsys.readouterr().out


def test_cli_eval_config_file(tmp_path):
    from simbridge.data.config import load_config
    from simbridge.training.cli_eval import EvalConfig

    cfg = load_config(EvalConfig, "launch/configs/eval_quick.yaml", overrides=["episodes=1", "env.max_episode_steps=5"])
    assert cfg.episodes == 1 and cfg.video and cfg.suite.startswith("train,")
    assert cfg.env.max_episode_steps == 5 and cfg.env.task == "PutOnTarget-v1"


def test_a_saved_checkpoint_is_evaluated_through_the_loader(env, tmp_path):
    """The 'checkpoint' loader end to end: a tiny untrained OFT policy, saved and loaded back."""
    from simbridge.data.spec import CameraSpec, ObservationSpec
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import build_policy

    contract = PolicyContract(
        observation=ObservationSpec(cameras=(CameraSpec("scene", 32, 32),)), chunk_size=4
    )
    path = save_checkpoint(
        build_policy("openvla-oft", "tiny", contract=contract), tmp_path / "run", iteration=1
    )
    source = load_policy_source(str(path))
    assert source.kind == "checkpoint" and source.contract.chunk_size == 4
    env.max_episode_steps = 8  # an untrained policy will not succeed: keep the episode short
    try:
        summary = evaluate(
            source, splits=["train"], episodes=1, env=env, run_dir=tmp_path / "eval", progress=False
        )
    finally:
        env.max_episode_steps = 80
    assert summary["policy"].startswith("checkpoint:") and summary["splits"]["train"]["mean_steps"] == 8


def test_cli_demos_writes_and_appends_expert_episodes(tmp_path, capsys):
    from simbridge.data.store import EpisodeStore

    store = tmp_path / "demos.zarr"
    common = ["--out", str(store), "--obs-mode", "state", "--camera-size", "32", "--no-progress"]
    assert simbridge(["demos", "--episodes", "1", "--seed", "0", *common]) == 0
    assert "wrote 1 episode(s)" in capsys.readouterr().out
    assert simbridge(["demos", "--episodes", "1", "--seed", "5", "--expert-style", "gated", *common]) == 0  # appends
    demos = EpisodeStore(store)
    assert len(demos) == 2
    assert [demos.meta(i).seed for i in range(2)] == [0, 5]
    assert [demos.meta(i).extra["expert_style"] for i in range(2)] == ["funnel", "gated"]
    assert all(demos.meta(i).success and demos.meta(i).split == "train" for i in range(2))
    assert demos.episode(1)["image_scene"].shape[1:] == (32, 32, 3)


def test_cli_demos_bad_input(tmp_path, capsys):
    assert simbridge(["demos", "--episodes", "2", "--split", "nope", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "unknown split 'nope'" in capsys.readouterr().err
    assert simbridge(["demos", "--episodes", "0", "--out", str(tmp_path / "x.zarr")]) == 2
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    ("manifest", "trusted", "expected"),
    [
        ('{"format": "simbridge-policy-bundle", "schema_version": NaN}', False, "field 'schema_version' is NaN"),
        ("[" * 10000 + "]" * 10000, False, "nests JSON arrays/objects too deeply"),
        ('{"format": "simbridge-policy-bundle"', False, "is not valid JSON"),
        ("{}", True, "is not signed (manifest.sig is missing)"),
    ],
)
def test_cli_eval_refused_bundle_is_one_line(tmp_path, capsys, manifest, trusted, expected):
    """A bundle the runtime refuses ends `simbridge eval` with exit 1 and one line, before any env."""
    from simbridge.deploy.signing import generate_key_pair

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(manifest)
    args = ["eval", "--policy", str(bundle), "--suite", "train", "--episodes", "1", "--no-progress"]
    if trusted:
        args += ["--trusted-key", str(generate_key_pair(tmp_path / "key")[1])]
    assert simbridge(args) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("simbridge eval: refused bundle: ") and expected in captured.err
