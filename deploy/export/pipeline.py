"""The export pipeline: training checkpoint -> verified, parity-checked ONNX policy bundle.

:func:`export_checkpoint` runs the steps in order, everything into a staging directory that
:class:`~simbridge.deploy.bundle.BundleWriter` renames into place only at the end: load the
checkpoint (:func:`load_policy`), trace the graph (:mod:`.graph`), apply the speed levers asked
for (:mod:`.levers`: int8, offline optimization, session options), copy the tokenizer and build
the manifest (:mod:`.manifest`), run the parity check (:mod:`.parity`), then commit (and sign).
If any step fails, nothing is written.

Torch and ``simbridge.training`` are imported lazily, when a checkpoint is exported.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simbridge.data.spec import Observation, PolicyContract
from simbridge.deploy.bundle import BundleWriter, hash_tree
from simbridge.deploy.export.levers import action_tolerance, apply_levers, check_lever_options
from simbridge.deploy.export.manifest import build_manifest, graph_opset, write_tokenizer
from simbridge.deploy.export.options import MODEL_FILE, TOKENIZER_FILE, ExportError, ExportOptions
from simbridge.deploy.export.parity import (
    ParityReport,
    check_parity,
    store_observations,
    synthetic_observations,
)


@dataclass
class ExportResult:
    """A committed bundle: where it is, its final manifest, its parity report, how long it took."""

    bundle: Path
    manifest: dict[str, Any]
    parity: ParityReport
    seconds: float

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.parity.max_abs_diff.items())
        if self.parity.mode == "exact":
            agreement = f"tokens identical, max abs diff {diffs}"
        else:
            agreement = (
                f"decoded actions within {max(self.parity.max_action_diff_fraction):.2%} of their range "
                f"(tolerance {self.parity.action_tolerance:.1%}), {self.parity.token_flips} of "
                f"{self.parity.tokens_compared} tokens flipped, max abs diff {diffs}"
            )
        levers = self.manifest["model"].get("levers") or {}
        applied = [k for k in ("quantization", "offline_optimization") if levers.get(k)]
        return (
            f"exported {self.manifest['source'].get('checkpoint')} -> {self.bundle} "
            f"(bundle {self.manifest['bundle_id']}, {self.manifest['family']}, chunk {self.manifest['action']['chunk_size']}) "
            f"{'with ' + ' + '.join(applied) + ' ' if applied else ''}"
            f"in {self.seconds:.1f} s; parity on {self.parity.num_observations} observations: {agreement}"
        )


def load_policy(checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint (``save_checkpoint`` dir or plain ``save_pretrained`` dir) in eval mode, LoRA merged."""
    from simbridge.training.checkpoint import CHECKPOINT_META, CheckpointError, load_checkpoint
    from simbridge.training.models import VLAPolicy, check_policy_dir

    try:
        if (checkpoint / CHECKPOINT_META).is_file():
            policy = load_checkpoint(checkpoint)
            info = json.loads((checkpoint / CHECKPOINT_META).read_text())
        else:
            check_policy_dir(checkpoint)
            policy = VLAPolicy.from_pretrained(checkpoint)
            info = {"family": policy.config.family, "preset": policy.config.preset}
    except (CheckpointError, FileNotFoundError, OSError, ValueError) as exc:
        raise ExportError(f"cannot load checkpoint {checkpoint}: {exc}") from None
    if getattr(policy.config, "lora_rank", 0) > 0:
        policy.merge_lora()  # the bundle's graph carries the merged weights, no adapter matmuls
    return policy.eval(), info


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    options: ExportOptions | None = None,
    overwrite: bool = False,
    observations: Sequence[Observation] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``checkpoint`` (a ``save_checkpoint`` / ``save_pretrained`` directory, or a run
    directory: its latest checkpoint) to the bundle directory ``output``.

    Raises :class:`ExportError` (and writes nothing) when the checkpoint cannot be loaded, the
    ONNX export fails or the parity check fails; :class:`BundleError` when ``options.signing_key``
    is not a usable private key (checked first).
    """
    options = options or ExportOptions()
    signing_key = load_signing_key(options)  # a bad key fails now, not after a minute of exporting
    check_lever_options(options)
    say = progress or (lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    checkpoint = Path(checkpoint).absolute()
    if not checkpoint.is_dir():
        raise ExportError(
            f"checkpoint {checkpoint} does not exist or is not a directory; pass <run>/checkpoints/iter_NNNNNN"
        )
    if not (checkpoint / "config.json").is_file():
        from simbridge.training.checkpoint import latest_checkpoint

        latest = latest_checkpoint(checkpoint)
        if latest is None:
            raise ExportError(
                f"{checkpoint} is neither a checkpoint (no config.json) nor a run with checkpoints"
            )
        checkpoint = latest.absolute()
    if Path(output).exists() and not overwrite:  # fail fast, before the slow part
        raise ExportError(
            f"{Path(output).absolute()} already exists; choose another output directory or pass --force"
        )
    checkpoint_sha = hash_tree(checkpoint)  # hashed before loading: the bytes exported are the bytes hashed
    say(f"loading {checkpoint}")
    policy, info = load_policy(checkpoint)
    contract: PolicyContract = policy.contract
    if observations is None:
        if options.parity_store is not None:
            observations = store_observations(
                Path(options.parity_store), contract, options.parity_samples, options.seed
            )
            source = f"store:{Path(options.parity_store).absolute()}"
        else:
            observations = synthetic_observations(contract, options.parity_samples, options.seed)
            source = f"generated(seed={options.seed})"
    else:
        source = "given"
    observations = list(observations)
    if len(observations) < 2:
        raise ExportError(
            "the parity check needs at least 2 observations (it checks the dynamic batch dimension)"
        )

    from simbridge.deploy.export.graph import export_onnx  # torch: only now, when exporting

    with BundleWriter(output, overwrite=overwrite) as writer:
        staging = writer.path
        assert staging is not None
        say(f"exporting {policy.config.family} ({policy.config.preset}) to ONNX, opset {options.opset}")
        model = export_onnx(
            policy,
            observations[:2],
            staging / MODEL_FILE,
            opset=options.opset,
            options_exporter=options.exporter,
        )
        if options.lossy or options.optimize != "none":
            say(f"levers: quantize {options.quantize}, offline optimization {options.optimize}")
        model |= apply_levers(staging / MODEL_FILE, options)  # model.levers, model.session
        model["opset"] = graph_opset(staging / MODEL_FILE)
        instruction = write_tokenizer(policy, staging / TOKENIZER_FILE)
        manifest = build_manifest(policy, info, model, instruction)
        manifest["source"] = {
            "checkpoint": str(checkpoint),
            "checkpoint_name": checkpoint.name,
            "checkpoint_sha256": checkpoint_sha,
            **{k: info[k] for k in ("iteration", "metrics", "time") if k in info},
        }
        manifest["software_version"] = _software_version()
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        say(f"parity check on {len(observations)} observations ({source})")
        report = check_parity(
            policy, staging, manifest, observations, options.tolerance, source, action_tolerance(options)
        )
        if not report.passed:
            raise ExportError(
                f"parity check failed for {checkpoint}: {'; '.join(report.problems)}; no bundle written "
                f"(report: {json.dumps(report.to_dict())})"
            )
        manifest["parity"] = report.to_dict()
        bundle = writer.commit(manifest, signing_key=signing_key)
        final = writer.manifest
    assert final is not None
    result = ExportResult(bundle=bundle, manifest=final, parity=report, seconds=time.perf_counter() - t0)
    say(result.summary())
    return result


def load_signing_key(options: ExportOptions) -> Any:
    """The ed25519 private key ``options.signing_key`` names (None: unsigned); BundleError if unusable."""
    if options.signing_key is None:
        return None
    from simbridge.deploy.signing import load_private_key

    return load_private_key(options.signing_key)


def _software_version() -> str:
    from simbridge.data.runs import software_version

    return software_version()
