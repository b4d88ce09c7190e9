"""Loading OpenVLA / OpenVLA-OFT checkpoints written in the exact upstream layout: the files used,
round trips, the variants refused by name, old SimBridge checkpoints, ``simbridge check-checkpoint``.

(What the converted policy computes is checked against the upstream definition in
``test_models_conformance.py``.)
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from simbridge.data.cli import main as cli_main
from simbridge.data.spec import Observation
from simbridge.training.models import OpenVLAOFTPolicy, OpenVLAPolicy, VLAPolicy, build_policy
from simbridge.training.models.conformance import DOCUMENTED_TASK
from simbridge.training.models.loaders import CheckpointFormatError, load_pretrained_policy
from simbridge.training.models.upstream_fixture import write_openvla_checkpoint

torch.set_num_threads(1)


def _obs(cameras=("scene",), instruction: str = DOCUMENTED_TASK) -> Observation:
    rng = np.random.default_rng(0)
    return Observation(images={c: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for c in cameras},
                       ee_pose=np.array([0.1, 0, 1.0, 3.0, 0, 0, 0], np.float32), gripper_width=0.02,
                       joint_positions=np.zeros(7, np.float32), instruction=instruction)  # fmt: skip


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pretrained_policy(path, **kw)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "openvla"
    write_openvla_checkpoint(path, norm_keys=("bridge_orig", "fractal"))
    return path


def test_sharded_upstream_export_converts_and_round_trips(ckpt, tmp_path):
    assert len(list(ckpt.glob("model-0000*-of-00003.safetensors"))) == 3
    save_file({"stray": torch.zeros(1)}, str(ckpt / "zz-not-in-the-index.safetensors"))  # the index decides
    try:
        policy = _load(ckpt, unnorm_key="fractal")
    finally:
        (ckpt / "zz-not-in-the-index.safetensors").unlink()
    assert isinstance(policy, OpenVLAPolicy) and policy.action_token_begin == 32000 - 256
    cfg = policy.config
    assert (cfg.sequence_layout, cfg.image_interpolation, cfg.greedy_full_vocab) == (
        "prismatic",
        "bicubic-pil",
        True,
    )
    assert cfg.siglip_config.hidden_act == "gelu" and cfg.vision_order == ["dinov2", "siglip"]
    assert policy.action_stats.normalize_mask.tolist() == [True] * 6 + [False]
    messy = "  Put the cup, please!  "
    batch = policy.prepare([_obs(instruction=messy)])
    out = policy.act(batch, deterministic=True)
    policy.save_pretrained(tmp_path / "converted")  # now a SimBridge checkpoint
    again = VLAPolicy.from_pretrained(tmp_path / "converted")
    assert (
        again.config.sequence_layout == "prismatic"
        and again.tokenizer.normalization == policy.tokenizer.normalization
    )
    batch2 = again.prepare([_obs(instruction=messy)])
    assert torch.equal(batch2["input_ids"], batch["input_ids"])
    torch.testing.assert_close(again.act(batch2, deterministic=True).actions, out.actions)


def test_oft_checkpoint_with_head_and_proprio_round_trips(tmp_path):
    path = tmp_path / "oft"
    write_openvla_checkpoint(
        path, oft=True, num_images=2, proprio=True, norm_keys=("libero_spatial_no_noops",)
    )
    with pytest.warns(UserWarning, match="convention"):  # never silently: the state's meaning differs
        policy = load_pretrained_policy(path, num_images=2, chunk_size=4)
    assert isinstance(policy, OpenVLAOFTPolicy) and policy.contract.observation.camera_names == (
        "scene",
        "wrist",
    )
    assert policy.config.regression_head_kind == "mlp-resnet" and policy.action_stats.proprio_clip
    batch = policy.prepare([_obs(("scene", "wrist"))])
    out = policy.act(batch, deterministic=True)
    assert out.actions.shape == (1, 4, 7)
    policy.save_pretrained(tmp_path / "converted")
    again = VLAPolicy.from_pretrained(tmp_path / "converted")
    torch.testing.assert_close(again.act(again.prepare([_obs(("scene", "wrist"))]), deterministic=True).actions,
                               out.actions)  # fmt: skip


def _rename_in_shards(path, old: str, new: str) -> None:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        w = load_file(str(path / shard))
        save_file({k.replace(old, new): v for k, v in w.items()}, str(path / shard))
    index["weight_map"] = {k.replace(old, new): v for k, v in index["weight_map"].items()}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _edit_json(path, name, **changes) -> None:
    data = json.loads((path / name).read_text())
    data.update(changes)
    (path / name).write_text(json.dumps(data))


REFUSED = {
    # timm's own LayerScale name: not what Prismatic's HF export writes.
    "gamma": (lambda p: _rename_in_shards(p, ".scale_factor", ".gamma"), {}, r"ls1\.scale_factor"),
    "diffusion": (lambda p: (p / "noisy_action_projector--100_checkpoint.pt").write_bytes(b""), {}, "diffusion"),
    "film": (lambda p: (p / "vision_backbone--100_checkpoint.pt").write_bytes(b""), {}, "FiLM"),
    "letterbox": (lambda p: _edit_json(p, "preprocessor_config.json", image_resize_strategy="letterbox"), {},
                  "letterbox"),
    "bilinear": (lambda p: _edit_json(p, "preprocessor_config.json", interpolations=["bilinear", "bicubic"]), {},
                 "bilinear"),
    "clip": (lambda p: _edit_json(p, "config.json", timm_model_ids=["vit_large_patch14_clip_336.openai"],
                                  use_fused_vision_backbone=False), {}, "DINOv2 / SigLIP only"),
    "oft-as-openvla": (lambda p: None, {"family": "openvla"}, "family='openvla-oft'"),
    "oft-sizes": (lambda p: None, {}, "num_images"),
    "aloha": (lambda p: _edit_json(p, "dataset_statistics.json", libero={"action": {"q01": [0] * 14, "q99": [1] * 14}}),
              {"num_images": 1, "chunk_size": 1}, "14-D"),
    "two-stats": (lambda p: _edit_json(p, "dataset_statistics.json", other={}), {"num_images": 1, "chunk_size": 1},
                  "unnorm_key"),
    "no-tokenizer": (lambda p: (p / "tokenizer.json").unlink(), {}, r"tokenizer\.json"),
    "bert": (lambda p: _edit_json(p, "config.json", model_type="bert"), {}, "bert"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_variants_are_refused_by_name(tmp_path, case):
    damage, kwargs, match = REFUSED[case]
    path = tmp_path / case
    write_openvla_checkpoint(path, oft=case not in ("gamma", "letterbox", "bilinear", "clip", "no-tokenizer", "bert"),
                             norm_keys=("libero",))  # fmt: skip
    damage(path)
    with pytest.raises(CheckpointFormatError, match=match):
        _load(path, **({"num_images": 1, "chunk_size": 1} if case == "no-tokenizer" else {}) | kwargs)


def test_checkpoints_saved_before_the_layout_field_keep_theirs(tmp_path):
    policy = build_policy("openvla", "tiny")
    assert policy.config.sequence_layout == "prismatic"
    policy.save_pretrained(tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "config.json").read_text())
    del raw["sequence_layout"]  # as written before the field existed: trained image-first
    (tmp_path / "old" / "config.json").write_text(json.dumps(raw))
    old = VLAPolicy.from_pretrained(tmp_path / "old")
    assert old.config.sequence_layout == "image-first"
    batch = old.prepare([_obs(("scene",), "stack it")])
    with torch.no_grad():
        embeds, _ = old.prefix(batch)
        torch.testing.assert_close(embeds[:, :16], old.vision_tokens(batch["pixel_values"]))  # vision first


def test_cli_check_checkpoint(ckpt, tmp_path, capsys):
    assert cli_main(["check-checkpoint", str(ckpt), "--unnorm-key", "bridge_orig"]) == 0
    out = capsys.readouterr().out
    assert "[ok] prompt ids = Llama-2's documented ids" in out and out.strip().endswith("conformant")
    assert "sequence: 291 tokens: <s> at 0, vision 1..256, prompt 257..290" in out
    assert cli_main(["check-checkpoint", str(ckpt), "--unnorm-key", "bridge_orig", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["values"]["image"][0]["shape"] == [3, 224, 224]
    # A tokenizer that is not Llama-2's gives other ids than the model card's: exit 1, named.
    bad = tmp_path / "bad"
    write_openvla_checkpoint(bad)
    tok = json.loads((bad / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["▁pick"], vocab["<tok5840>"] = vocab["<tok5840>"], vocab["▁pick"]
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    assert cli_main(["check-checkpoint", str(bad)]) == 1
    assert "[MISMATCH] prompt ids = Llama-2's documented ids" in capsys.readouterr().out
    assert cli_main(["check-checkpoint", str(tmp_path / "missing")]) == 1
    assert "config.json is missing" in capsys.readouterr().err
