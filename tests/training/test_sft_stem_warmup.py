"""The keypoint stem's warm-up before SFT, and the auxiliary loss's object term (up to the grasp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sft import write_demo_store

from simbridge.data.config import ConfigError, load_config
from simbridge.data.runs import read_metrics
from simbridge.training.sft import SFTConfig, train_sft
from simbridge.training.sft.auxiliary import KeypointWaypointHead, waypoint_loss
from simbridge.training.sft.config import AugmentConfig
from simbridge.training.sft.data import load_demos
from simbridge.training.sft.loop import build_for_demos
from simbridge.training.sft.stem_warmup import warm_up_keypoint_stem

torch.set_num_threads(1)


def test_object_term_counts_only_up_to_the_grasp():
    # After the grasp the object is in the hand: the object offsets of those rows carry no gradient.
    pred = torch.randn(4, 6, requires_grad=True)
    targets = torch.randn(4, 6) * 0.1
    before = torch.tensor([True, True, False, False])
    loss, metrics = waypoint_loss(pred, targets, before)
    loss.backward()
    assert torch.all(pred.grad[2:, :3] == 0) and torch.all(pred.grad[:2, :3] != 0)
    assert torch.all(pred.grad[:, 3:] != 0)  # the place offsets count on every row
    # The loss is the mean over the counted entries: 2 rows x 3 + 4 rows x 3.
    expected = ((pred - targets * 10).abs()[:2, :3].sum() + (pred - targets * 10).abs()[:, 3:].sum()) / 18
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(metrics) == {"aux/l1", "aux/place_error_mm", "aux/object_error_mm"}


def square_positions(demos) -> np.ndarray:
    """(N, 2) centre of the coloured square of each demonstration image, in [-1, 1]."""
    lit = demos.images[:, 0].max(axis=-1) > 0  # (N, S, S)
    ys, xs = np.indices(lit.shape[1:])
    n = lit.sum(axis=(1, 2))
    centre = np.stack([(lit * xs).sum(axis=(1, 2)) / n, (lit * ys).sum(axis=(1, 2)) / n], axis=1)
    return (centre / (lit.shape[1] - 1)) * 2 - 1


def test_warm_up_teaches_the_stem_where_the_square_is_and_touches_nothing_else(tmp_path):
    store = write_demo_store(tmp_path / "demos.zarr", episodes=16, fail_last=False)
    cfg = load_config(SFTConfig, overrides=[f"data.store={store}", "model.keypoint_stem=8", "seed=0"])
    demos = load_demos(store, 32)
    policy = build_for_demos(cfg, demos)
    # The object offset: 10 cm per unit of the square's position in the image (a function of the image).
    targets = np.zeros((len(demos), 6), np.float32)
    targets[:, :2] = 0.1 * square_positions(demos)
    waypoints = (targets, np.ones(len(demos), bool))
    head = KeypointWaypointHead(1, 8, hidden=64)
    head.attach(policy.keypoint_stem)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    logged: list[dict] = []
    final = warm_up_keypoint_stem(
        policy, head, demos, waypoints, steps=150, lr=3e-3, batch_size=32,
        augment=AugmentConfig(enabled=False), generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0), log=lambda step, m: logged.append({"step": step, **m}), log_every=10,
        progress=False,
    )  # fmt: skip
    errors = [m["warmup/object_error_mm"] for m in logged]
    assert len(logged) == 15 and final == {k: v for k, v in logged[-1].items() if k != "step"}
    assert np.mean(errors[-3:]) < 0.4 * np.mean(errors[:2]), errors  # it learns where the square is
    changed = {k.split(".")[0] for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"keypoint_stem"}
    head.detach()
    policy.keypoint_stem.keypoints(torch.zeros(1, 3, 32, 32))
    with pytest.raises(RuntimeError, match="no keypoints captured"):
        head(torch.zeros(1, 8))


def test_train_sft_warms_up_the_stem_first_and_resume_skips_it(tmp_path):
    store = write_demo_store(tmp_path / "demos.zarr")
    overrides = [f"data.store={store}", f"root={tmp_path}", "optim.steps=6", "optim.batch_size=8", "log_every=1",
                 "val_every=6", "checkpoint_every=3", "eval.enabled=false", "progress=false", "threads=1",
                 "model.keypoint_stem=8", "stem_warmup_steps=20", "stem_warmup_batch_size=8"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides))
    metrics = read_metrics(run)
    warm = [m for m in metrics if "warmup_step" in m]
    assert [m["warmup_step"] for m in warm] == [20] and "warmup/place_error_mm" in warm[0]
    assert metrics.index(warm[0]) < min(i for i, m in enumerate(metrics) if "train/loss" in m)
    resumed = train_sft(load_config(SFTConfig, overrides=[*overrides, "optim.steps=8", f"resume={run}"]))
    assert resumed == run and sum("warmup_step" in m for m in read_metrics(run)) == 1


def test_stem_warmup_config_errors():
    with pytest.raises(ConfigError, match=r"model\.keypoint_stem"):
        load_config(SFTConfig, overrides=["stem_warmup_steps=100", "model.keypoint_stem=0"])
    with pytest.raises(ConfigError, match="stem_warmup_steps"):
        load_config(SFTConfig, overrides=["stem_warmup_steps=-1"])
