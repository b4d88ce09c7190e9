"""Checkpoints: atomic directories, announcement log, clear errors, the Policy wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from simbridge.data.spec import Observation, Policy, PolicyContract
from simbridge.training.checkpoint import (
    ANNOUNCE_FILE,
    CHECKPOINT_META,
    CheckpointError,
    CheckpointPolicy,
    checkpoint_meta,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from simbridge.training.models import ActionStats, build_policy

torch.set_num_threads(1)


def make_obs(i: int) -> Observation:
    rng = np.random.default_rng(i)
    return Observation(
        images={"scene": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)},
        ee_pose=np.array([0.4, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0], np.float32),
        gripper_width=0.04,
        joint_positions=np.zeros(7, np.float32),
        instruction="put the red cube on the plate",
    )


@pytest.fixture(scope="module")
def policy():
    stats = ActionStats.from_actions(np.random.default_rng(0).normal(0, 0.02, (100, 7)))
    return build_policy("openvla-oft", "tiny", contract=PolicyContract(chunk_size=4), action_stats=stats)


def test_save_checkpoint_is_atomic_and_announced(policy, tmp_path):
    p1 = save_checkpoint(policy, tmp_path, 10, {"loss": 1.5}, extra={"note": "x"}, config={"lr": 1e-4})
    p2 = save_checkpoint(policy, tmp_path, 20, {"loss": np.float32(0.5)})
    assert p1.name == "iter_000010" and p2.name == "iter_000020"
    assert not [
        p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")
    ]  # no temp dirs left
    lines = [json.loads(s) for s in (tmp_path / "checkpoints" / ANNOUNCE_FILE).read_text().splitlines()]
    assert [(line["iteration"], line["path"]) for line in lines] == [
        (10, str(p1.resolve())),
        (20, str(p2.resolve())),
    ]
    meta = checkpoint_meta(p1)
    assert meta["family"] == "openvla-oft" and meta["preset"] == "tiny" and meta["iteration"] == 10
    assert (
        meta["metrics"] == {"loss": 1.5} and meta["config"] == {"lr": 1e-4} and meta["extra"] == {"note": "x"}
    )
    assert latest_checkpoint(tmp_path) == p2


def test_load_checkpoint_round_trip_and_policy_wrapper(policy, tmp_path):
    path = save_checkpoint(policy, tmp_path, 1, {})
    loaded = load_checkpoint(tmp_path)  # a run dir resolves to its latest checkpoint
    batch = policy.prepare([make_obs(0)])
    torch.testing.assert_close(
        loaded.act(batch, deterministic=True).actions, policy.act(batch, deterministic=True).actions
    )
    wrapped = CheckpointPolicy(path)
    assert isinstance(wrapped, Policy)
    assert wrapped.contract.chunk_size == 4
    wrapped.reset()
    chunk = wrapped.predict(make_obs(0))
    assert chunk.shape == (4, 7) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk, policy.act(batch, deterministic=True).actions[0].numpy(), atol=1e-6)
    assert CheckpointPolicy(policy).predict_batch([make_obs(0), make_obs(1)]).shape == (2, 4, 7)


@pytest.mark.parametrize("missing", ["model.safetensors", "action_stats.json", "instruction_tokenizer.json",
                                     "config.json", CHECKPOINT_META])  # fmt: skip
def test_incomplete_checkpoint_names_the_missing_file(policy, tmp_path, missing):
    path = save_checkpoint(policy, tmp_path, 3, {})
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)


def _fake_checkpoints(run: Path, scores: dict[int, float | None]) -> None:
    """Complete-looking checkpoint directories (the meta file is what makes one complete)."""
    from simbridge.training.checkpoint import CHECKPOINT_META

    for it, score in scores.items():
        d = run / "checkpoints" / f"iter_{it:06d}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"weights")
        metrics = {} if score is None else {"val/loss": score}
        (d / CHECKPOINT_META).write_text(json.dumps({"iteration": it, "metrics": metrics}))


def test_pruning_keeps_the_newest_and_the_best_and_nothing_else(tmp_path):
    from simbridge.training.checkpoint import list_checkpoints, prune_checkpoints

    _fake_checkpoints(tmp_path, {10: 0.9, 20: 0.4, 30: None, 40: 0.7, 50: 0.8})
    assert prune_checkpoints(tmp_path, keep_last=0) == []  # 0: keep all
    deleted = prune_checkpoints(tmp_path, keep_last=2, best_metric="val/loss", higher_is_better=False)
    assert sorted(p.name for p in deleted) == ["iter_000010", "iter_000030"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_000020", "iter_000040", "iter_000050"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no debris
    # Higher is better (RL success rate): the best is the newest here, so only the newest N stay.
    prune_checkpoints(tmp_path, keep_last=1, best_metric="val/loss", higher_is_better=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["iter_000050"]


def test_keep_checkpoints_is_validated_at_load():
    from simbridge.data.config import ConfigError, load_config
    from simbridge.training.rl.config import RLConfig
    from simbridge.training.sft.config import SFTConfig

    for cls, key in ((SFTConfig, "keep_checkpoints"), (RLConfig, "runner.keep_checkpoints")):
        with pytest.raises(ConfigError, match="keep_checkpoints"):
            load_config(cls, overrides=[f"{key}=-1"])
