"""SFT: overfitting a small batch, an end-to-end run on a real episode store, resume, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simbridge.data.config import ConfigError, load_config
from simbridge.data.runs import read_metrics
from simbridge.data.spec import CameraSpec, EpisodeMeta, Observation
from simbridge.data.store import EpisodeWriter
from simbridge.training.checkpoint import list_checkpoints, load_checkpoint
from simbridge.training.sft import (
    AugmentConfig,
    SFTConfig,
    augment_images,
    build_for_demos,
    load_demos,
    make_batch,
    sft_loss,
    soft_bin_targets,
    split_episodes,
    train_sft,
)

torch.set_num_threads(1)
INSTRUCTIONS = ["put the red cube on the plate", "put the green cube in the bowl"]


def write_demo_store(path, episodes: int = 6, steps: int = 10, size: int = 64, fail_last: bool = True):
    """Synthetic demos: a coloured square whose position tells where to move; gripper closes midway."""
    with EpisodeWriter(path, (CameraSpec("scene", size, size),), chunk_steps=8, robot="synthetic") as w:
        for e in range(episodes):
            rng = np.random.default_rng(e)
            goal = rng.uniform(-1, 1, 2)
            for t in range(steps):
                img = np.zeros((size, size, 3), np.uint8)
                cx, cy = (size // 2 + goal * size // 3 * (1 - t / steps)).astype(int)
                img[max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4, e % 2] = 255
                action = np.array([0.03 * goal[0], 0.03 * goal[1], -0.01, 0, 0, 0.05 * (e % 3 - 1),
                                   1.0 if t < steps // 2 else -1.0], np.float32)  # fmt: skip
                obs = Observation(
                    images={"scene": img},
                    ee_pose=np.array([0.4 + 0.01 * t, 0, 0.2, 1, 0, 0, 0], np.float32),
                    gripper_width=0.08 if t < steps // 2 else 0.02,
                    joint_positions=np.zeros(7, np.float32),
                    instruction=INSTRUCTIONS[e % 2],
                    timestamp=0.1 * t,
                )
                w.add_step(obs, action)
            success = not (fail_last and e == episodes - 1)
            w.end_episode(
                EpisodeMeta(instruction=INSTRUCTIONS[e % 2], success=success, seed=e, policy_id="expert")
            )
    return path


def fit_small_batch(policy, batch, target, steps: int = 60, **loss_options) -> list[dict]:
    """Adam steps on one fixed batch; the metrics of every step."""
    optim = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        loss, metrics = sft_loss(policy, batch, target, **loss_options)
        optim.zero_grad()
        loss.backward()
        optim.step()
        history.append(metrics)
    return history


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_demo_store(tmp_path_factory.mktemp("demos") / "demos.zarr")


def test_load_demos_filters_and_chunks(store):
    demos = load_demos(store, image_size=32, only_successful=True)
    assert len(demos.instructions) == 5 and len(demos) == 50  # the failed episode is left out
    assert demos.images.shape == (50, 1, 32, 32, 3) and demos.images.dtype == np.uint8
    chunk = demos.chunk(np.array([0, 9]), 4)
    np.testing.assert_array_equal(chunk[0], demos.actions[0:4])
    np.testing.assert_array_equal(chunk[1], np.repeat(demos.actions[9:10], 4, axis=0))  # padded at the end
    sub = demos.subset(np.array([1, 3]))
    assert len(sub) == 20 and sub.episode_end.tolist() == [10] * 10 + [20] * 10
    assert len(load_demos(store, 32, only_successful=False).instructions) == 6
    with pytest.raises(ConfigError, match="does not exist"):
        load_demos(store.parent / "missing.zarr", 32)
    with pytest.raises(ConfigError, match="wrist"):
        load_demos(store, 32, cameras=["wrist"])


def test_training_images_are_resized_as_the_policy_resizes_them_at_run_time(tmp_path):
    """SFT trains on the pixels the deployed policy sees (one resize, not cv2 in one place and
    torch in the other)."""
    store = write_demo_store(tmp_path / "big.zarr", episodes=2, steps=3, size=128, fail_last=False)
    demos = load_demos(store, image_size=64)
    policy = build_for_demos(load_config(SFTConfig), demos)
    from simbridge.data.store import EpisodeStore

    raw = EpisodeStore(store).episode(0)["image_scene"]  # (3, 128, 128, 3)
    at_run_time = policy.prepare_images(raw[:, None])  # float in [0, 1], (3, 1, 3, 64, 64)
    at_training = policy.prepare_images(demos.images[:3])  # already 64 px: no second resize
    assert demos.images.shape[1:] == (1, 64, 64, 3)
    assert (at_training - at_run_time).abs().max() <= 0.5 / 255 + 1e-6  # uint8 rounding only


def test_split_episodes_is_disjoint_and_covers_all():
    train, val = split_episodes(10, 0.2, seed=0)
    assert len(val) == 2 and set(train) | set(val) == set(range(10)) and not set(train) & set(val)
    assert len(split_episodes(3, 0.1, 0)[1]) == 1  # at least one validation episode


@pytest.mark.parametrize("family,regression", [("openvla-oft", True), ("openvla", False)])
def test_tiny_model_overfits_a_small_batch(store, family, regression):
    cfg = load_config(
        SFTConfig, overrides=[f"model.family={family}", f"model.use_regression_head={regression}"]
    )
    demos = load_demos(store, image_size=64)
    torch.manual_seed(0)
    policy = build_for_demos(cfg, demos)
    policy.train()
    rows = np.arange(0, len(demos), 6)[:8]
    batch, target = make_batch(policy, demos, rows)
    history = fit_small_batch(policy, batch, target)
    losses, metrics = [m["ce"] for m in history], history[-1]
    assert losses[-1] < losses[0] / 10, losses[::10]
    assert metrics["token_accuracy"] > 0.75, metrics
    policy.eval()
    # Decoding (autoregressive with KV cache, or parallel) reproduces the demonstrated action bins.
    out = policy.act(batch, deterministic=True)
    tokens = torch.floor((target + 1) * 128).clamp(0, 255).long()
    assert (out.tokens == tokens).float().mean() > 0.7, (out.tokens == tokens).float().mean()


@pytest.mark.parametrize("use_proprio", [False, True, None])
def test_model_use_proprio_lets_the_policy_read_its_arm_state(store, use_proprio):
    """With ``model.use_proprio`` (the default of openvla-oft) the policy sees the proprio vector:
    an action that only the arm state explains (the images are blank) is learnt with it and cannot
    be learnt without it."""
    overrides = [] if use_proprio is None else [f"model.use_proprio={str(use_proprio).lower()}"]
    cfg = load_config(SFTConfig, overrides=overrides)
    use_proprio = True if use_proprio is None else use_proprio
    demos = load_demos(store, image_size=64)
    rng = np.random.default_rng(0)
    side = rng.choice([-1.0, 1.0], len(demos)).astype(np.float32)
    demos.images[:] = 0
    demos.proprio[:, 0] = 0.4 + 0.1 * side  # the TCP is left or right of the centre...
    demos.actions[:, 0] = 0.03 * side  # ...and the action moves it further out
    torch.manual_seed(0)
    policy = build_for_demos(cfg, demos)
    assert (policy.proprio_proj is not None) == use_proprio
    policy.train()
    rows = np.arange(len(demos))[:16]
    batch, target = make_batch(policy, demos, rows)
    fit_small_batch(policy, batch, target, steps=60)
    policy.eval()
    # The first action of every chunk: is x moved to the right side?
    x = policy.act(batch, deterministic=True).actions[:, 0, 0].numpy()
    right = float((np.sign(x) == side[rows]).mean())
    if use_proprio:
        assert right == 1.0, x
    else:  # blank images: only the instruction differs, so one guess per instruction at best
        by_instruction = [side[rows][demos.episode[rows] % 2 == k] for k in (0, 1)]
        best = sum(max((s > 0).sum(), (s < 0).sum()) for s in by_instruction) / len(rows)
        assert best < 1.0 and right <= best, (x, best)


def test_init_from_fine_tunes_a_saved_policy_and_refuses_proprio_it_lacks(store, tmp_path):
    demos = load_demos(store, image_size=64)
    torch.manual_seed(0)
    saved = build_for_demos(load_config(SFTConfig, overrides=["model.use_proprio=false"]), demos)
    saved.save_pretrained(tmp_path / "pretrained")
    init = f"model.init_from={tmp_path / 'pretrained'}"
    policy = build_for_demos(load_config(SFTConfig, overrides=[init]), demos)
    for (name, a), b in zip(saved.state_dict().items(), policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match=r"use_proprio=true.*no proprio projector"):
        build_for_demos(load_config(SFTConfig, overrides=[init, "model.use_proprio=true"]), demos)


def test_soft_bin_targets_are_gaussians_around_the_target_bin(store):
    demos = load_demos(store, image_size=64)
    policy = build_for_demos(load_config(SFTConfig), demos)
    rows = np.arange(0, len(demos), 6)[:8]
    batch, target = make_batch(policy, demos, rows)
    soft = soft_bin_targets(policy, target, sigma_bins=2.0)
    assert soft.shape == (*target.shape, 256)
    torch.testing.assert_close(soft.sum(-1), torch.ones(target.shape))
    # The peak is the target's bin (or its neighbour, for a target on a bin edge such as 0.0).
    assert ((soft.argmax(-1) - policy.tokens_from_normalized(target)).abs() <= 1).all()
    # About 2 bins wide: the neighbours two bins away keep exp(-1/2) of the peak (within half a bin).
    peak = soft.max(-1).values
    assert ((soft > peak[..., None] * 0.2).sum(-1) <= 9).all()
    # A very narrow Gaussian is the one-hot cross-entropy.
    with torch.no_grad():
        hard, _ = sft_loss(policy, batch, target)
        narrow, _ = sft_loss(policy, batch, target, bin_sigma=0.05)
    torch.testing.assert_close(narrow, hard, atol=0.05, rtol=0.02)


def test_soft_targets_still_learn_the_demonstrated_bins(store):
    demos = load_demos(store, image_size=64)
    torch.manual_seed(0)
    policy = build_for_demos(load_config(SFTConfig), demos)
    policy.train()
    batch, target = make_batch(policy, demos, np.arange(0, len(demos), 6)[:8])
    history = fit_small_batch(policy, batch, target, bin_sigma=0.5)
    l1, metrics = [m["action_l1_norm"] for m in history], history[-1]
    assert l1[-1] < l1[0] / 4, l1[::10]
    assert metrics["token_accuracy"] > 0.5, metrics


def test_augmentation_changes_images_but_keeps_range():
    x = torch.rand(4, 2, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    y = augment_images(x, AugmentConfig(), gen)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)
    assert torch.equal(augment_images(x, AugmentConfig(enabled=False), gen), x)


def test_hue_rotation_keeps_grey_and_luma_and_turns_colours():
    from simbridge.training.sft.data import rotate_hue

    grey = torch.full((1, 3, 2, 2), 0.4)
    torch.testing.assert_close(rotate_hue(grey, torch.tensor([0.3])), grey)  # no colour, nothing to rotate
    red = torch.tensor([0.8, 0.1, 0.1]).reshape(1, 3, 1, 1)
    luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    turned = rotate_hue(red, torch.tensor([1 / 3]))  # a third of the wheel: red -> green-ish
    torch.testing.assert_close((turned * luma).sum(1), (red * luma).sum(1))
    assert turned[0, 1, 0, 0] > turned[0, 0, 0, 0]
    torch.testing.assert_close(rotate_hue(red, torch.tensor([1.0])), red)  # a full turn


def test_domain_randomization_is_off_by_default_and_draws_per_image():
    x = torch.rand(8, 2, 3, 16, 16)
    base = AugmentConfig(shift_px=0)
    dr = AugmentConfig(shift_px=0, hue=0.02, channel_gain=0.15, gamma=0.3, noise_std=0.02)
    a = augment_images(x, base, torch.Generator().manual_seed(1))
    b = augment_images(x, AugmentConfig(shift_px=0, hue=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # the defaults draw exactly what they always drew
    y = augment_images(x, dr, torch.Generator().manual_seed(1))
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(a, y)
    gains = (y.mean(dim=(3, 4)) / a.mean(dim=(3, 4)).clamp_min(1e-6)).reshape(16, 3)
    assert gains.std(dim=0).min() > 0.01  # each image and channel gets its own factors
    with pytest.raises(ConfigError, match="channel_gain"):
        load_config(SFTConfig, overrides=["augment.channel_gain=1.5"])
    with pytest.raises(ConfigError, match="hue"):
        load_config(SFTConfig, overrides=["augment.hue=0.7"])


def test_proprio_dropout_zeroes_whole_samples_of_the_model_input_only():
    from simbridge.training.sft.data import drop_proprio

    batch = {"proprio": torch.ones(400, 8), "pixel_values": torch.zeros(400, 1, 3, 4, 4)}
    out = drop_proprio(batch, AugmentConfig(proprio_dropout=0.25), torch.Generator().manual_seed(0))
    dropped = (out["proprio"] == 0).all(dim=1)
    assert ((out["proprio"] == 0) | (out["proprio"] == 1)).all() and (out["proprio"] == 0).any(dim=1).eq(dropped).all()
    assert 70 < int(dropped.sum()) < 130  # about a quarter of the samples
    assert torch.equal(batch["proprio"], torch.ones(400, 8)) and out["pixel_values"] is batch["pixel_values"]
    assert drop_proprio(batch, AugmentConfig(), torch.Generator()) is batch  # off by default
    with pytest.raises(ConfigError, match="proprio_dropout"):
        load_config(SFTConfig, overrides=["augment.proprio_dropout=1.5"])


def test_keep_checkpoints_prunes_to_the_newest_and_the_lowest_validation_loss(store, tmp_path):
    overrides = [f"data.store={store}", f"root={tmp_path}", "optim.steps=9", "optim.batch_size=8",
                 "optim.warmup_steps=2", "val_every=3", "checkpoint_every=3", "keep_checkpoints=1",
                 "eval.enabled=false", "progress=false", "data.val_fraction=0.2", "threads=1"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides))
    losses = {m["step"]: m["val/loss"] for m in read_metrics(run) if "val/loss" in m}
    best = min((3, 6, 9), key=lambda s: losses[s])
    assert [c.name for c in list_checkpoints(run)] == [f"iter_{s:06d}" for s in sorted({best, 9})]


def test_train_sft_end_to_end_and_resume(store, tmp_path):
    overrides = [f"data.store={store}", f"root={tmp_path}", "optim.steps=12", "optim.batch_size=8",
                 "optim.warmup_steps=2", "log_every=2", "val_every=6", "checkpoint_every=6", "eval.enabled=false",
                 "progress=false", "data.val_fraction=0.2", "threads=1"]  # fmt: skip
    run = train_sft(load_config(SFTConfig, overrides=overrides))
    ckpts = list_checkpoints(run)
    assert [c.name for c in ckpts] == ["iter_000006", "iter_000012"]
    announce = [
        json.loads(line) for line in (run / "checkpoints" / "announce.jsonl").read_text().splitlines()
    ]
    assert [a["iteration"] for a in announce] == [6, 12]
    metrics = read_metrics(run)
    assert any("val/loss" in m for m in metrics) and any("train/ce" in m for m in metrics)
    assert (
        (run / "loss.png").stat().st_size > 0
        and (run / "config.yaml").is_file()
        and list((run / "tb").iterdir())
    )
    summary = json.loads((run / "sft_summary.json").read_text())
    assert summary["num_train_episodes"] == 4 and summary["num_val_episodes"] == 1 and summary["steps"] == 12
    policy = load_checkpoint(ckpts[-1])
    assert policy.action_stats.num_samples == 40  # stats from the training episodes only
    # Resume: continues from step 12 to 18 in the same run directory.
    resumed = train_sft(load_config(SFTConfig, overrides=[*overrides, "optim.steps=18", f"resume={run}"]))
    assert resumed == run
    assert [c.name for c in list_checkpoints(run)][-1] == "iter_000018"
    steps = [m["step"] for m in read_metrics(run) if "train/loss" in m]
    assert steps == sorted(steps) and steps[-1] == 18 and 14 in steps


def test_action_label_policy_action_needs_recorded_proposals(store):
    """These synthetic demos record no ``policy_action``: imitating it is refused by name."""
    with pytest.raises(ConfigError, match=r"data\.action_label=policy_action.*no policy_action"):
        load_demos(store, 64, action_label="policy_action")
    with pytest.raises(ConfigError, match="action_label"):
        load_config(SFTConfig, overrides=["data.action_label=proposal"])


def test_sft_config_errors():
    with pytest.raises(ConfigError, match="preset"):
        load_config(SFTConfig, overrides=["model.preset=huge"])
    with pytest.raises(ConfigError, match="regression"):
        load_config(SFTConfig, overrides=["model.family=openvla", "model.use_regression_head=true"])
    with pytest.raises(ConfigError, match="bin_sigma"):
        load_config(SFTConfig, overrides=["bin_sigma=-1"])
    with pytest.raises(ConfigError, match="resume"):
        train_sft(load_config(SFTConfig, overrides=["resume=/nonexistent/run"]))


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    from simbridge.data.cli import main

    def cli(*args) -> int:
        try:
            return main(["train", *args])
        except SystemExit as exc:  # argparse exits 2 on bad arguments
            return int(exc.code)

    assert cli("sft", "--no-such-flag") == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert cli("nope") == 2 and "invalid choice" in capsys.readouterr().err
    assert cli("sft", "optim.lr=-1") == 2 and "optim.lr" in capsys.readouterr().err
    assert cli("sft", f"data.store={tmp_path / 'missing.zarr'}", "eval.enabled=false") == 2
    assert "missing.zarr" in capsys.readouterr().err
    assert cli("sft", "--print-config", "optim.steps=7") == 0 and "steps: 7" in capsys.readouterr().out
