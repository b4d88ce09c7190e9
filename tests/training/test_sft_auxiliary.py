"""SFT's auxiliary waypoint targets: derived from grasp and release steps, learned, and SFT-only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sft import write_demo_store

from simbridge.data.config import ConfigError, load_config
from simbridge.data.runs import read_metrics
from simbridge.training.checkpoint import list_checkpoints, load_checkpoint, load_training_state
from simbridge.training.sft import SFTConfig, train_sft
from simbridge.training.sft.auxiliary import WaypointHead, auxiliary_loss, waypoint_targets

torch.set_num_threads(1)


def episode(tcp_xyz: list[list[float]], gripper: list[float]) -> tuple[np.ndarray, np.ndarray]:
    proprio = np.zeros((len(tcp_xyz), 8), np.float32)
    proprio[:, :3] = tcp_xyz
    actions = np.zeros((len(tcp_xyz), 7), np.float32)
    actions[:, 6] = gripper
    return proprio, actions


def test_targets_follow_the_object_from_grasp_to_release():
    # Reach (2 steps), close at step 2, carry (steps 3-4), open at step 5, retreat.
    tcp = [[0.0, 0, 0.3], [0.1, 0, 0.2], [0.2, 0, 0.1], [0.2, 0, 0.2], [0.4, 0, 0.2], [0.5, 0, 0.1], [0.5, 0, 0.3]]
    proprio, actions = episode(tcp, [1, 1, -1, -1, -1, 1, 1])
    # A second episode that never closes: its last TCP position stands for both points.
    p2, a2 = episode([[0, 0, 0.3], [0, 0.1, 0.3]], [1, 1])
    targets, before = waypoint_targets(
        np.concatenate([proprio, p2]), np.concatenate([actions, a2]), np.array([7] * 7 + [9] * 2)
    )
    grasp, place = np.array([0.2, 0, 0.1]), np.array([0.5, 0, 0.1])
    tcp = np.array(tcp)
    np.testing.assert_allclose(targets[:3, :3], grasp - tcp[:3], atol=1e-6)  # until the grasp
    np.testing.assert_allclose(targets[3:5, :3], 0.0, atol=1e-6)  # in the hand
    np.testing.assert_allclose(targets[5:7, :3], place - tcp[5:7], atol=1e-6)  # released on the target
    np.testing.assert_allclose(targets[:7, 3:], place - tcp, atol=1e-6)
    assert before.tolist()[:7] == [True, True, True, False, False, False, False]
    np.testing.assert_allclose(targets[7, :3], [0, 0.1, 0], atol=1e-6)
    np.testing.assert_allclose(targets[8], 0.0, atol=1e-6)


def test_head_learns_offsets_and_reports_millimetres():
    torch.manual_seed(0)
    head = WaypointHead(16)
    hidden = torch.randn(64, 4, 16)
    targets = hidden[:, :, :6].mean(1) * 0.05  # metres, a function of the states
    before = torch.arange(64) % 2 == 0
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss, metrics = auxiliary_loss(head, hidden, targets, before)
        first = first or metrics
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert metrics["aux/object_error_mm"] < 0.3 * first["aux/object_error_mm"]
    assert metrics["aux/place_error_mm"] < 0.3 * first["aux/place_error_mm"]
    with pytest.raises(ValueError, match="action-query states"):
        auxiliary_loss(head, None, targets, before)


def test_train_sft_with_aux_weight_logs_it_resumes_and_exports_without_the_head(tmp_path):
    store = write_demo_store(tmp_path / "demos.zarr")
    overrides = [f"data.store={store}", f"root={tmp_path}", "optim.steps=40", "optim.batch_size=8",
                 "optim.warmup_steps=2", "log_every=1", "val_every=20", "checkpoint_every=20",
                 "eval.enabled=false", "progress=false", "data.val_fraction=0.2", "threads=1",
                 "model.keypoint_stem=8", "aux_weight=1.0", "optim.lr=1e-3"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides))
    metrics = read_metrics(run)
    l1 = [m["train/aux/l1"] for m in metrics if "train/aux/l1" in m]
    assert len(l1) == 40 and np.mean(l1[-5:]) < 0.5 * np.mean(l1[:5])  # it learns the geometry
    kp = [m["train/aux/keypoint_l1"] for m in metrics if "train/aux/keypoint_l1" in m]
    assert len(kp) == 40 and np.mean(kp[-5:]) < 0.5 * np.mean(kp[:5])  # and so do the keypoints
    assert any("val/aux/object_error_mm" in m and "val/aux/keypoint_object_error_mm" in m for m in metrics)
    ckpt = list_checkpoints(run)[-1]
    assert not any("aux" in k for k in load_checkpoint(ckpt).state_dict())  # the policy is unchanged
    assert "aux_head" in load_training_state(ckpt)
    resumed = train_sft(load_config(SFTConfig, overrides=[*overrides, "optim.steps=44", f"resume={run}"]))
    assert list_checkpoints(resumed)[-1].name == "iter_000044"
    with pytest.raises(ConfigError, match="aux_weight"):
        train_sft(load_config(SFTConfig, overrides=[*overrides[:-2], "optim.steps=48", f"resume={run}"]))


def test_aux_weight_config_errors():
    with pytest.raises(ConfigError, match="aux_weight"):
        load_config(SFTConfig, overrides=["aux_weight=-1"])
    with pytest.raises(ConfigError, match="aux_weight"):
        load_config(SFTConfig, overrides=["aux_weight=1", "model.family=openvla"])
