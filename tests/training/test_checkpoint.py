"""Checkpoints: atomic directories, announcement log, clear errors, the Policy wrapper."""

from __future__ import annotations

import json

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
