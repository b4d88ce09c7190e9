"""VLA policies: shapes, act/evaluate agreement, masked decoding, save/load, normalization, LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simbridge.data.spec import ACTION_DIM, CameraSpec, Observation, ObservationSpec, PolicyContract
from simbridge.training.models import (
    NUM_BINS,
    POLICIES,
    ActionStats,
    InstructionTokenizer,
    VLAPolicy,
    bin_centers,
    build_policy,
    discretize,
)

torch.set_num_threads(1)
FAMILIES = sorted(POLICIES)


def make_obs(i: int, cams=("scene",), size=128, instruction=None) -> Observation:
    rng = np.random.default_rng(i)
    return Observation(
        images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cams},
        ee_pose=np.array([0.4 + 0.01 * i, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0], np.float32),
        gripper_width=0.04,
        joint_positions=np.zeros(7, np.float32),
        instruction=instruction
        or ["put the red cube on the plate", "lift the kiwi gently", "stack it"][i % 3],
    )


@pytest.fixture(scope="module")
def stats() -> ActionStats:
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.normal(0, 0.02, (500, 6)), rng.choice([-1.0, 1.0], (500, 1))], axis=1)
    proprio = rng.normal(0.3, 0.1, (500, 8))
    return ActionStats.from_actions(actions, proprio)


@pytest.fixture(scope="module", params=FAMILIES)
def policy(request, stats) -> VLAPolicy:
    contract = PolicyContract(chunk_size=2)
    return build_policy(request.param, "tiny", contract=contract, action_stats=stats, seed=0)


def test_shapes_and_dtypes(policy: VLAPolicy):
    obs = [make_obs(i) for i in range(3)]
    batch = policy.prepare(obs)
    size = policy.config.image_size
    assert (
        batch["pixel_values"].shape == (3, 1, 3, size, size) and batch["pixel_values"].dtype == torch.float32
    )
    assert batch["pixel_values"].min() >= 0.0 and batch["pixel_values"].max() <= 1.0
    assert (
        batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["attention_mask"].shape
    )
    assert batch["proprio"].shape == (3, 8)
    out = policy.act(batch)
    k = policy.contract.chunk_size
    assert out.actions.shape == (3, k, ACTION_DIM) and out.actions.dtype == torch.float32
    assert out.tokens.shape == (3, k * ACTION_DIM) and out.tokens.dtype == torch.long
    assert out.tokens.min() >= 0 and out.tokens.max() < NUM_BINS
    assert out.logprobs.shape == (3,) and out.values.shape == (3,)
    assert torch.all(out.logprobs <= 0)
    lo, hi = policy.action_stats.q01, policy.action_stats.q99
    acts = out.actions.numpy()
    assert np.all(acts >= lo - 1e-6) and np.all(acts <= hi + 1e-6)
    ev = policy.evaluate(batch, out.tokens)
    assert ev.entropy.shape == (3,) and torch.all(ev.entropy > 0)


@pytest.mark.parametrize("deterministic,temperature", [(False, 1.0), (False, 0.6), (True, 1.0)])
def test_act_and_evaluate_agree(policy: VLAPolicy, deterministic: bool, temperature: float):
    batch = policy.prepare([make_obs(i) for i in range(4)])
    gen = torch.Generator().manual_seed(1)
    out = policy.act(batch, deterministic=deterministic, temperature=temperature, generator=gen)
    with torch.no_grad():
        ev = policy.evaluate(batch, out.tokens, temperature=temperature)
    torch.testing.assert_close(ev.logprobs, out.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ev.values, out.values, atol=1e-5, rtol=0)
    # Different tokens give different log-probs (the comparison is not vacuous).
    other = (out.tokens + 17) % NUM_BINS
    with torch.no_grad():
        assert not torch.allclose(
            policy.evaluate(batch, other, temperature=temperature).logprobs, out.logprobs
        )


def test_greedy_decode_is_what_deterministic_act_decodes(policy: VLAPolicy):
    """greedy_decode (what the exporter traces) picks the argmax of every step's teacher-forced
    logits, and act(deterministic=True) returns its tokens and actions."""
    batch = policy.prepare([make_obs(i) for i in range(3)])
    with torch.no_grad():
        greedy = policy.greedy_decode(batch)
        ev = policy.evaluate(batch, greedy.tokens)
    torch.testing.assert_close(ev.action_logits.argmax(-1), greedy.tokens, atol=0, rtol=0)
    torch.testing.assert_close(greedy.logprobs, ev.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(greedy.values, ev.values, atol=1e-5, rtol=0)
    act = policy.act(batch, deterministic=True)
    torch.testing.assert_close(act.tokens, greedy.tokens, atol=0, rtol=0)
    torch.testing.assert_close(act.actions, greedy.actions, atol=0, rtol=0)
    assert policy.autoregressive == (policy.family == "openvla")


def test_tokenizer_rules_are_its_public_attributes():
    """The exporter copies these attributes into bundle manifests: they must be what encoding does."""
    tok = InstructionTokenizer.train(max_length=16)
    assert (tok.strip_chars, tok.lowercase, tok.padding_side) == (".?!", True, "left")
    assert tok.prompt("  Pick up the BLUE block!?") == "pick up the blue block"
    assert tok.encode("stack it")[: len(tok.prefix_ids)] == tok.prefix_ids == [tok.bos_id]
    tok.lowercase, tok.strip_chars = False, "!"
    assert tok.prompt("Stack it.!") == "Stack it."
    ids, mask = tok.batch(["stack it", "put the red cube on the plate"])
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and ids[0, 0] == tok.pad_id  # left padding


def test_sampling_varies_and_is_reproducible(policy: VLAPolicy):
    batch = policy.prepare([make_obs(0)] * 8)
    a = policy.act(batch, generator=torch.Generator().manual_seed(3)).tokens
    b = policy.act(batch, generator=torch.Generator().manual_seed(3)).tokens
    assert torch.equal(a, b)
    assert len({tuple(r.tolist()) for r in a}) > 1  # an untrained policy is close to uniform


def test_masked_decoding_never_emits_non_action_token(stats):
    policy = build_policy("openvla", "tiny", contract=PolicyContract(chunk_size=2), action_stats=stats)
    head = policy.language_model.get_output_embeddings()
    with torch.no_grad():  # make every text token far more likely than any action token
        head.weight[: policy.action_token_begin] *= 50.0
        head.weight[policy.action_token_begin :] *= 0.01
    batch = policy.prepare([make_obs(i) for i in range(6)])
    embeds, mask = policy.prefix(batch)
    with torch.no_grad():
        h = policy.run_lm(embeds, mask).last_hidden_state[:, -1]
        unmasked = head(h).argmax(-1)
    assert torch.all(unmasked < policy.action_token_begin), "the bias must favour text tokens for this test"
    for det in (True, False):
        out = policy.act(batch, deterministic=det, generator=torch.Generator().manual_seed(0))
        assert torch.all(out.token_ids >= policy.action_token_begin)
        assert torch.all(out.token_ids < policy.config.vocab_size)
        assert torch.equal(out.token_ids - policy.action_token_begin, out.tokens)


def test_save_load_round_trip(policy: VLAPolicy, tmp_path):
    batch = policy.prepare([make_obs(i) for i in range(3)])
    out = policy.act(batch, deterministic=True)
    policy.save_pretrained(tmp_path)
    loaded = VLAPolicy.from_pretrained(tmp_path)
    assert type(loaded) is type(policy) and not loaded.training
    assert loaded.contract == policy.contract
    np.testing.assert_array_equal(loaded.action_stats.q01, policy.action_stats.q01)
    np.testing.assert_array_equal(loaded.action_stats.proprio_mean, policy.action_stats.proprio_mean)
    batch2 = loaded.prepare([make_obs(i) for i in range(3)])
    for k in batch:
        assert torch.equal(batch[k], batch2[k]), k
    out2 = loaded.act(batch2, deterministic=True)
    assert torch.equal(out.tokens, out2.tokens)
    torch.testing.assert_close(out2.actions, out.actions, atol=0, rtol=0)
    torch.testing.assert_close(out2.logprobs, out.logprobs, atol=1e-6, rtol=0)
    torch.testing.assert_close(out2.values, out.values, atol=1e-6, rtol=0)


def test_multi_camera_and_unseen_instruction(stats):
    cams = ObservationSpec(cameras=(CameraSpec("scene", 96, 96), CameraSpec("wrist", 96, 96)))
    policy = build_policy("openvla-oft", "tiny", contract=PolicyContract(observation=cams, chunk_size=1),
                          action_stats=stats)  # fmt: skip
    obs = [
        make_obs(i, cams=("scene", "wrist"), size=96, instruction="place the zucchini inside the wok")
        for i in range(2)
    ]
    batch = policy.prepare(obs)
    assert batch["pixel_values"].shape[:2] == (2, 2)
    assert policy.tokenizer.unk_id not in batch["input_ids"].tolist()[0]
    assert policy.act(batch).actions.shape == (2, 1, 7)
    from simbridge.data.spec import ContractError

    with pytest.raises(ContractError, match="wrist"):
        policy.prepare([make_obs(0, cams=("scene",), size=96)])


def test_regression_head_used_for_deterministic_actions(stats):
    policy = build_policy("openvla-oft", "tiny", contract=PolicyContract(chunk_size=2), action_stats=stats,
                          use_regression_head=True)  # fmt: skip
    batch = policy.prepare([make_obs(0), make_obs(1)])
    det = policy.act(batch, deterministic=True)
    with torch.no_grad():
        reg = policy.forward(**{k: batch[k] for k in batch}).regression
    torch.testing.assert_close(det.normalized_actions.flatten(1), reg)
    # The log-probs still refer to the sampled/argmax bins, so RL can use the same policy.
    torch.testing.assert_close(policy.evaluate(batch, det.tokens).logprobs, det.logprobs, atol=1e-5, rtol=0)


def test_lora_option_trains_adapters_only_and_round_trips(stats, tmp_path):
    policy = build_policy("openvla-oft", "tiny", contract=PolicyContract(), action_stats=stats, lora_rank=4)
    lm_trainable = [n for n, p in policy.language_model.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    assert all(p.requires_grad for p in policy.value_head.parameters())
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter before comparing
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    batch = policy.prepare([make_obs(0), make_obs(1)])
    out = policy.act(batch, deterministic=True)
    policy.save_pretrained(tmp_path)
    loaded = VLAPolicy.from_pretrained(tmp_path)
    torch.testing.assert_close(
        loaded.act(batch, deterministic=True).logprobs, out.logprobs, atol=1e-5, rtol=0
    )
    before = loaded.evaluate(batch, out.tokens).logprobs
    assert loaded.merge_lora() > 0
    torch.testing.assert_close(loaded.evaluate(batch, out.tokens).logprobs, before, atol=1e-4, rtol=0)


def test_action_normalization_round_trip(stats):
    rng = np.random.default_rng(1)
    inside = rng.uniform(stats.q01, stats.q99, (200, 7)).astype(np.float32)
    inside[:, 6] = rng.choice([-1.0, 1.0], 200)
    norm = stats.normalize(inside)
    assert norm.min() >= -1 and norm.max() <= 1
    np.testing.assert_allclose(stats.denormalize(norm), inside, atol=1e-6)
    # torch and numpy agree
    torch.testing.assert_close(stats.normalize(torch.from_numpy(inside)), torch.from_numpy(norm))
    # Outside the 1st/99th percentiles: clipped to the boundary.
    far = stats.q99 + 1.0
    np.testing.assert_allclose(stats.denormalize(stats.normalize(far[None]))[0, :6], stats.q99[:6], atol=1e-6)
    # Through the 256 bins: error at most half a bin.
    bins = discretize(torch.from_numpy(norm))
    back = stats.denormalize(bin_centers(bins).numpy())
    half_bin = (stats.q99 - stats.q01) / NUM_BINS
    assert np.all(np.abs(back - inside)[:, :6] <= half_bin[:6] + 1e-6)
    np.testing.assert_array_equal(np.sign(back[:, 6]), inside[:, 6])
    # persistence
    again = ActionStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.q99, stats.q99)


def test_action_stats_reject_bad_input():
    with pytest.raises(ValueError, match="no finite actions"):
        ActionStats.from_actions(np.full((3, 7), np.nan))
    with pytest.raises(ValueError, match="q99 < q01"):
        ActionStats(q01=np.ones(7), q99=np.zeros(7))
    constant = ActionStats.from_actions(np.zeros((10, 7)))  # degenerate range: no division by zero
    assert np.all(np.isfinite(constant.normalize(np.ones((1, 7)))))


def test_instruction_tokenizer_handles_unseen_words_and_saves(tmp_path):
    tok = InstructionTokenizer.train(["put the carrot on the plate"], vocab_size=400, max_length=24)
    ids = tok.encode("Put the Dragonfruit on the plate.")
    assert tok.unk_id not in ids and ids[0] == tok.bos_id
    assert "dragonfruit" in tok.decode(ids)
    assert len(tok.encode("word " * 100)) == 24
    tok.save(tmp_path)
    again = InstructionTokenizer.load(tmp_path, max_length=24)
    assert again.encode("lift the cube") == tok.encode("lift the cube")
    ids_batch, mask = tok.batch(["lift the cube", "put the red cube on the plate"])
    assert mask[0, 0] == 0 and mask[1].all() and ids_batch[0, 0] == tok.pad_id  # left padding


def test_build_policy_rejects_unknown_names():
    with pytest.raises(ValueError, match="openvla-oft"):
        build_policy("rt-2", "tiny")
    with pytest.raises(ValueError, match="tiny"):
        build_policy("openvla", "huge")


def test_every_policy_uses_prismatics_sequence_layout(policy: VLAPolicy):
    """<bos>, the vision tokens (+ proprio for OFT), the rest of the prompt: padded rows included."""
    batch = policy.prepare([make_obs(0), make_obs(2)])  # the second prompt is shorter: left-padded
    assert policy.config.sequence_layout == "prismatic"
    with torch.no_grad():
        embeds, mask = policy.prefix(batch)
        vision = policy.vision_tokens(batch["pixel_values"])
    n_vis = vision.shape[1] + int(policy.proprio_proj is not None)
    for row in range(2):
        keep = mask[row].bool()
        seq, ids = embeds[row][keep], batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert ids[0] == policy.tokenizer.bos_id
        torch.testing.assert_close(seq[0], policy.embed_tokens(ids[:1])[0])
        torch.testing.assert_close(seq[1 : 1 + vision.shape[1]], vision[row])
        torch.testing.assert_close(seq[1 + n_vis :], policy.embed_tokens(ids[1:]))
        assert torch.equal((mask[row].cumsum(-1) - 1)[keep], torch.arange(len(seq)))  # positions 0..L-1
