"""Run an exported policy bundle with ONNX Runtime: contract observation in, action chunk out.

This is what the robot runs. It needs numpy, onnxruntime and ``tokenizers`` — never torch::

    from simbridge.deploy.runtime import BundlePolicy
    policy = BundlePolicy("exports/latest")        # verifies manifest + every file's sha256
    policy = BundlePolicy("exports/latest", trusted_keys=["keys/exporter.pub"])  # + its signature
    chunk = policy.predict(obs)                     # (chunk_size, 7) float32, physical units

Division of work between this module and the ONNX graph (see ``simbridge.deploy.export``):

* here: check the observation against the bundle's contract, stack each camera's ``uint8``
  HWC RGB images into a batch, build the proprio vector, tokenize the instruction with the
  bundle's ``tokenizer.json`` (prompt template, padding and truncation from the manifest);
* in the graph: image scaling, resizing and mean/std normalization, proprio normalization,
  the network, greedy decoding of the action tokens (one pass for OFT, an unrolled loop for
  the autoregressive family) and their de-normalization to physical units. The manifest
  records all of these (``observation.cameras``, ``observation.proprio``,
  ``action.normalization``, each marked ``"applied_in": "graph"``) for people and other runtimes.

Execution providers: CUDA when this onnxruntime build has it and a GPU answers, else CPU; the log
(logger ``simbridge.deploy.runtime``) and ``policy.providers`` say which one runs. Which build is
installed is chosen by an extra: ``pip install 'simbridge[cpu]'`` (``onnxruntime``, what ``[all]``
and ``make setup`` install) or ``'simbridge[gpu]'`` (``onnxruntime-gpu``; never both: they install
the same module). TensorRT is opt-in (``providers=["TensorrtExecutionProvider",
"CUDAExecutionProvider", "CPUExecutionProvider"]``): building its engine takes minutes on the
first start, so it is never picked automatically; engines are cached per bundle.

Session options come from the manifest's optional ``model.session`` (written by the export's
speed levers, :mod:`simbridge.deploy.export.levers`): ``graph_optimization_level`` (default
``"all"``) and ``intra_op_threads`` (an ``intra_op_threads`` argument wins; default: onnxruntime's).
A model optimized offline (``model.levers.offline_optimization``) is specific to the provider it
was optimized for; running it on another one logs a warning.

Start-up cost: the sha256 pass over the bundle's files reads only the files that changed since
they last verified (:mod:`simbridge.deploy.bundle_cache`); ``load_seconds`` and
``files_hashed`` say what a load cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simbridge.data.spec import ContractError, Observation, PolicyContract
from simbridge.deploy.bundle import (
    MANIFEST_NAME,
    BundleError,
    check_bundle,
    finalize_manifest,
    read_manifest,
    resolve_bundle,
    validate_manifest,
)
from simbridge.deploy.bundle_cache import cache_root
from simbridge.deploy.manifest_validation import validate_staged_manifest

__all__ = ["PREFERRED_PROVIDERS", "BundleError", "BundlePolicy", "resolve_bundle", "select_providers"]

log = logging.getLogger(__name__)

#: ``model.session.graph_optimization_level`` -> onnxruntime's GraphOptimizationLevel member.
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

#: Picked automatically, in this order; CPU is always last and always there. TensorRT: opt-in only.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime() -> Any:
    """``onnxruntime``, or a :class:`BundleError` saying which extra installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise BundleError(
            "onnxruntime is not installed: pip install 'simbridge[cpu]' (CPU) or 'simbridge[gpu]' "
            "(CUDA; onnxruntime-gpu), not both"
        ) from None
    return onnxruntime


def select_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The execution providers to use: ``requested`` (all must exist in this onnxruntime build)
    or the available ones among :data:`PREFERRED_PROVIDERS`, in that order."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BundleError(
                f"execution provider(s) {missing} are not in this onnxruntime build (it has {available}); "
                "install onnxruntime-gpu for CUDA/TensorRT, or pass providers=None to pick automatically"
            )
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available]


def _provider_options(providers: list[str], cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            # Building a TensorRT engine takes minutes: cache it per bundle across restarts.
            cache_dir.mkdir(parents=True, exist_ok=True)
            out.append(
                (
                    p,
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache_dir),
                        "trt_fp16_enable": False,
                    },
                )
            )
        else:
            out.append((p, {}))
    return out


class InstructionTokenizer:
    """The bundle's instruction tokenizer: ``tokenizer.json`` run by the ``tokenizers`` library,
    with the prompt, truncation and padding the checkpoint was trained with (manifest section
    ``instruction``)::

        text = template.format(instruction=<stripped?, trailing strip_chars removed, lowercased?>)
        ids  = prefix_ids + encode(text)[:max_length - len(prefix_ids) - len(suffix_ids)] + suffix_ids

    then padded (left by default) to the longest instruction of the batch.
    """

    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise BundleError(f"bundle file {path} is not a valid tokenizer.json: {exc}") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.template: str = spec.get("template", "{instruction}")
        # Bundles written before the field existed stripped white space (OpenVLA's prompt does not).
        self.strip_whitespace: bool = bool(spec.get("strip_whitespace", True))
        self.strip_chars: str = spec.get("strip_chars", "")  # stripped from the end of the instruction
        self.lowercase: bool = bool(spec.get("lowercase", False))
        self.prefix_ids: list[int] = [int(i) for i in spec.get("prefix_ids", [])]  # e.g. [<bos>]
        self.suffix_ids: list[int] = [int(i) for i in spec.get("suffix_ids", [])]  # kept when truncating
        self.add_special_tokens: bool = bool(spec.get("add_special_tokens", False))
        self.max_length: int = int(spec["max_length"])
        self.pad_token_id: int = int(spec["pad_token_id"])
        self.padding_side: str = spec.get("padding_side", "left")
        # False: pad to the longest instruction of the batch (a batch of one is not padded).
        self.pad_to_max_length: bool = bool(spec.get("pad_to_max_length", False))
        if self.padding_side not in ("left", "right"):
            raise BundleError("manifest.json: field 'instruction.padding_side' must be 'left' or 'right'")
        if self.max_length <= len(self.prefix_ids) + len(self.suffix_ids):
            raise BundleError(
                "manifest.json: field 'instruction.max_length' leaves no room for the instruction"
            )

    def text(self, instruction: str) -> str:
        s = instruction.strip() if self.strip_whitespace else instruction
        if self.strip_chars:
            s = s.rstrip(self.strip_chars)
        if self.lowercase:
            s = s.lower()
        return self.template.format(instruction=s)

    def encode(self, instruction: str) -> list[int]:
        body = self._tok.encode(self.text(instruction), add_special_tokens=self.add_special_tokens).ids
        room = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        return [*self.prefix_ids, *body[:room], *self.suffix_ids]

    def __call__(self, instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, both int64 ``(B, L)``."""
        seqs = [self.encode(s) for s in instructions]
        length = self.max_length if self.pad_to_max_length else max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), length), dtype=np.int64)
        for i, ids in enumerate(seqs):
            if self.padding_side == "right":
                input_ids[i, : len(ids)] = ids
                mask[i, : len(ids)] = 1
            else:
                input_ids[i, length - len(ids) :] = ids
                mask[i, length - len(ids) :] = 1
        return input_ids, mask


class BundlePolicy:
    """A :class:`~simbridge.data.spec.Policy` backed by an ONNX bundle (no torch).

    ``bundle_dir`` may be a bundle, an export directory (its ``latest`` pointer is followed
    once, at load time) or the pointer itself. ``verify=False`` skips the sha256 pass over the
    files (the manifest is still validated), for tools that load many bundles they just wrote.
    ``hash_cache=False`` hashes every file even when it is unchanged since it last verified.

    ``trusted_keys``: ed25519 public-key PEM paths (or loaded keys). When given, the bundle must
    carry a ``manifest.sig`` that verifies with one of them (see :mod:`simbridge.deploy.signing`),
    and the full sha256 pass always runs (``verify=False`` is ignored: a signature over checksums
    nobody checks proves nothing). Empty (the default): checksums only, as before.

    :meth:`from_unverified_staging` is the one way around these checks, for the exporter's parity
    check on files it has not committed yet; it refuses anything that is a bundle.
    """

    path: Path  # the resolved bundle directory
    manifest: dict[str, Any]
    contract: PolicyContract

    def __init__(
        self,
        bundle_dir: str | Path,
        providers: Sequence[str] | None = None,
        *,
        verify: bool = True,
        intra_op_threads: int | None = None,
        allow_spinning: bool = False,
        trusted_keys: Sequence[str | Path | Any] = (),
        hash_cache: bool = True,
    ) -> None:
        t0 = time.perf_counter()
        self.signer: str | None = None  # fingerprint of the trusted key that signed the bundle
        self.staged = False  # True only for from_unverified_staging
        self.files_hashed = 0  # files the load read and hashed (the others were verified unchanged)
        if verify or trusted_keys:
            info = check_bundle(bundle_dir, trusted_keys=trusted_keys, use_cache=hash_cache)
            self.path, self.manifest, self.contract = info.path, info.manifest, info.contract
            self.signer, self.files_hashed = info.signer, info.files_hashed
        else:
            self.path = resolve_bundle(bundle_dir)
            self.manifest = read_manifest(self.path)
            self.contract = validate_manifest(self.manifest, where=str(self.path / "manifest.json"))
        self._open(providers, intra_op_threads, allow_spinning, t0)

    @classmethod
    def from_unverified_staging(
        cls, staging_dir: str | Path, draft_manifest: dict[str, Any], providers: Sequence[str] | None = None
    ) -> BundlePolicy:
        """UNVERIFIED: run the files an exporter is staging, described by its in-memory draft
        manifest (no ``parity`` record yet, no ``manifest.json`` written, nothing signed).

        For the exporter's parity check only, so that it runs the very code the robot runs before
        anything is committed. The draft is validated like a manifest (bar the parity record) and
        its ``files`` are hashed from ``staging_dir``. Refuses a directory that holds a
        ``manifest.json`` and a draft that carries a parity record: a bundle, whatever its state,
        is loaded with ``BundlePolicy(path)``, which verifies it.
        """
        t0 = time.perf_counter()
        policy = cls.__new__(cls)  # skips __init__: nothing on disk is a bundle to verify yet
        policy.signer, policy.staged, policy.files_hashed = None, True, 0
        policy.path = Path(staging_dir).resolve()
        if (policy.path / MANIFEST_NAME).exists():
            raise BundleError(
                f"{policy.path} holds a {MANIFEST_NAME}: it is a bundle, not a staging directory; "
                "load it with BundlePolicy(path), which verifies it"
            )
        policy.manifest = finalize_manifest(draft_manifest, policy.path)
        policy.contract = validate_staged_manifest(policy.manifest, where=f"{policy.path} (staged manifest)")
        policy._open(providers, None, False, t0)
        return policy

    def _open(
        self, providers: Sequence[str] | None, intra_op_threads: int | None, allow_spinning: bool, t0: float
    ) -> None:
        """Tokenizer and onnxruntime session for the (already checked) ``self.manifest``."""
        ort = import_onnxruntime()
        m = self.manifest
        self.tokenizer = InstructionTokenizer(self.path / m["instruction"]["tokenizer"], m["instruction"])
        self.chunk_size = int(m["action"]["chunk_size"])

        opts = ort.SessionOptions()
        session = m["model"].get("session", {})  # bundles without it: level "all", onnxruntime's threads
        level = session.get("graph_optimization_level", "all")
        if level not in _LEVELS:
            raise BundleError(
                f"{self.path / MANIFEST_NAME}: field 'model.session.graph_optimization_level' is {level!r:.40}; "
                f"expected one of {list(_LEVELS)}"
            )
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
        intra_op_threads = intra_op_threads or session.get("intra_op_threads")  # the caller's wins
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        # ORT's worker threads otherwise spin after every run: on a robot PC that also captures
        # cameras and runs the control loop (or the twin), that steals the CPU the 10 Hz loop needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        requested = select_providers(providers)
        cache = cache_root() / "trt" / self.bundle_id
        model_path = self.path / m["model"]["file"]
        try:
            self.session = ort.InferenceSession(
                str(model_path), sess_options=opts, providers=_provider_options(requested, cache)
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"onnxruntime cannot load {model_path}: {exc}") from None
        # What onnxruntime actually uses (a GPU provider whose libraries are missing drops out).
        self.providers = list(self.session.get_providers())
        self._check_io()
        self.load_seconds = time.perf_counter() - t0
        offline = (m["model"].get("levers") or {}).get("offline_optimization")
        if offline and self.providers[0] != offline.get("provider"):
            log.warning("bundle %s was optimized offline for %s but runs on %s; re-export it without "
                        "--optimize for this provider", self.bundle_id, offline.get("provider"),
                        self.providers[0])  # fmt: skip
        dropped = [p for p in requested if p not in self.providers]
        if dropped:  # onnxruntime-gpu lists CUDA even where no GPU or CUDA library answers
            log.warning("bundle %s: %s could not be used (no GPU, or its CUDA libraries are missing)",
                        self.bundle_id, ", ".join(dropped))  # fmt: skip
        log.info("bundle %s runs on %s (loaded in %.2f s, %d file(s) hashed)", self.bundle_id,
                 self.providers[0], self.load_seconds, self.files_hashed)  # fmt: skip

    # -- spec.Policy ---------------------------------------------------------------------

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    def reset(self) -> None:
        """Stateless: each call predicts a whole chunk from the current observation."""

    def predict(self, obs: Observation) -> np.ndarray:
        """``(chunk_size, 7)`` float32 actions in physical units for one observation."""
        return self.predict_batch([obs])[0]

    # -- batch API -----------------------------------------------------------------------

    def predict_batch(self, observations: Sequence[Observation]) -> np.ndarray:
        """``(B, chunk_size, 7)`` float32 actions."""
        return self.infer(observations)["actions"]

    def infer(self, observations: Sequence[Observation]) -> dict[str, np.ndarray]:
        """All graph outputs: ``tokens`` (B, chunk*7) bins, ``actions`` (B, chunk, 7) physical units,
        ``logprob`` (B,) of the greedy tokens, ``value`` (B,) the critic's estimate."""
        feeds = self.prepare(observations)
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds), strict=True))

    def prepare(self, observations: Sequence[Observation]) -> dict[str, np.ndarray]:
        """The ONNX feeds for a batch of contract observations (validated against the contract)."""
        if len(observations) == 0:
            raise ContractError("predict needs at least one observation")
        for obs in observations:
            if not isinstance(obs, Observation):
                raise ContractError(f"expected a simbridge.data.spec.Observation, got {type(obs).__name__}")
            obs.validate(self.contract.observation)
        inputs = self.manifest["model"]["inputs"]
        text: dict[str, np.ndarray] = {}
        if any(spec["source"] in ("input_ids", "attention_mask") for spec in inputs.values()):
            text["input_ids"], text["attention_mask"] = self.tokenizer([o.instruction for o in observations])
        feeds: dict[str, np.ndarray] = {}
        for name, spec in inputs.items():
            source = spec["source"]
            if source.startswith("image:"):
                cam = source.split(":", 1)[1]
                feeds[name] = np.stack([np.ascontiguousarray(o.images[cam]) for o in observations])
            elif source == "proprio":
                feeds[name] = np.stack([o.proprio() for o in observations]).astype(np.float32)
            elif source in text:
                feeds[name] = text[source]
            else:
                raise BundleError(
                    f"{self.path / 'manifest.json'}: field 'model.inputs.{name}.source' {source!r} is unknown"
                )
        return feeds

    # -- internals -----------------------------------------------------------------------

    def _check_io(self) -> None:
        """The graph's inputs/outputs must be what the manifest says (catches a swapped model file)."""
        where = self.path / "manifest.json"
        graph_inputs = {i.name for i in self.session.get_inputs()}
        declared = set(self.manifest["model"]["inputs"])
        if graph_inputs != declared:
            raise BundleError(
                f"{where}: field 'model.inputs' lists {sorted(declared)} but the ONNX graph takes {sorted(graph_inputs)}"
            )
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if "tokens" not in graph_outputs:
            raise BundleError(
                f"{self.path / self.manifest['model']['file']}: the graph has no 'tokens' output"
            )

    def __repr__(self) -> str:
        return (
            f"BundlePolicy({self.path.name}, id={self.bundle_id}, family={self.manifest['family']}, "
            f"chunk={self.chunk_size}, providers={self.providers}{', UNVERIFIED staging' if self.staged else ''})"
        )
