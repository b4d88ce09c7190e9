"""SFT's teacher-forced action error per phase in mm / rad (training/sft/action_error.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simbridge.data.config import load_config
from simbridge.data.runs import read_metrics
from simbridge.data.spec import CameraSpec
from simbridge.training.models import ActionStats
from simbridge.training.sft import SFTConfig, build_for_demos, make_batch, train_sft
from simbridge.training.sft.action_error import (
    PHASES,
    ActionError,
    action_phases,
    episode_start_error,
    format_action_error,
    predicted_actions,
)
from simbridge.training.sft.data import Demos

torch.set_num_threads(1)


def act(t, rot=(0.0, 0.0, 0.0), gripper: float = 1.0) -> np.ndarray:
    return np.array([*t, *rot, gripper], np.float32)


REACH, ALIGN = act((0.02, 0.0, -0.01)), act((0.002, 0.001, 0.0), (0.0, 0.0, 0.1))
GRASP, TRANSPORT = act((0.0, 0.0, 0.0), gripper=-1.0), act((0.0, 0.03, 0.02), gripper=-1.0)


def demos(episodes: int = 5, seed: int = 0) -> Demos:
    """Episodes of reach x3, align x2, grasp x2, transport x3 (random 64 px images, one camera)."""
    rng = np.random.default_rng(seed)
    ep = np.stack([REACH] * 3 + [ALIGN] * 2 + [GRASP] * 2 + [TRANSPORT] * 3)
    n = len(ep)
    noise = np.array([1.0] * 6 + [0.0]) * 0.001  # the gripper command stays +-1
    actions = np.concatenate([ep + rng.normal(0, 1, ep.shape) * noise for _ in range(episodes)])
    return Demos(
        images=rng.integers(0, 255, (episodes * n, 1, 64, 64, 3), dtype=np.uint8),
        proprio=rng.normal(0, 0.1, (episodes * n, 8)).astype(np.float32),
        actions=actions.astype(np.float32),
        episode=np.repeat(np.arange(episodes), n),
        episode_end=np.repeat(np.arange(1, episodes + 1) * n, n),
        instructions=["put the red cube on the plate"] * episodes,
        cameras=(CameraSpec("scene", 64, 64),),
    )


def test_phases_come_from_the_label_action():
    labels = np.stack([REACH, ALIGN, GRASP, TRANSPORT])
    assert [PHASES[i] for i in action_phases(labels)] == ["reach", "align", "grasp", "transport"]
    # 5 mm per step is the boundary between moving and fine actions.
    assert [PHASES[i] for i in action_phases(np.stack([act((0.0049, 0, 0)), act((0.0051, 0, 0))]))] == ["align", "reach"]


def test_errors_are_in_millimetres_radians_and_agreement():
    labels = np.stack([REACH, REACH, ALIGN, GRASP, GRASP, TRANSPORT])
    pred = labels.copy()
    pred[:2, 0] += 0.003  # reach: 3 mm off in x
    pred[2, 3:6] += [0.03, 0.0, 0.04]  # align: 0.05 rad off
    pred[3, 6] = 1.0  # grasp: one of two gripper commands says open
    pred[5, :3] += [0.0, 0.006, 0.008]  # transport: 10 mm off
    errors = ActionError()
    errors.add(torch.as_tensor(pred), labels)
    r = errors.result()
    assert r["reach"]["steps"] == 2 and r["reach"]["translation_mm"] == pytest.approx(3.0, abs=1e-3)
    assert r["align"]["rotation_rad"] == pytest.approx(0.05, abs=1e-6) and r["align"]["translation_mm"] == 0
    assert r["grasp"]["gripper_agreement"] == 0.5 and r["transport"]["translation_mm"] == pytest.approx(10.0, abs=1e-3)
    assert r["all"]["steps"] == 6 and r["all"]["translation_mm"] == pytest.approx((6 + 10) / 6, abs=1e-3)
    assert "transport" in format_action_error(r) and "50.0%" in format_action_error(r)


def test_predictions_are_unnormalized_with_the_checkpoints_statistics():
    d = demos()
    policy = build_for_demos(load_config(SFTConfig), d)
    # Statistics spanning every label (no clipping), different per dimension.
    policy.action_stats = ActionStats(d.actions.min(0) - 0.01, d.actions.max(0) + np.array([0.02] * 6 + [0.0]))
    rows = np.arange(0, len(d), 3)
    _, target = make_batch(policy, d, rows)
    label = d.chunk(rows, policy.config.chunk_size)
    # A model that outputs the normalized label exactly (regression head) predicts the label in metres.
    exact = predicted_actions(policy, SimpleNamespace(regression=target, action_logits=None))
    np.testing.assert_allclose(exact.numpy(), label, atol=1e-5)
    # Through the bins: off by at most half a bin of each dimension's q01..q99 range.
    tokens = policy.tokens_from_normalized(target)
    logits = torch.nn.functional.one_hot(tokens, policy.config.num_action_bins).float()
    binned = predicted_actions(policy, SimpleNamespace(regression=None, action_logits=logits)).numpy()
    stats = policy.action_stats
    half_bin = (stats.q99 - stats.q01) / policy.config.num_action_bins / 2
    assert np.all(np.abs(binned - label)[..., :6] <= half_bin[:6] + 1e-6)
    np.testing.assert_array_equal(np.sign(binned[..., 6]), label[..., 6])  # the gripper is not normalized
    assert not np.allclose(binned, label + 0.003)  # the check can tell millimetres apart


def test_train_sft_reports_action_error_per_phase(tmp_path):
    overrides = [f"root={tmp_path}", "optim.steps=4", "optim.batch_size=8", "optim.warmup_steps=1", "log_every=2",
                 "val_every=4", "checkpoint_every=4", "eval.enabled=false", "progress=false",
                 "data.val_fraction=0.2", "threads=1"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides), demos=demos())
    summary = json.loads((run / "sft_summary.json").read_text())
    phases = summary["action_error"]["phases"]
    assert summary["action_error"]["episodes"] == "validation"
    assert set(phases) == {*PHASES, "all", "start"}
    # One validation episode of 10 steps, chunks of 4 actions: 40 labelled actions.
    assert sum(phases[p]["steps"] for p in PHASES) == phases["all"]["steps"] == 40
    assert phases["start"]["steps"] == 1  # the first step of its one episode
    assert all(0 <= phases[p]["gripper_agreement"] <= 1 and phases[p]["translation_mm"] >= 0 for p in phases)
    val = next(m for m in read_metrics(run) if "val/loss" in m)
    assert val["val/action_error/all/translation_mm"] == pytest.approx(phases["all"]["translation_mm"], rel=1e-4)
    text = (run / "action_error.txt").read_text()
    assert "validation episodes" in text and "transport" in text


def test_episode_start_error_scores_the_first_step_of_each_episode_only():
    d = demos(episodes=3)
    policy = build_for_demos(load_config(SFTConfig, overrides=["model.use_regression_head=true"]), d)
    start = episode_start_error(policy, d, batch_size=2)
    assert start["steps"] == 3
    batch, _ = make_batch(policy, d, np.array([0, 10, 20]))
    with torch.no_grad():
        first = predicted_actions(policy, policy.forward(**batch))[:, 0].numpy()
    expected = np.linalg.norm(first[:, :3] - d.actions[[0, 10, 20], :3], axis=1).mean() * 1000
    assert start["translation_mm"] == pytest.approx(expected, rel=1e-4)
