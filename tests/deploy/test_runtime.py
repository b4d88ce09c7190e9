"""BundlePolicy: the robot-side runtime. Loads a real exported bundle with onnxruntime, refuses
damaged or incompatible bundles and bad observations, and runs where torch cannot be imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simbridge.data.spec import SCHEMA_VERSION, CameraSpec, ContractError, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import MANIFEST_NAME, BundleError, finalize_manifest
from simbridge.deploy.export import ExportOptions, export_checkpoint, synthetic_observations, torch_reference
from simbridge.deploy.runtime import PREFERRED_PROVIDERS, BundlePolicy, select_providers

CONTRACT = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 40, 48),)), chunk_size=2)
MICRO = {
    "image_size": 32,
    "token_merge": 1,
    "siglip_config": {
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "vision_use_head": False,
    },
    "text_config": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "value_head_dims": [32],
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from simbridge.training.checkpoint import save_checkpoint
    from simbridge.training.models import InstructionTokenizer, build_policy

    root = tmp_path_factory.mktemp("runtime")
    # An OpenVLA-style prompt: template around the instruction, a suffix token kept when truncating.
    tokenizer = InstructionTokenizer.train(max_length=48)
    tokenizer.prompt_template = "In: What action should the robot take to {instruction}?\nOut:"
    tokenizer.suffix_ids = [tokenizer.eos_id]
    policy = build_policy(
        "openvla-oft", "tiny", contract=CONTRACT, seed=3, tokenizer=tokenizer, max_text_tokens=48, **MICRO
    )
    ckpt = save_checkpoint(policy, root / "run", 1)
    # Six parity observations: their instructions include mixed case, punctuation and one too long.
    options = ExportOptions(parity_samples=6)
    result = export_checkpoint(ckpt, root / "bundle", options=options, progress=lambda m: None)
    return policy, result.bundle


@pytest.fixture
def bundle_copy(exported, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(exported[1], dest)
    return dest


NO_TORCH = r"""
import importlib.abc, json, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked: the robot runtime must not need torch")

sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa: F401
    raise SystemExit("torch imported despite the blocker")
except ImportError:
    pass

from simbridge.deploy.runtime import BundlePolicy
from simbridge.deploy.export import synthetic_observations

policy = BundlePolicy(sys.argv[1])
obs = synthetic_observations(policy.contract, 3, seed=11)
chunk = policy.predict(obs[0])
batch = policy.predict_batch(obs)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "simbridge.training"))
print(json.dumps({"chunk": chunk.tolist(), "batch": batch.tolist(), "id": policy.bundle_id, "heavy": heavy,
                  "providers": policy.providers}))
"""


def test_runtime_works_without_torch_and_matches_torch(exported) -> None:
    policy, bundle = exported
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(bundle)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and "CPUExecutionProvider" in out["providers"]
    obs = synthetic_observations(CONTRACT, 3, seed=11)
    ref = torch_reference(policy, obs)["actions"]
    np.testing.assert_allclose(np.array(out["batch"], np.float32), ref, atol=1e-4)
    np.testing.assert_allclose(
        np.array(out["chunk"], np.float32), torch_reference(policy, obs[:1])["actions"][0], atol=1e-4
    )
    assert out["id"] == json.loads((bundle / MANIFEST_NAME).read_text())["bundle_id"]


def test_instruction_tokenization_matches_the_checkpoint(exported) -> None:
    policy, bundle = exported
    runtime = BundlePolicy(bundle)
    spec = runtime.manifest["instruction"]
    assert spec["template"].startswith("In: What action") and spec["suffix_ids"] == [policy.tokenizer.eos_id]
    instructions = [
        "Put the RED cube on the target!",
        "stack it",
        "put the purple cylinder on the white plate, then move it next to the bowl and lift it up again",
    ]
    ids, mask = runtime.tokenizer(instructions)
    ref_ids, ref_mask = policy.tokenizer.batch(instructions)
    np.testing.assert_array_equal(ids, ref_ids.numpy())
    np.testing.assert_array_equal(mask, ref_mask.numpy())
    assert ids.shape[1] == 48 and ids[2, -1] == policy.tokenizer.eos_id  # truncated, suffix kept
    assert mask[1].sum() < 48 and mask[1, 0] == 0  # short prompt: left padding
    # OpenVLA's rules (lowercase only: spaces and punctuation kept), read from the manifest.
    from simbridge.deploy.runtime import InstructionTokenizer as RuntimeTokenizer

    openvla_rules = {"strip_whitespace": False, "strip_chars": "", "lowercase": True}
    runtime_tok = RuntimeTokenizer(bundle / spec["tokenizer"], spec | openvla_rules)
    policy.tokenizer.strip_whitespace, policy.tokenizer.strip_chars = False, ""
    try:
        messy = ["  Put the RED cube on the target!  ", "stack it."]
        np.testing.assert_array_equal(runtime_tok(messy)[0], policy.tokenizer.batch(messy)[0].numpy())
        assert runtime_tok.text(messy[0]).endswith("target!  ?\nOut:")
    finally:
        policy.tokenizer.strip_whitespace, policy.tokenizer.strip_chars = True, ".?!"


def test_policy_protocol_and_metadata(exported) -> None:
    _, bundle = exported
    policy = BundlePolicy(bundle)
    assert policy.contract == CONTRACT and policy.chunk_size == 2
    assert len(policy.bundle_id) == 16 and policy.bundle_id in repr(policy)
    policy.reset()
    obs = synthetic_observations(CONTRACT, 2, seed=0)
    a = policy.predict(obs[0])
    assert a.shape == (2, 7) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(policy.predict(obs[0]), a)  # deterministic
    out = policy.infer(obs)
    assert out["tokens"].shape == (2, 14) and out["tokens"].dtype == np.int64
    assert out["logprob"].shape == (2,) and out["value"].shape == (2,)
    assert np.all(out["logprob"] <= 0)
    assert policy.load_seconds > 0


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: _flip_byte(b / "policy.onnx"), r"policy\.onnx was modified: sha256"),
        (lambda b: _truncate(b / "policy.onnx"), r"policy\.onnx is truncated"),
        (lambda b: (b / "tokenizer.json").unlink(), r"tokenizer\.json is missing"),
        (lambda b: _truncate(b / "tokenizer.json"), r"tokenizer\.json is truncated"),
        (lambda b: (b / MANIFEST_NAME).unlink(), r"manifest\.json is missing"),
        (lambda b: _truncate(b / MANIFEST_NAME), r"manifest\.json is not valid JSON"),
        (
            lambda b: _manifest(b, lambda m: m.update(schema_version=SCHEMA_VERSION + 1)),
            r"schema version 2, newer",
        ),
        (
            lambda b: _manifest(b, lambda m: m["action"].update(chunk_size=1)),
            r"'action\.chunk_size' \(1\) differs",
        ),
        (
            lambda b: _manifest(b, lambda m: m["action"]["normalization"].update(q99=[1.0] * 7)),
            r"manifest\.json was modified after export",
        ),
    ],
)
def test_damaged_bundles_are_refused(bundle_copy: Path, damage, expected) -> None:
    damage(bundle_copy)
    with pytest.raises(BundleError, match=expected):
        BundlePolicy(bundle_copy)


def test_manifest_that_lies_about_the_graph_is_refused(bundle_copy: Path) -> None:
    """Even a consistently re-hashed manifest must match the ONNX graph it describes."""
    m = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    m["model"]["inputs"].pop("proprio")
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(finalize_manifest(m, bundle_copy)))
    with pytest.raises(BundleError, match=r"'model\.inputs' lists .* but the ONNX graph takes .*'proprio'"):
        BundlePolicy(bundle_copy)


def test_observations_that_do_not_match_the_contract_are_refused(exported) -> None:
    policy = BundlePolicy(exported[1])
    good = synthetic_observations(CONTRACT, 1, seed=0)[0]

    def variant(**changes):
        obs = synthetic_observations(CONTRACT, 1, seed=0)[0]
        for k, v in changes.items():
            setattr(obs, k, v)
        return obs

    img = good.images["scene"]
    cases = [
        (variant(images={"wrist": img}), r"lacks camera\(s\) \['scene'\]"),
        (
            variant(images={"scene": img[:, :40]}),
            r"camera 'scene': expected uint8 image of shape \(40, 48, 3\)",
        ),
        (variant(images={"scene": img.astype(np.float32)}), r"camera 'scene': expected uint8"),
        (variant(ee_pose=np.full(7, np.nan)), "ee_pose must be 7 finite floats"),
        (variant(joint_positions=np.zeros(6)), "joint_positions must be 7 finite floats"),
        (variant(instruction="  "), "instruction must be a non-empty string"),
    ]
    for obs, expected in cases:
        with pytest.raises(ContractError, match=expected):
            policy.predict(obs)
    with pytest.raises(ContractError, match="at least one observation"):
        policy.predict_batch([])
    assert policy.predict(good).shape == (2, 7)  # the runtime is still usable afterwards


def test_unverified_staging_is_only_for_files_not_yet_a_bundle(exported, tmp_path: Path) -> None:
    """The exporter's parity check runs staged files with an in-memory draft manifest; nothing
    that is a bundle (or claims a parity record) can be loaded that way."""
    bundle = exported[1]
    staging = tmp_path / ".bundle.tmp-x"
    shutil.copytree(bundle, staging)
    (staging / MANIFEST_NAME).unlink()
    final = json.loads((bundle / MANIFEST_NAME).read_text())
    draft = {k: v for k, v in final.items() if k not in ("parity", "files", "bundle_id")}
    staged = BundlePolicy.from_unverified_staging(staging, draft, providers=["CPUExecutionProvider"])
    assert staged.staged and "UNVERIFIED" in repr(staged) and not (staging / MANIFEST_NAME).exists()
    obs = synthetic_observations(CONTRACT, 2, seed=5)
    np.testing.assert_array_equal(staged.infer(obs)["tokens"], BundlePolicy(bundle).infer(obs)["tokens"])
    assert not BundlePolicy(bundle).staged
    with pytest.raises(BundleError, match="no 'parity' record yet"):
        BundlePolicy.from_unverified_staging(staging, {**draft, "parity": {"passed": True}})
    with pytest.raises(BundleError, match=r"'action\.chunk_size' \(1\) differs"):  # still validated
        BundlePolicy.from_unverified_staging(staging, {**draft, "action": {**draft["action"], "chunk_size": 1}})
    with pytest.raises(BundleError, match="it is a bundle, not a staging directory"):
        BundlePolicy.from_unverified_staging(bundle, draft)
    assert not (staging / MANIFEST_NAME).exists()


def test_execution_providers(exported) -> None:
    import onnxruntime as ort

    auto = select_providers()
    assert auto[-1] == "CPUExecutionProvider"
    assert auto == [p for p in PREFERRED_PROVIDERS if p in ort.get_available_providers()]
    # CUDA when this build has it, else CPU; TensorRT (minutes of engine building) only when asked for.
    assert PREFERRED_PROVIDERS == ("CUDAExecutionProvider", "CPUExecutionProvider")
    with pytest.raises(BundleError, match=r"\['FooExecutionProvider'\] are not in this onnxruntime build"):
        BundlePolicy(exported[1], providers=["FooExecutionProvider"])
    assert BundlePolicy(exported[1], providers=["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]


def test_missing_bundle_path_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist; export one with 'simbridge export"):
        BundlePolicy(tmp_path / "nope")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / MANIFEST_NAME).read_text())
    edit(m)
    (bundle / MANIFEST_NAME).write_text(json.dumps(m))


def test_the_log_says_which_provider_runs(exported, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="simbridge.deploy"):
        policy = BundlePolicy(exported[1])
    runs = [r.getMessage() for r in caplog.records if " runs on " in r.getMessage()]
    assert runs == [f"bundle {policy.bundle_id} runs on {policy.providers[0]} "
                    f"(loaded in {policy.load_seconds:.2f} s, {policy.files_hashed} file(s) hashed)"]  # fmt: skip
    assert policy.providers[0] in ("CUDAExecutionProvider", "CPUExecutionProvider")
