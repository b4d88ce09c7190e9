"""The spatial-softmax keypoint stem: localization, token layout, act/evaluate agreement, ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simbridge.data.spec import CameraSpec, Observation, ObservationSpec, PolicyContract
from simbridge.training.models import POLICIES, ActionStats, VLAConfig, build_policy
from simbridge.training.models.keypoints import KeypointStem, SpatialSoftmax

torch.set_num_threads(1)
CONTRACT = PolicyContract(
    observation=ObservationSpec(cameras=(CameraSpec("scene", 64, 64), CameraSpec("wrist", 64, 64))), chunk_size=2
)


def make_obs(i: int) -> Observation:
    rng = np.random.default_rng(i)
    return Observation(
        images={c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in ("scene", "wrist")},
        ee_pose=np.array([0.4, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0], np.float32),
        gripper_width=0.04,
        joint_positions=np.zeros(7, np.float32),
        instruction="put the red cube on the plate",
    )


def test_spatial_softmax_finds_the_peak() -> None:
    """A sharp peak at column 12, row 3 of a 16x16 map is read as its (x, y) in [-1, 1]."""
    maps = torch.full((1, 2, 16, 16), -50.0)
    maps[0, 0, 3, 12] = 50.0
    maps[0, 1, 15, 0] = 50.0
    points = SpatialSoftmax()(maps)[0]
    step = 2.0 / 15
    torch.testing.assert_close(points[0], torch.tensor([-1 + 12 * step, -1 + 3 * step]))
    torch.testing.assert_close(points[1], torch.tensor([-1.0, 1.0]))


def test_keypoints_follow_a_moving_object() -> None:
    """Trained for a few steps to report a bright square's position, the stem's keypoints move with
    it: localization is what the stem is for, so this must be learnable quickly."""
    torch.manual_seed(0)
    stem = KeypointStem(num_keypoints=8, tokens=1, hidden=16, width=8)
    head = torch.nn.Linear(16, 2)
    opt = torch.optim.Adam([*stem.parameters(), *head.parameters()], lr=3e-3)

    def batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xy = torch.randint(4, 60, (n, 2), generator=gen)
        img = torch.zeros(n, 3, 64, 64)
        for i, (x, y) in enumerate(xy.tolist()):
            img[i, :, y - 3 : y + 3, x - 3 : x + 3] = 1.0
        return img, (xy.float() - 32) / 32

    gen = torch.Generator().manual_seed(0)
    test_img, test_xy = batch(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = (head(stem(test_img)[:, 0]) - test_xy).abs().mean().item()
    for _ in range(150):
        img, xy = batch(32, gen)
        loss = (head(stem(img)[:, 0]) - xy).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (head(stem(test_img)[:, 0]) - test_xy).abs().mean().item()
    assert after < 0.1 < before, (before, after)  # < 3 px mean error on a 64 px image


@pytest.mark.parametrize("family", sorted(POLICIES))
def test_policy_with_stem_tokens_and_log_probs(family: str) -> None:
    plain = build_policy(family, "tiny", contract=CONTRACT, seed=0)
    policy = build_policy(family, "tiny", contract=CONTRACT, seed=0, keypoint_stem=16, keypoint_tokens=2)
    assert policy.keypoint_stem is not None and plain.keypoint_stem is None
    batch = policy.prepare([make_obs(i) for i in range(3)])
    per_camera = plain.vision_tokens(batch["pixel_values"]).shape[1] // 2
    vision = policy.vision_tokens(batch["pixel_values"])
    assert vision.shape == (3, 2 * (per_camera + 2), policy.config.hidden_size)
    gen = torch.Generator().manual_seed(0)
    out = policy.act(batch, temperature=0.7, generator=gen)
    with torch.no_grad():
        ev = policy.evaluate(batch, out.tokens, temperature=0.7)
    torch.testing.assert_close(ev.logprobs, out.logprobs, atol=1e-5, rtol=0)
    # The stem is trained by the action loss: its parameters get gradients.
    ev = policy.evaluate(batch, out.tokens)
    ev.logprobs.sum().backward()
    grads = [p.grad for p in policy.keypoint_stem.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_stem_config_is_validated_and_saved(tmp_path) -> None:
    with pytest.raises(ValueError, match="keypoint_stem"):
        build_policy("openvla-oft", "tiny", contract=CONTRACT, keypoint_stem=-1)
    stats = ActionStats.from_action_spec(CONTRACT.action)
    policy = build_policy("openvla-oft", "tiny", contract=CONTRACT, action_stats=stats, keypoint_stem=8)
    policy.save_pretrained(tmp_path)
    assert VLAConfig.from_pretrained(tmp_path).keypoint_stem == 8
    loaded = type(policy).from_pretrained(tmp_path)
    batch = policy.prepare([make_obs(0)])
    with torch.no_grad():
        torch.testing.assert_close(loaded.greedy_decode(batch).actions, policy.greedy_decode(batch).actions)


def test_stem_exports_with_parity(tmp_path) -> None:
    """The exporter traces the stem with the rest of greedy decoding; parity is checked by export."""
    from simbridge.deploy.bundle import verify_bundle
    from simbridge.deploy.export import ExportOptions, export_checkpoint
    from simbridge.deploy.runtime import BundlePolicy
    from simbridge.training.checkpoint import save_checkpoint

    policy = build_policy("openvla-oft", "tiny", contract=CONTRACT, seed=0, keypoint_stem=8)
    ckpt = save_checkpoint(policy, tmp_path / "run", 1, metrics={})
    result = export_checkpoint(ckpt, tmp_path / "bundle", options=ExportOptions(parity_samples=4),
                               progress=lambda _m: None)  # fmt: skip
    manifest = verify_bundle(result.bundle)
    assert manifest["parity"]["passed"] and manifest["parity"]["token_mismatches"] == 0
    bundle = BundlePolicy(result.bundle)
    obs = make_obs(5)
    with torch.no_grad():
        expected = policy.greedy_decode(policy.prepare([obs])).actions[0].numpy()
    np.testing.assert_allclose(bundle.predict(obs), expected, atol=1e-4)
