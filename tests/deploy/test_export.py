"""The exporter: real checkpoints (both families, written by save_checkpoint) -> ONNX bundles.

Policies are the real model classes at a micro size (one small SigLIP + a 1-2 layer Llama) so
an export takes seconds; parity is torch vs onnxruntime, nothing is mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from simbridge.data.cli import main as cli_main
from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.deploy.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleError,
    hash_tree,
    resolve_bundle,
    verify_bundle,
)
from simbridge.deploy.export import (
    ExportError,
    ExportOptions,
    export_checkpoint,
    read_announcements,
    synthetic_observations,
    torch_reference,
)
from simbridge.deploy.runtime import BundlePolicy

#: A micro configuration of the real model classes (~0.2M parameters), passed to build_policy.
MICRO_SOURCE = """
MICRO = dict(
    image_size=32,
    siglip_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                   "vision_use_head": False},
    text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                 "tie_word_embeddings": False},
    value_head_dims=[32],
)
"""
exec(MICRO_SOURCE)  # defines MICRO here and, verbatim, in the trainer subprocess below

CONTRACT = PolicyContract(
    observation=ObservationSpec(cameras=(CameraSpec("scene", 48, 64), CameraSpec("wrist", 48, 64))),
    chunk_size=4,
)
FAST = ExportOptions(parity_samples=4)


def micro_policy(family: str, contract: PolicyContract = CONTRACT, seed: int = 0, layers: int = 2, **extra):
    from simbridge.training.models import build_policy

    overrides = json.loads(json.dumps(MICRO))  # noqa: F821 - defined by exec above
    overrides["text_config"]["num_hidden_layers"] = layers
    return build_policy(family, "tiny", contract=contract, seed=seed, **overrides, **extra)


#: Prismatic-style fused SigLIP + DINOv2 encoders, LoRA adapters and OFT's L1 regression head.
FUSED_LORA_REGRESSION = {
    "dinov2_config": {"model_type": "dinov2", "hidden_size": 32, "mlp_ratio": 2, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    "lora_rank": 2,
    "use_regression_head": True,
}  # fmt: skip


def save(policy, run_dir: Path, iteration: int = 1) -> Path:
    from simbridge.training.checkpoint import save_checkpoint

    return save_checkpoint(policy, run_dir, iteration, metrics={"success": 0.5})


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def oft_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("oft")
    policy = micro_policy("openvla-oft", **FUSED_LORA_REGRESSION)
    for name, param in policy.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op (B = 0): make the adapters matter
            param.data.normal_(0.0, 0.1)
    ckpt = save(policy, root / "run", iteration=7)
    result = export_checkpoint(ckpt, root / "bundle", options=FAST, progress=quiet)
    return policy, ckpt, result


def test_oft_parity_and_manifest(oft_export) -> None:
    policy, ckpt, result = oft_export
    m = verify_bundle(result.bundle)
    # Parity recorded and within tolerance; tokens identical at batch 4 and batch 1.
    assert m["parity"]["passed"] and m["parity"]["token_mismatches"] == 0
    assert m["parity"]["batch_sizes"] == [4, 1, 1]
    assert all(v <= 1e-4 for v in m["parity"]["max_abs_diff"].values())
    assert set(m["parity"]["max_abs_diff"]) == {"actions", "logprob", "value"}
    # The manifest describes everything the runtime and a reader need.
    assert m["family"] == "openvla-oft" and m["model"]["decoding"] == "parallel"
    assert m["contract"] == CONTRACT.to_dict()
    assert [c["name"] for c in m["observation"]["cameras"]] == ["scene", "wrist"]
    cam = m["observation"]["cameras"][0]
    assert (cam["height"], cam["width"], cam["resize"], cam["channel_order"]) == (48, 64, [32, 32], "RGB")
    assert [n["encoder"] for n in cam["normalize"]] == ["siglip", "dinov2"]
    assert cam["normalize"][1]["mean"] == [0.485, 0.456, 0.406]
    assert m["observation"]["proprio"]["enabled"] is True and m["observation"]["proprio"]["dim"] == 8
    assert m["action"]["chunk_size"] == 4 and m["action"]["control_rate_hz"] == 10.0
    assert m["action"]["output"] == "regression"  # continuous actions from the L1 head
    assert m["action"]["normalization"]["q01"] == pytest.approx(policy.action_stats.q01.tolist())
    assert m["instruction"]["tokenizer"] == "tokenizer.json" and m["instruction"]["padding_side"] == "left"
    tok, rules = policy.tokenizer, m["instruction"]  # the checkpoint tokenizer's own attributes
    assert (rules["strip_chars"], rules["lowercase"]) == (tok.strip_chars, tok.lowercase)
    assert rules["prefix_ids"] == tok.prefix_ids
    assert m["model"]["exporter"].startswith("torch.onnx (torchscript)")  # traced, no dynamo fallback
    assert m["source"]["iteration"] == 7 and m["source"]["checkpoint_sha256"] == hash_tree(ckpt)
    assert set(m["files"]) == {"policy.onnx", "tokenizer.json"}
    assert set(m["model"]["inputs"]) == {
        "image_scene",
        "image_wrist",
        "proprio",
        "input_ids",
        "attention_mask",
    }


def test_runtime_matches_torch_on_new_observations(oft_export) -> None:
    """Beyond the export-time check: unseen observations, batch and single, through BundlePolicy."""
    policy, _, result = oft_export
    runtime = BundlePolicy(result.bundle)
    obs = synthetic_observations(CONTRACT, 6, seed=123)  # the 6th instruction gets truncated
    ref = torch_reference(policy, obs)
    out = runtime.infer(obs)
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["actions"], ref["actions"], atol=1e-4)
    single = runtime.predict(obs[2])
    assert single.shape == (4, 7) and single.dtype == np.float32
    np.testing.assert_allclose(single, torch_reference(policy, [obs[2]])["actions"][0], atol=1e-4)
    # Regression-head actions are continuous (not bin centres) and inside the contract's limits.
    assert np.all(single >= CONTRACT.action.low - 1e-6) and np.all(single <= CONTRACT.action.high + 1e-6)
    centres = -1.0 + (2.0 * np.arange(256) + 1.0) / 256
    normalized = policy.action_stats.normalize(single)
    assert np.abs(normalized[..., :6, None] - centres).min(-1).max() > 1e-6


def test_autoregressive_family_unrolled_greedy_parity(tmp_path: Path) -> None:
    contract = PolicyContract(
        observation=ObservationSpec(cameras=(CameraSpec("scene", 40, 40),)), chunk_size=1
    )
    policy = micro_policy("openvla", contract, seed=1, layers=1)
    ckpt = save(policy, tmp_path / "run", iteration=3)
    result = export_checkpoint(ckpt, tmp_path / "bundle", options=FAST, progress=quiet)
    m = result.manifest
    assert m["family"] == "openvla" and m["model"]["decoding"] == "autoregressive-unrolled"
    assert "proprio" not in m["model"]["inputs"]  # this family does not read proprio
    assert m["model"]["exporter"].startswith("torch.onnx (torchscript)")  # greedy_decode traces
    assert m["parity"]["token_mismatches"] == 0 and m["parity"]["max_abs_diff"]["logprob"] <= 1e-4
    runtime = BundlePolicy(result.bundle)
    obs = synthetic_observations(contract, 3, seed=9)
    ref = torch_reference(policy, obs)  # torch decodes with a KV cache; the graph without
    out = runtime.infer(obs)
    assert out["tokens"].shape == (3, 7)
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["actions"], ref["actions"], atol=1e-4)


@pytest.mark.parametrize("family", ["openvla", "openvla-oft"])
def test_converted_openvla_checkpoints_export_with_parity(tmp_path: Path, family: str) -> None:
    """Checkpoints converted from the upstream layout: PIL-bicubic resize from the camera size in
    the graph, <s>-patches-prompt layout, full-vocabulary greedy; OFT: 2 images, proprio (clipped),
    bidirectional attention, the L1 MLP-ResNet head."""
    import warnings

    from simbridge.training.models.loaders import load_pretrained_policy
    from simbridge.training.models.upstream_fixture import write_openvla_checkpoint

    oft = family == "openvla-oft"
    write_openvla_checkpoint(tmp_path / "upstream", oft=oft, num_images=2 if oft else 1, proprio=oft)
    cams = (CameraSpec("scene", 180, 240), CameraSpec("wrist", 180, 240))[: 2 if oft else 1]
    contract = PolicyContract(
        observation=ObservationSpec(cameras=cams, use_proprio=oft), chunk_size=2 if oft else 1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OFT's proprio-convention warning
        policy = load_pretrained_policy(tmp_path / "upstream", contract=contract,
                                        **({"num_images": 2, "chunk_size": 2} if oft else {}))  # fmt: skip
    policy.save_pretrained(tmp_path / "converted")
    result = export_checkpoint(tmp_path / "converted", tmp_path / "bundle", options=FAST, progress=quiet)
    m = result.manifest
    assert m["parity"]["token_mismatches"] == 0 and m["model"]["exporter"].startswith(
        "torch.onnx (torchscript)"
    )
    assert m["observation"]["cameras"][0]["interpolation"] == "bicubic-pil"
    assert m["model"]["sequence_layout"] == "prismatic" and m["action"]["greedy"].startswith(
        "full vocabulary"
    )
    assert (m["instruction"]["strip_whitespace"], m["instruction"]["strip_chars"]) == (False, "")
    assert m["observation"]["proprio"]["clip"] == ([-1.0, 1.0] if oft else None)
    obs = synthetic_observations(contract, 2, seed=4)
    out, ref = BundlePolicy(result.bundle).infer(obs), torch_reference(policy, obs)
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["actions"], ref["actions"], atol=1e-4)


def test_failed_parity_writes_nothing(tmp_path: Path) -> None:
    contract = PolicyContract(
        observation=ObservationSpec(cameras=(CameraSpec("scene", 32, 32),)), chunk_size=1
    )
    ckpt = save(micro_policy("openvla-oft", contract, layers=1, token_merge=1), tmp_path / "run")
    out = tmp_path / "exports" / "strict"
    # A zero tolerance cannot be met by float32 outputs computed by two different kernels.
    with pytest.raises(
        ExportError, match=r"parity check failed .* differ by up to .* > tolerance 0; no bundle written"
    ):
        export_checkpoint(ckpt, out, options=ExportOptions(parity_samples=2, tolerance=0.0), progress=quiet)
    assert not out.exists()
    assert list((tmp_path / "exports").iterdir()) == []  # no staging directory either


def test_bad_checkpoints_are_refused_with_the_missing_file(tmp_path: Path, oft_export) -> None:
    _, ckpt, _ = oft_export
    with pytest.raises(ExportError, match="does not exist"):
        export_checkpoint(tmp_path / "nope", tmp_path / "b", progress=quiet)
    broken = tmp_path / "iter_000001"
    broken.mkdir()
    for f in ckpt.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ExportError, match=r"model\.safetensors .*is missing"):
        export_checkpoint(broken, tmp_path / "b", progress=quiet)
    assert not (tmp_path / "b").exists()


def test_announcements_are_read_line_by_line(tmp_path: Path) -> None:
    f = tmp_path / "announce.jsonl"
    f.write_text('{"path": "/a", "iteration": 1}\nnot json\n{"path": "/b", "iter')
    entries, offset = read_announcements(f, 0)
    assert [e["path"] for e in entries] == ["/a"]  # the half-written last line waits
    with open(f, "a") as fh:
        fh.write('ation": 2}\n')
    entries, offset = read_announcements(f, offset)
    assert [e["path"] for e in entries] == ["/b"]
    assert read_announcements(f, offset) == ([], offset)


TRAINER = """
import json, sys, time
from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.training.checkpoint import save_checkpoint
from simbridge.training.models import build_policy
{micro}
run_dir = sys.argv[1]
contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 32, 32),)), chunk_size=2)
policy = build_policy("openvla-oft", "tiny", contract=contract, seed=0, **MICRO)
for it in (10, 20):
    time.sleep(0.5)
    for p in policy.parameters():  # "training": the weights change between checkpoints
        p.data.add_(0.01)
    save_checkpoint(policy, run_dir, it, metrics={{"loss": 1.0 / it}})
    print("saved", it, flush=True)
"""


def test_watch_exports_checkpoints_of_a_running_trainer(tmp_path: Path, capsys) -> None:
    run_dir, export_dir = tmp_path / "run", tmp_path / "exports"
    (run_dir / "checkpoints").mkdir(parents=True)
    # Garbage the watcher must survive: a malformed line and a checkpoint that does not exist.
    (run_dir / "checkpoints" / "announce.jsonl").write_text(
        'garbage\n{"path": "' + str(run_dir / "checkpoints" / "iter_000005") + '", "iteration": 5}\n'
    )
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER.format(micro=textwrap.dedent(MICRO_SOURCE)), str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        code = cli_main(
            ["export", "--watch", str(run_dir), "-o", str(export_dir), "--max-exports", "2", "--timeout", "120",
             "--poll", "0.2", "--parity-samples", "2"]
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        out, err = trainer.communicate(timeout=60)
        assert out.count("saved") == 2
    finally:
        trainer.kill()
    assert trainer.returncode == 0, err
    assert code == 0 and elapsed < 120
    log = capsys.readouterr().err
    assert "iter_000005: export failed, skipped" in log and "malformed announcement" in log
    bundles = sorted(p.name for p in export_dir.iterdir())
    assert bundles == ["iter_000010", "iter_000020", "latest"]  # nothing partial, no staging dirs
    latest = resolve_bundle(export_dir)
    assert latest.name == "iter_000020"
    m10, m20 = verify_bundle(export_dir / "iter_000010"), verify_bundle(latest)
    assert (m10["source"]["iteration"], m20["source"]["iteration"]) == (10, 20)
    assert m10["source"]["checkpoint_sha256"] != m20["source"]["checkpoint_sha256"]
    assert m20["source"]["checkpoint_sha256"] == hash_tree(run_dir / "checkpoints" / "iter_000020")
    # The robot side loads whatever `latest` points at.
    policy = BundlePolicy(export_dir)
    assert policy.bundle_id == m20["bundle_id"]
    # A restarted watcher does not export the same checkpoints again.
    assert cli_main(["export", "--watch", str(run_dir), "-o", str(export_dir), "--timeout", "0.5"]) == 0
    assert "already exported" in capsys.readouterr().err
    assert verify_bundle(export_dir / "iter_000020")["bundle_id"] == m20["bundle_id"]
    assert not any(p.name.startswith(".") for p in export_dir.iterdir())
    assert (export_dir / "iter_000020" / MANIFEST_NAME).is_file()


def test_cli_export_with_parity_on_recorded_episodes(oft_export, tmp_path: Path, capsys) -> None:
    """`simbridge export <ckpt> -o <dir> --parity-store <zarr>`: parity on observations recorded in
    an episode store; then the refusals (existing output, wrong usage, store with other cameras)."""
    from simbridge.data.spec import EpisodeMeta
    from simbridge.data.store import EpisodeWriter

    _, ckpt, _ = oft_export
    store = tmp_path / "episodes.zarr"
    with EpisodeWriter(store, CONTRACT.observation.cameras, chunk_steps=8, robot="franky-sim") as w:
        for episode, instruction in enumerate(("put the red cube on the target", "stack the blue block.")):
            for obs in synthetic_observations(CONTRACT, 4, seed=episode):
                obs.instruction = instruction
                w.add_step(obs, np.zeros(7, np.float32))
            w.end_episode(EpisodeMeta(instruction=instruction, policy_id="teleop"))
    out = tmp_path / "bundle"
    args = ["export", str(ckpt), "-o", str(out), "--parity-store", str(store), "--parity-samples", "3"]
    assert cli_main(args) == 0
    parity = verify_bundle(out)["parity"]
    assert parity["source"] == f"store:{store}" and parity["num_observations"] == 3 and parity["passed"]
    assert "exported" in capsys.readouterr().out
    assert cli_main(args) == 1  # refuses to overwrite, before loading anything
    assert "already exists; choose another output directory or pass --force" in capsys.readouterr().err
    assert cli_main(["export", "-o", str(out)]) == 2  # neither a checkpoint nor --watch
    # A store recorded with other cameras cannot serve as parity data for this policy.
    other = tmp_path / "other.zarr"
    with EpisodeWriter(other, (CameraSpec("scene", 48, 64),)) as w:
        w.add_step(synthetic_observations(CONTRACT, 1)[0], np.zeros(7, np.float32))
        w.end_episode(EpisodeMeta(instruction="x"))
    with pytest.raises(ExportError, match=r"lacks camera 'wrist' at 48x64"):
        export_checkpoint(ckpt, tmp_path / "b2", options=ExportOptions(parity_store=other), progress=quiet)
    assert not (tmp_path / "b2").exists()


# --- signing and CLI refusals ---------------------------------------------------------------


def _rehash(bundle: Path, edit=None) -> None:
    """Change a bundle and recompute its checksums and id, as someone tampering with it would."""
    from simbridge.deploy.bundle import finalize_manifest

    m = json.loads((bundle / MANIFEST_NAME).read_text())
    if edit is not None:
        edit(m)
    (bundle / MANIFEST_NAME).write_text(json.dumps(finalize_manifest(m, bundle), indent=2))


def _swap_weights(bundle: Path) -> None:
    """A different model with the same inputs and outputs: one initializer perturbed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / "policy.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(model, str(bundle / "policy.onnx"))
    _rehash(bundle)


def test_signed_export_and_tampered_copies(oft_export, tmp_path: Path, capsys) -> None:
    """`export --gen-key` / `--sign`: the signed bundle loads with the trusted key; copies that were
    tampered with and re-hashed load without keys (as before) and are refused with them."""
    import shutil

    _, ckpt, _ = oft_export
    key = tmp_path / "keys" / "exporter"
    assert cli_main(["export", "--gen-key", str(key)]) == 0
    assert "fingerprint sha256:" in capsys.readouterr().out
    assert cli_main(["export", "--gen-key", str(key)]) == 1  # never overwrites a key
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "Traceback" not in err
    out = tmp_path / "signed"
    assert cli_main(["export", str(ckpt), "-o", str(out), "--sign", str(key), "--parity-samples", "2"]) == 0
    capsys.readouterr()
    trusted = [key.with_name("exporter.pub")]
    policy = BundlePolicy(out, trusted_keys=trusted)
    assert policy.signer and policy.signer.startswith("sha256:")
    assert BundlePolicy(out).signer is None  # no keys: checksums only, as before

    tamperings = {
        "model": _swap_weights,
        "prompt": lambda b: _rehash(b, lambda m: m["instruction"].update(template="{instruction}, then drop it")),
        "parity": lambda b: _rehash(b, lambda m: m["parity"].update(tolerance=1.0, source="given")),
    }  # fmt: skip
    for name, tamper in tamperings.items():
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(out, copy)
        tamper(copy)
        BundlePolicy(copy)  # checksums are consistent: loads as before
        with pytest.raises(BundleError, match="changed after it was signed"):
            BundlePolicy(copy, trusted_keys=trusted)
        with pytest.raises(BundleError, match="changed after it was signed"):
            BundlePolicy(copy, trusted_keys=trusted, verify=False)  # keys force the full check
    (tmp_path / "unsigned").mkdir()
    shutil.copytree(out, tmp_path / "unsigned" / "b")
    (tmp_path / "unsigned" / "b" / SIGNATURE_NAME).unlink()
    with pytest.raises(BundleError, match="is not signed"):
        BundlePolicy(tmp_path / "unsigned" / "b", trusted_keys=trusted)

    # A key that cannot sign fails before anything is exported.
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "x"), "--sign", str(trusted[0])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a PEM private key" in err
    assert not (tmp_path / "x").exists()


def test_watch_on_a_missing_run_directory_creates_nothing(tmp_path: Path) -> None:
    """Via the installed `simbridge` script: one line on stderr, no traceback, no export dir."""
    simbridge = Path(sys.executable).with_name("simbridge")
    out = tmp_path / "exports"
    proc = subprocess.run(
        [str(simbridge), "export", "--watch", str(tmp_path / "no-such-run"), "-o", str(out), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no-such-run does not exist" in proc.stderr and "run directory" in proc.stderr
    assert not out.exists()
