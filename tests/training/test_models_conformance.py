"""Conformance of converted OpenVLA / OpenVLA-OFT checkpoints with the upstream definition.

The checkpoints are small and random but in the exact upstream layout
(:mod:`simbridge.training.models.upstream_fixture`). The reference below is written here from
the published definition, sharing no code with the policy: timm's ViT up to the second-to-last
block (exact GELU, LayerScale ``scale_factor``), the fused projector, Prismatic's sequence
(``<s>``, patches [, proprio], the rest of the prompt; positions 0..L-1), greedy generation over
the whole vocabulary (OpenVLA) or OFT's single bidirectional pass (zero action embeddings +
``</s>``, states ``[NUM_PATCHES + NUM_PROMPT_TOKENS, +7K)``, the L1 MLP-ResNet), OpenVLA's bin
decoding and unnormalization, and Prismatic's PIL processor.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM

from simbridge.data.spec import Observation
from simbridge.training.models import OpenVLAOFTPolicy, OpenVLAPolicy
from simbridge.training.models.conformance import DOCUMENTED_PROMPT_IDS, DOCUMENTED_TASK, check_checkpoint
from simbridge.training.models.images import resize_images
from simbridge.training.models.loaders import load_pretrained_policy
from simbridge.training.models.upstream_fixture import write_openvla_checkpoint

torch.set_num_threads(1)
HEADS, PATCH, SIZE, VOCAB = 16, 14, 224, 32000  # timm vit_large / vit_so400m: 16 heads
PROMPT = "In: What action should the robot take to {}?\nOut:"


# --- the reference, from the definition --------------------------------------------------------
def ref_vit(w: dict, p: str, x: torch.Tensor, dino: bool) -> torch.Tensor:
    """timm ViT forward, output of block ``depth - 2``, prefix tokens dropped (no final norm)."""
    x = F.conv2d(x, w[p + "patch_embed.proj.weight"], w[p + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + w[p + "pos_embed"]  # reg4 DINOv2 / SigLIP: patches only
    if dino:
        x = torch.cat([w[p + "cls_token"], w[p + "reg_token"], x], 1)
    d = x.shape[-1]
    depth = 1 + max(int(k[len(p) + 7 :].split(".")[0]) for k in w if k.startswith(p + "blocks."))
    for i in range(depth - 1):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(x, (d,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"]).chunk(3, -1)
        heads = [t.view(1, -1, HEADS, d // HEADS).transpose(1, 2) for t in (q, k, v)]
        att = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(d // HEADS), -1) @ heads[2]
        h = F.linear(att.transpose(1, 2).reshape(x.shape), w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        x = x + (h * w[b + "ls1.scale_factor"] if dino else h)
        h = F.layer_norm(x, (d,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"])), w[b + "mlp.fc2.weight"],
                     w[b + "mlp.fc2.bias"])  # fmt: skip
        x = x + (h * w[b + "ls2.scale_factor"] if dino else h)
    return x[:, 5:] if dino else x


def ref_pixels(image: np.ndarray) -> torch.Tensor:
    """Prismatic's processor (resize-naive, PIL bicubic, ToTensor, Normalize; DINOv2 then SigLIP)."""
    pil = Image.fromarray(image)
    pil = pil if pil.size == (SIZE, SIZE) else pil.resize((SIZE, SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, np.float32) / 255).permute(2, 0, 1)
    dino = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        :, None, None
    ]
    return torch.cat([dino, (x - 0.5) / 0.5])


def ref_lm(path) -> LlamaForCausalLM:
    text = json.loads((path / "config.json").read_text())["text_config"]
    cfg = LlamaConfig(**{k: v for k, v in text.items() if k not in ("model_type", "torch_dtype")})
    lm = LlamaForCausalLM(cfg).eval()
    return lm


def ref_prefix(w: dict, lm: LlamaForCausalLM, images: list[np.ndarray], ids: list[int], proprio=None):
    lm.load_state_dict(
        {k[len("language_model.") :]: v for k, v in w.items() if k.startswith("language_model.")}
    )
    patches = []
    for image in images:  # OFT: each image's (DINOv2 || SigLIP) patches, one image after the other
        px = ref_pixels(image)[None]
        dino = ref_vit(w, "vision_backbone.featurizer.", px[:, :3], dino=True)
        sig = ref_vit(w, "vision_backbone.fused_featurizer.", px[:, 3:], dino=False)
        patches.append(torch.cat([dino, sig], -1))
    x = torch.cat(patches, 1)
    for i in (1, 2):
        x = F.gelu(F.linear(x, w[f"projector.fc{i}.weight"], w[f"projector.fc{i}.bias"]))
    x = F.linear(x, w["projector.fc3.weight"], w["projector.fc3.bias"])
    if proprio is not None:
        pw = {k.split(".", 1)[1]: v for k, v in w.items() if k.startswith("proprio_projector.")}
        t = F.linear(
            F.gelu(F.linear(proprio, pw["fc1.weight"], pw["fc1.bias"])), pw["fc2.weight"], pw["fc2.bias"]
        )
        x = torch.cat([x, t[None, None]], 1)
    return x  # NUM_PATCHES tokens (incl. proprio)


def ref_openvla(w, lm, image, ids, steps=7):
    """predict_action: greedy generate over the whole vocabulary, <s> + patches + prompt."""
    vision = ref_prefix(w, lm, [image], ids)
    emb = lm.get_input_embeddings()
    seq = torch.cat([emb(torch.tensor([ids[:1]])), vision, emb(torch.tensor([ids[1:]]))], 1)
    out_ids, logits = [], []
    for _ in range(steps):
        step = lm(inputs_embeds=seq).logits[0, -1]
        logits.append(step)
        out_ids.append(int(step.argmax()))
        seq = torch.cat([seq, emb(torch.tensor([[out_ids[-1]]]))], 1)
    return out_ids, torch.stack(logits)


def ref_oft(w, lm, images, ids, proprio, chunk, l1: bool):
    """OFT's predict_action: one bidirectional pass; L1 head or discrete argmax on the action states."""
    vision = ref_prefix(w, lm, images, ids, proprio)
    emb = lm.get_input_embeddings()
    n_patches, n_prompt, n_act = vision.shape[1], len(ids) - 1, 7 * chunk
    tokens = torch.cat(
        [emb(torch.tensor([ids])), torch.zeros(1, n_act, vision.shape[-1]), emb(torch.tensor([[2]]))], 1
    )
    seq = torch.cat([tokens[:, :1], vision, tokens[:, 1:]], 1)
    full = torch.zeros(1, 1, seq.shape[1], seq.shape[1])  # bidirectional: every token sees every token
    hidden = lm.model(inputs_embeds=seq, attention_mask=full).last_hidden_state
    states = hidden[:, n_patches + n_prompt : n_patches + n_prompt + n_act]
    if not l1:
        return lm.lm_head(states)[0].argmax(-1), None
    hw = {k.split(".", 2)[2]: v for k, v in w.items() if k.startswith("action_head.model.")}
    x = states.reshape(1, chunk, -1)
    x = F.relu(F.linear(F.layer_norm(x, x.shape[-1:], hw["layer_norm1.weight"], hw["layer_norm1.bias"]),
                        hw["fc1.weight"], hw["fc1.bias"]))  # fmt: skip
    for b in range(2):
        pre = f"mlp_resnet_blocks.{b}.ffn."
        h = F.layer_norm(x, x.shape[-1:], hw[pre + "0.weight"], hw[pre + "0.bias"])
        x = x + F.relu(F.linear(h, hw[pre + "1.weight"], hw[pre + "1.bias"]))
    x = F.layer_norm(x, x.shape[-1:], hw["layer_norm2.weight"], hw["layer_norm2.bias"])
    return None, F.linear(x, hw["fc2.weight"], hw["fc2.bias"])[0]


def ref_actions(ids_or_normalized, stats, from_ids: bool) -> np.ndarray:
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2
    x = np.asarray(ids_or_normalized, np.float64)
    if from_ids:
        x = centers[np.clip(VOCAB - x.astype(int) - 1, 0, 254)]
    a = stats["action"]
    q01, q99, mask = np.array(a["q01"]), np.array(a["q99"]), np.array(a.get("mask", [True] * 7))
    return np.where(mask, 0.5 * (x + 1) * (q99 - q01) + q01, x)


# --- helpers -----------------------------------------------------------------------------------
def _image(seed: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))
    return np.clip(smooth.astype(int) + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


def _obs(images: dict, instruction: str = DOCUMENTED_TASK, proprio=None) -> Observation:
    p = np.asarray(proprio if proprio is not None else [0.4, 0, 0.2, 1, 0, 0, 0, 0.04], np.float32)
    return Observation(images=images, ee_pose=p[:7], gripper_width=float(p[7]),
                       joint_positions=np.zeros(7, np.float32), instruction=instruction)  # fmt: skip


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the OFT proprio-convention warning
        return load_pretrained_policy(path, **kw)


@pytest.fixture(scope="module")
def openvla(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "openvla-7b"
    return path, write_openvla_checkpoint(path)


def openvla_diffs(policy, w, path, image, instruction=DOCUMENTED_TASK) -> dict[str, float]:
    """Max differences between the policy and the reference: prompt ids, pixels, logits, actions."""
    stats = json.loads((path / "config.json").read_text())["norm_stats"]["bridge_orig"]
    ids_ref = _processor_ids(path, instruction)
    with torch.no_grad():
        ref_ids, ref_logits = ref_openvla(w, ref_lm(path), image, ids_ref)
        batch = policy.prepare([_obs({"scene": image}, instruction)])
        out = policy.act(batch, deterministic=True)
        # The policy's full-vocabulary logits, teacher-forced on the ids it emitted.
        embeds, mask = policy.prefix(batch)
        seq = torch.cat([embeds, policy.embed_tokens(out.token_ids[:, :-1])], 1)
        hidden = policy.run_lm(
            seq, torch.cat([mask, torch.ones_like(out.token_ids[:, :-1])], 1)
        ).last_hidden_state
        logits = policy.language_model.get_output_embeddings()(hidden[0, embeds.shape[1] - 1 :])
        got_px = torch.cat([x for _, x in policy.encoder_inputs(batch["pixel_values"].flatten(0, 1))], 1)[0]
    return {
        "prompt": float(batch["input_ids"][0].tolist() != ids_ref),
        "pixels": float((got_px - ref_pixels(image)).abs().max()),
        "logits": float((logits - ref_logits).abs().max()),
        "ids": float(out.token_ids[0].tolist() != ref_ids),
        "actions": float(np.abs(out.actions[0, 0].numpy() - ref_actions(ref_ids, stats, True)).max()),
    }


def _processor_ids(path, instruction: str) -> list[int]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(path / "tokenizer.json")).encode(PROMPT.format(instruction.lower())).ids
    return [*ids, 29871]  # predict_action appends "▁" (the prompt ends with ":")


# --- tests -------------------------------------------------------------------------------------
def test_openvla_conversion_matches_the_reference(openvla):
    path, w = openvla
    policy = _load(path)
    assert isinstance(policy, OpenVLAPolicy)
    image = _image(0)
    batch = policy.prepare([_obs({"scene": image})])
    assert batch["input_ids"][0].tolist() == DOCUMENTED_PROMPT_IDS  # Llama-2's real ids
    d = openvla_diffs(policy, w, path, image)
    assert d["prompt"] == 0 and d["ids"] == 0, d
    assert d["pixels"] < 1e-5 and d["logits"] < 1e-4 and d["actions"] < 1e-6, d
    # Instructions keep their spaces and punctuation (only lowercased), and are never truncated.
    long = "  Put the Cup on the plate, please?  " + " and then the plate" * 40
    assert policy.prepare_text([long])[0][0].tolist() == _processor_ids(path, long)
    # An image at another size goes through PIL's bicubic: within about one uint8 level of it.
    d = openvla_diffs(policy, w, path, _image(1, 256, 320))
    assert d["pixels"] < 1.2 / 255 / 0.225, d


def test_the_sequence_is_bos_patches_prompt(openvla):
    path, _ = openvla
    policy = _load(path)
    batch = policy.prepare([_obs({"scene": _image(2)}), _obs({"scene": _image(3)}, "lift it")])  # padded row
    with torch.no_grad():
        embeds, mask = policy.prefix(batch)
        vision = policy.vision_tokens(batch["pixel_values"])
    for row in range(2):
        keep = mask[row].bool()
        seq, pos = embeds[row][keep], (mask[row].cumsum(-1) - 1)[keep]
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert torch.equal(pos, torch.arange(len(seq)))  # positions 0..L-1, as upstream's arange
        torch.testing.assert_close(seq[0], policy.embed_tokens(ids[:1])[0])  # <s> first
        torch.testing.assert_close(seq[1:257], vision[row])  # then the 256 patches
        torch.testing.assert_close(seq[257:], policy.embed_tokens(ids[1:]))  # then the prompt


def test_a_wrong_prompt_order_is_detected(openvla):
    """The check fails for a model that puts the patches before <s> (SimBridge's old layout)."""
    path, w = openvla
    policy = _load(path)
    policy.config.sequence_layout = "image-first"
    d = openvla_diffs(policy, w, path, _image(0))
    assert d["prompt"] == 0 and d["pixels"] < 1e-5  # same inputs ...
    assert d["logits"] > 1e-3, d  # ... but not the checkpoint's logits (conformant: < 1e-4)
    report = check_checkpoint(path, policy=policy)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == [
        "sequence = <s>, vision tokens, prompt (positions 0..L-1)"
    ]
    # A prompt normalized differently (trailing punctuation stripped) is caught too.
    policy = _load(path)
    policy.tokenizer.strip_chars = ".?!"
    report = check_checkpoint(path, policy=policy, instruction="Close the drawer.")
    assert [c.name for c in report.checks if not c.ok] == ["prompt ids = the checkpoint's processor"]
    assert check_checkpoint(path, policy=_load(path)).ok


@pytest.mark.parametrize("l1", [True, False], ids=["l1-head", "discrete"])
def test_oft_conversion_matches_the_reference(tmp_path, l1):
    path = tmp_path / "oft"
    w = write_openvla_checkpoint(
        path, oft=True, num_images=2, proprio=True, l1_head=l1, norm_keys=("libero",)
    )
    policy = _load(path, num_images=2, chunk_size=2)
    assert isinstance(policy, OpenVLAOFTPolicy) and policy.config.parallel_decoder == "openvla-oft"
    stats = json.loads((path / "dataset_statistics.json").read_text())["libero"]
    images = {"scene": _image(4), "wrist": _image(5)}
    state = np.array([0.1, 0.0, 1.0, 3.0, 0.1, -0.2, 0.03, -0.01], np.float32)
    q01, q99 = np.array(stats["proprio"]["q01"]), np.array(stats["proprio"]["q99"])
    normalized_state = np.clip(2 * (state - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    with torch.no_grad():
        ids, reg = ref_oft(w, ref_lm(path), list(images.values()), DOCUMENTED_PROMPT_IDS,
                           torch.tensor(normalized_state, dtype=torch.float32), chunk=2, l1=l1)  # fmt: skip
    batch = policy.prepare([_obs(images, proprio=state)])
    np.testing.assert_allclose(batch["proprio"][0].numpy(), normalized_state, atol=1e-5)
    out = policy.act(batch, deterministic=True)
    if l1:  # unbounded L1 output, unnormalized as it is
        torch.testing.assert_close(out.normalized_actions[0].flatten(), reg.flatten(), atol=1e-4, rtol=1e-4)
        want = ref_actions(reg.reshape(2, 7).numpy(), stats, from_ids=False)
    else:
        assert out.token_ids[0].tolist() == ids.tolist()
        want = ref_actions(ids.reshape(2, 7).numpy(), stats, from_ids=True)
    np.testing.assert_allclose(out.actions[0].numpy(), want, atol=1e-4)
    # Bidirectional: the </s> after the action positions still changes what they read.
    with torch.no_grad():
        policy.config.action_stop_token_id = 3
        moved = policy.forward(**{k: v for k, v in batch.items()})
        policy.config.action_stop_token_id = 2
        again = policy.forward(**{k: v for k, v in batch.items()})
    assert (moved.action_logits - again.action_logits).abs().max() > 1e-4
    assert check_checkpoint(
        path, policy=policy, images=list(images.values()), proprio=state, unnorm_key="libero"
    ).ok


def test_bicubic_resize_is_pils_within_a_level():
    for h, w in [(256, 320), (180, 200), (480, 640)]:
        image = _image(h, h, w)
        pil = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BICUBIC), np.float32) / 255
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        ours = resize_images(x, SIZE, "bicubic-pil")[0].permute(1, 2, 0).numpy()
        diff = np.abs(ours - pil) * 255
        assert diff.max() < 1.2 and diff.mean() < 0.4, (h, w, diff.max(), diff.mean())
        unscaled = resize_images(x * 255, SIZE, "bicubic-pil", value_range=255.0)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(unscaled / 255, ours, atol=1e-5)  # SFT resizes 0..255 frames
        bilinear = resize_images(x, SIZE)[0].permute(1, 2, 0).numpy()
        assert (np.abs(bilinear - pil) * 255).mean() > 2 * diff.mean()  # what the old resize was off by


def test_ids_outside_the_bins_decode_as_predict_action_does(openvla):
    """Greedy over the whole vocabulary may emit a non-action id: it is fed back as emitted and
    decodes to the nearest bin (OpenVLA's clip), as upstream; here no step can pick a bin."""
    path, w = openvla
    policy = _load(path)
    w = dict(w)
    rows = slice(VOCAB - 256, VOCAB)  # no bin can win the argmax any more
    w["language_model.lm_head.weight"] = w["language_model.lm_head.weight"].clone()
    w["language_model.lm_head.weight"][rows] *= 0.0
    with torch.no_grad():
        policy.language_model.lm_head.weight[rows] *= 0.0
    d = openvla_diffs(policy, w, path, _image(6))
    assert d["ids"] == 0 and d["logits"] < 1e-4 and d["actions"] < 1e-6, d
    out = policy.act(policy.prepare([_obs({"scene": _image(6)})]), deterministic=True)
    assert (out.token_ids < VOCAB - 256).any() or (out.token_ids >= VOCAB).any()  # non-bin ids were emitted
    with torch.no_grad():
        again = policy.greedy_decode(policy.prepare([_obs({"scene": _image(6)})]))  # what the graph runs
    torch.testing.assert_close(again.actions, out.actions)
    assert torch.equal(again.token_ids, out.token_ids)
