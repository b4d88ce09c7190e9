"""The exporter: training checkpoint -> ONNX policy bundle, with a torch-vs-ONNX parity check.

    from simbridge.deploy.export import export_checkpoint, watch
    result = export_checkpoint("runs/sft/.../checkpoints/iter_000100", "bundles/sft-100")
    print(result.summary())

What goes into the graph (one ``policy.onnx``, dynamic batch and text-length dimensions):

* inputs: one ``uint8 (B, H, W, 3)`` RGB image per camera at the contract's size
  (``image_<camera>``), the raw proprio vector ``float32 (B, 8)`` when the policy uses it, and
  the tokenized instruction ``input_ids`` / ``attention_mask`` ``int64 (B, T)`` (left-padded);
* inside: scaling to [0, 1], the checkpoint's antialiased resize (as two constant matrices,
  probed from its own ``prepare_images``), the encoders' mean/std normalization, proprio
  normalization, the network, greedy decoding — the OFT family in one forward pass (all
  ``chunk*7`` action tokens in parallel), the autoregressive family as its ``7*chunk`` greedy
  steps unrolled into the graph with its KV cache (one prefix pass, then one single-token
  pass per step, as the torch policy decodes; the graph's text length stays dynamic) — and
  de-normalization to physical units with the checkpoint's statistics;
* outputs: ``tokens`` (B, chunk*7) bin ids, ``actions`` (B, chunk, 7) physical units,
  ``logprob`` (B,) of the greedy tokens and ``value`` (B,) the critic's estimate.

Doing preprocessing and de-normalization in the graph keeps one implementation (the
checkpoint's) and lets a GPU runtime do them on the GPU; the manifest records every number
(``observation.cameras``, ``observation.proprio``, ``action.normalization``, marked
``"applied_in": "graph"``) for people and other runtimes. The runtime only stacks images and
tokenizes the instruction, with the bundle's ``tokenizer.json``.

Parity: the same observations go through ``policy.act(policy.prepare(obs), deterministic=True)``
in torch and through :class:`~simbridge.deploy.runtime.BundlePolicy` (the very code the robot
runs, tokenization included) on the staged bundle. Token ids fed to the graph and the action
tokens must be identical, continuous outputs (actions, log-prob, value) within ``tolerance``.
The check runs the whole batch (dynamic batch dimension) and single observations (what the
robot sends). If it fails, the staging directory is deleted: nothing is written.

Tracing: ``torch.onnx.export(dynamo=False)`` with a batch-2 example (a batch-1 example would
fix the batch at 1), dynamic ``batch``/``text`` axes and an explicit attention mask; if tracing
fails, ``torch.export`` (``dynamo=True``) is tried (slower). Watch mode (:func:`watch`) follows
a training run's ``checkpoints/announce.jsonl`` and moves the export directory's ``latest``.

Only this module of ``simbridge.deploy`` imports torch and ``simbridge.training``, and lazily.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simbridge.data.spec import Observation, PolicyContract
from simbridge.deploy.bundle import (
    BundleError,
    BundleWriter,
    hash_tree,
    read_manifest,
    update_latest,
    verify_bundle,
)

MODEL_FILE = "policy.onnx"
TOKENIZER_FILE = "tokenizer.json"
ANNOUNCE_FILE = "announce.jsonl"


class ExportError(RuntimeError):
    """The checkpoint could not be exported (unreadable checkpoint, ONNX export or parity failed)."""


@dataclass
class ExportOptions:
    parity_samples: int = 8
    tolerance: float = 1e-4
    opset: int = 17
    parity_store: Path | None = None  # episode store whose observations the parity check uses
    seed: int = 0
    exporter: str = "auto"  # "torchscript" | "dynamo" | "auto" (tracing, then dynamo if it fails)
    signing_key: Path | None = None  # ed25519 private key PEM: write manifest.sig (simbridge.deploy.signing)


@dataclass
class ParityReport:
    """Torch vs ONNX Runtime on the same observations (what ``manifest.json`` records)."""

    passed: bool
    num_observations: int
    source: str  # "generated(seed=0)" or "store:<path>"
    tolerance: float
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    token_mismatches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExportResult:
    bundle: Path
    manifest: dict[str, Any]
    parity: ParityReport
    seconds: float

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.parity.max_abs_diff.items())
        return (
            f"exported {self.manifest['source'].get('checkpoint')} -> {self.bundle} "
            f"(bundle {self.manifest['bundle_id']}, {self.manifest['family']}, chunk {self.manifest['action']['chunk_size']}) "
            f"in {self.seconds:.1f} s; parity on {self.parity.num_observations} observations: "
            f"tokens identical, max abs diff {diffs}"
        )


# --- observations for the parity check ----------------------------------------------------

_PARITY_INSTRUCTIONS = (
    "put the red cube on the target",
    "Pick up the BLUE block!",  # case and punctuation: the prompt normalization must match
    "place the green cube in the bowl.",
    "move the yellow ball to the left of the plate",
    "stack the cube",
    # longer than any tokenizer's max_length here: truncation must match too
    "put the purple cylinder on the white plate, then move it next to the bowl, lift it up, put it back, "
    "open the gripper and go home slowly",
)


def synthetic_observations(contract: PolicyContract, n: int, seed: int = 0) -> list[Observation]:
    """``n`` plausible contract observations: smooth coloured images with blocks, poses near a
    Franka's workspace, instructions of different lengths (so batches need padding)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        images = {}
        for cam in contract.observation.cameras:
            coarse = rng.uniform(0, 255, size=(4, 4, 3))
            ys = np.linspace(0, 3, cam.height)[:, None]
            xs = np.linspace(0, 3, cam.width)[None, :]
            y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
            fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
            img = (
                coarse[y0, x0] * (1 - fy) * (1 - fx)
                + coarse[y0 + 1, x0] * fy * (1 - fx)
                + coarse[y0, x0 + 1] * (1 - fy) * fx
                + coarse[y0 + 1, x0 + 1] * fy * fx
            )
            for _ in range(2):  # a couple of "objects"
                h, w = rng.integers(4, max(5, cam.height // 4)), rng.integers(4, max(5, cam.width // 4))
                r, c = rng.integers(0, cam.height - h), rng.integers(0, cam.width - w)
                img[r : r + h, c : c + w] = rng.uniform(0, 255, size=3)
            img += rng.normal(0, 4, size=img.shape)
            images[cam.name] = np.clip(img, 0, 255).astype(np.uint8)
        quat = np.array([0.0, 1.0, 0.0, 0.0]) + rng.normal(0, 0.1, 4)
        out.append(
            Observation(
                images=images,
                ee_pose=np.concatenate(
                    [np.array([0.45, 0.0, 0.25]) + rng.normal(0, 0.08, 3), quat / np.linalg.norm(quat)]
                ).astype(np.float32),
                gripper_width=float(rng.uniform(0.0, 0.08)),
                joint_positions=rng.uniform(-1.5, 1.5, 7).astype(np.float32),
                instruction=_PARITY_INSTRUCTIONS[i % len(_PARITY_INSTRUCTIONS)],
                timestamp=0.1 * i,
            )
        )
    return out


def store_observations(
    store_path: Path, contract: PolicyContract, n: int, seed: int = 0
) -> list[Observation]:
    """``n`` recorded observations spread over an episode store's committed episodes."""
    from simbridge.data.store import EpisodeStore

    store = EpisodeStore(store_path)
    if len(store) == 0:
        raise ExportError(
            f"parity store {store_path} has no committed episodes; record some or omit --parity-store"
        )
    have = {c.name: c for c in store.cameras}
    for cam in contract.observation.cameras:
        if cam.name not in have or (have[cam.name].height, have[cam.name].width) != (cam.height, cam.width):
            raise ExportError(
                f"parity store {store_path} lacks camera {cam.name!r} at {cam.height}x{cam.width} that the policy "
                f"expects (store cameras: {[(c.name, c.height, c.width) for c in store.cameras]})"
            )
    rng = np.random.default_rng(seed)
    out: list[Observation] = []
    episodes = rng.permutation(len(store))
    per_episode = max(1, -(-n // len(store)))
    for e in episodes:
        ep, meta = store.episode(int(e)), store.meta(int(e))
        steps = len(ep["timestamp"])
        for t in np.linspace(0, steps - 1, min(per_episode, steps)).astype(int):
            out.append(
                Observation(
                    images={
                        c.name: np.asarray(ep[f"image_{c.name}"][t]) for c in contract.observation.cameras
                    },
                    ee_pose=np.asarray(ep["ee_pose"][t], np.float32),
                    gripper_width=float(ep["gripper_width"][t]),
                    joint_positions=np.asarray(ep["joint_positions"][t], np.float32),
                    instruction=meta.instruction,
                    timestamp=float(ep["timestamp"][t]),
                )
            )
            if len(out) == n:
                return out
    return out


# --- the graph ----------------------------------------------------------------------------


def load_policy(checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint (``save_checkpoint`` dir or plain ``save_pretrained`` dir) in eval mode."""
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
    return policy.eval(), info


def _resize_matrices(policy: Any, height: int, width: int) -> tuple[Any, Any]:
    """The policy's image resize as two matrices, ``resized = Wy @ image @ Wx.T`` per channel.

    Found by running the policy's own ``prepare_images`` on one-hot rows and columns, so the
    graph reproduces whatever (linear, separable) resize the checkpoint was trained with —
    antialiased bilinear included, which ONNX ``Resize`` does not match exactly. Checked
    against ``prepare_images`` on a real image before use.
    """
    import torch

    probes = np.zeros((height + width, 1, height, width, 3), np.uint8)
    for k in range(height):
        probes[k, 0, k, :, :] = 255
    for k in range(width):
        probes[height + k, 0, :, k, :] = 255
    with torch.no_grad():
        out = policy.prepare_images(probes).cpu().float()  # (H+W, 1, 3, S, S)
        wy = out[:height, 0, 0, :, 0].T.contiguous()  # (S, H)
        wx = out[height:, 0, 0, 0, :].T.contiguous()  # (S, W)
        image = np.random.default_rng(0).integers(0, 256, (1, 1, height, width, 3), dtype=np.uint8)
        expected = policy.prepare_images(image).cpu().float()[0, 0]
        x = torch.as_tensor(image[0, 0]).permute(2, 0, 1).float() / 255.0
        err = float((wy @ x @ wx.T - expected).abs().max())
    if err > 1e-5:
        raise ExportError(
            f"the policy's image preprocessing is not a separable linear resize (error {err:.2g}); "
            "the exporter cannot reproduce it in the graph"
        )
    return wy, wx


def _build_graph_module(policy: Any) -> tuple[Any, list[str], str]:
    """A torch module over the bundle's raw inputs that decodes greedily; its input names; decoding."""
    import torch
    from torch import nn

    contract: PolicyContract = policy.contract
    cams = list(policy.config.camera_names)
    if cams != list(contract.observation.camera_names):
        raise ExportError(
            f"checkpoint config camera_names {cams} differ from its contract's {contract.observation.camera_names}"
        )
    uses_proprio = getattr(policy, "proprio_proj", None) is not None
    stats = policy.action_stats
    if stats is None:
        raise ExportError(
            "the checkpoint has no action statistics (action_stats.json); re-save it with save_pretrained"
        )

    class GreedyPolicyGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            for cam in contract.observation.cameras:
                wy, wx = _resize_matrices(policy, cam.height, cam.width)
                self.register_buffer(f"wy_{cam.name}", wy)
                self.register_buffer(f"wx_{cam.name}", wx)
            mean = stats.proprio_mean if stats.proprio_mean is not None else np.zeros(8, np.float32)
            std = stats.proprio_std if stats.proprio_std is not None else np.ones(8, np.float32)
            self.register_buffer("proprio_mean", torch.as_tensor(np.asarray(mean, np.float32)))
            self.register_buffer("proprio_std", torch.as_tensor(np.asarray(std, np.float32)))

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            images, rest = inputs[: len(cams)], list(inputs[len(cams) :])
            proprio = rest.pop(0) if uses_proprio else None
            input_ids, attention_mask = rest
            pixels = []
            for name, img in zip(cams, images, strict=True):
                x = img.permute(0, 3, 1, 2).float() / 255.0
                pixels.append(
                    torch.matmul(
                        torch.matmul(getattr(self, f"wy_{name}"), x), getattr(self, f"wx_{name}").t()
                    )
                )
            batch = {
                "pixel_values": torch.stack(pixels, dim=1),
                "input_ids": input_ids,
                "attention_mask": attention_mask,
            }
            if proprio is not None:
                batch["proprio"] = (proprio - self.proprio_mean) / self.proprio_std
            out = self.policy.greedy_decode(batch)  # the torch policy's own decoding, traced
            return out.tokens, out.actions, out.logprobs, out.values

    names = (
        [f"image_{c}" for c in cams] + (["proprio"] if uses_proprio else []) + ["input_ids", "attention_mask"]
    )
    decoding = "autoregressive-unrolled" if policy.autoregressive else "parallel"
    return GreedyPolicyGraph().eval(), names, decoding


GRAPH_OUTPUTS = ("tokens", "actions", "logprob", "value")


def _run_exporter(
    exporter: str, module: Any, args: tuple, path: Path, input_names: list[str], opset: int
) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
        if exporter == "torchscript":
            dynamic_axes: dict[str, dict[int, str]] = {
                n: {0: "batch"} for n in (*input_names, *GRAPH_OUTPUTS)
            }
            dynamic_axes["input_ids"][1] = dynamic_axes["attention_mask"][1] = "text"
            torch.onnx.export(
                module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                output_names=list(GRAPH_OUTPUTS), dynamic_axes=dynamic_axes, do_constant_folding=True,
            )  # fmt: skip
        elif exporter == "dynamo":
            batch, text = (
                torch.export.Dim("batch", min=1, max=4096),
                torch.export.Dim("text", min=2, max=4096),
            )
            shapes = tuple(
                {0: batch, 1: text} if n in ("input_ids", "attention_mask") else {0: batch}
                for n in input_names
            )
            torch.onnx.export(
                module, args, str(path), dynamo=True, opset_version=max(opset, 18), input_names=input_names,
                output_names=list(GRAPH_OUTPUTS), dynamic_shapes=(shapes,), external_data=False, verbose=False,
            )  # fmt: skip
        else:
            raise ExportError(f"unknown exporter {exporter!r}; use 'auto', 'torchscript' or 'dynamo'")


def _graph_feeds(
    policy: Any, input_names: list[str], observations: Sequence[Observation]
) -> dict[str, np.ndarray]:
    """Feeds built with the *torch* policy's tokenizer (the reference the runtime must match)."""
    ids, mask = policy.prepare_text([o.instruction for o in observations])
    feeds: dict[str, np.ndarray] = {}
    for name in input_names:
        if name.startswith("image_"):
            feeds[name] = np.stack([o.images[name[len("image_") :]] for o in observations])
        elif name == "proprio":
            feeds[name] = np.stack([o.proprio() for o in observations]).astype(np.float32)
    feeds["input_ids"], feeds["attention_mask"] = ids.cpu().numpy(), mask.cpu().numpy()
    return feeds


def export_onnx(
    policy: Any, example: Sequence[Observation], path: Path, opset: int = 17, options_exporter: str = "auto"
) -> dict[str, Any]:
    """Write the greedy policy graph to ``path`` with a dynamic batch and text length.

    ``options_exporter``: "torchscript" (the tracing exporter: fast, the unrolled loop is
    simply traced), "dynamo" (``torch.export``: slower, stricter) or "auto" (tracing, then
    dynamo if tracing fails).
    """
    import torch

    module, input_names, decoding = _build_graph_module(policy)
    feeds = _graph_feeds(policy, input_names, example)
    args = tuple(torch.as_tensor(feeds[n]) for n in input_names)
    errors = []
    for exporter in ("torchscript", "dynamo") if options_exporter == "auto" else (options_exporter,):
        try:
            _run_exporter(exporter, module, args, path, input_names, opset)
            used = exporter
            break
        except Exception as exc:  # both exporters raise a zoo of types; the message is what helps
            errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            path.unlink(missing_ok=True)
    else:
        raise ExportError(
            f"torch.onnx.export failed for the {policy.config.family} policy ({'; '.join(errors)})"
        )
    shapes = {
        "tokens": ["batch", policy.config.num_action_tokens],
        "actions": ["batch", policy.config.chunk_size, 7],
        "logprob": ["batch"],
        "value": ["batch"],
    }
    dtypes = {"tokens": "int64", "actions": "float32", "logprob": "float32", "value": "float32"}
    inputs: dict[str, dict[str, Any]] = {}
    for cam in policy.contract.observation.cameras:
        inputs[f"image_{cam.name}"] = {
            "source": f"image:{cam.name}", "dtype": "uint8", "shape": ["batch", cam.height, cam.width, 3]
        }  # fmt: skip
    if "proprio" in input_names:
        inputs["proprio"] = {"source": "proprio", "dtype": "float32", "shape": ["batch", 8]}
    inputs["input_ids"] = {"source": "input_ids", "dtype": "int64", "shape": ["batch", "text"]}
    inputs["attention_mask"] = {"source": "attention_mask", "dtype": "int64", "shape": ["batch", "text"]}
    return {
        "file": path.name,
        "decoding": decoding,
        "opset": _graph_opset(path),
        "exporter": f"torch.onnx ({used}), torch {torch.__version__}",
        "inputs": inputs,
        "outputs": {k: {"dtype": dtypes[k], "shape": shapes[k]} for k in GRAPH_OUTPUTS},
        "greedy": True,
        "kv_cache": "in-graph (unrolled)" if decoding != "parallel" else False,
    }


def _graph_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_tokenizer(policy: Any, path: Path) -> dict[str, Any]:
    """Copy the instruction tokenizer to ``path``; return the manifest's ``instruction`` section."""
    import tempfile

    tok = policy.tokenizer
    if tok is None:
        raise ExportError("the checkpoint has no instruction tokenizer (instruction_tokenizer.json)")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(tok.save(tmp), path)
    return {  # the rules the checkpoint's tokenizer follows, read from it (never restated here)
        "tokenizer": path.name,
        "template": tok.prompt_template,
        "strip_chars": tok.strip_chars,
        "lowercase": bool(tok.lowercase),
        "prefix_ids": [int(i) for i in tok.prefix_ids],
        "suffix_ids": [int(i) for i in tok.suffix_ids],
        "add_special_tokens": bool(tok.add_special_tokens),
        "max_length": int(tok.max_length),
        "pad_token_id": int(tok.pad_id),
        "padding_side": tok.padding_side,
        "pad_to_max_length": bool(tok.pad_to_max_length),
    }


def build_manifest(
    policy: Any, info: dict[str, Any], model: dict[str, Any], instruction: dict[str, Any]
) -> dict[str, Any]:
    """Everything but ``source``, ``parity``, ``files`` and ``bundle_id`` (filled by the caller)."""
    from simbridge.training.models import modeling
    from simbridge.training.models.action_tokenizer import NORMALIZATION_KIND

    cfg, contract, stats = policy.config, policy.contract, policy.action_stats
    size = int(cfg.image_size)
    configs = {"siglip": cfg.siglip_config, "dinov2": cfg.dinov2_config}
    normalize = [
        {"encoder": name, "mean": list(mean), "std": list(std)}
        for name, (mean, std) in modeling.ENCODER_NORMALIZATION.items()
        if configs.get(name) is not None
    ]
    cameras = [
        {
            "name": c.name, "height": c.height, "width": c.width, "dtype": "uint8", "layout": "HWC",
            "channel_order": "RGB", "resize": [size, size], "interpolation": modeling.RESIZE_INTERPOLATION,
            "scale": 1.0 / 255.0, "mean": normalize[0]["mean"], "std": normalize[0]["std"], "normalize": normalize,
            "applied_in": "graph",
        }
        for c in contract.observation.cameras
    ]  # fmt: skip
    uses_proprio = "proprio" in model["inputs"]
    proprio = {
        "enabled": uses_proprio,
        "dim": 8,
        "names": ["x", "y", "z", "qw", "qx", "qy", "qz", "gripper_width"],
        "mean": None if stats.proprio_mean is None else [float(v) for v in stats.proprio_mean],
        "std": None if stats.proprio_std is None else [float(v) for v in stats.proprio_std],
        "applied_in": "graph",
    }
    action = {
        "dim": 7,
        "names": contract.to_dict()["action"]["names"],
        "chunk_size": int(cfg.chunk_size),
        "control_rate_hz": float(contract.action.control_rate_hz),
        "num_bins": int(cfg.num_action_bins),
        "output": "regression"
        if getattr(cfg, "use_regression_head", False) and model["decoding"] == "parallel"
        else "bins",
        "normalization": {
            "kind": f"{NORMALIZATION_KIND}; bins -> bin_values (null: centres of uniform bins)",
            "bin_values": None
            if cfg.action_bin_values is None
            else [float(v) for v in cfg.action_bin_values],
            "action_token_offset": int(policy.action_token_begin),
            **{
                k: v
                for k, v in stats.to_dict().items()
                if k in ("q01", "q99", "normalize_mask", "num_samples")
            },
            "applied_in": "graph",
        },
        "low": [float(v) for v in contract.action.low],
        "high": [float(v) for v in contract.action.high],
    }
    return {
        "family": cfg.family,
        "preset": cfg.preset,
        "contract": contract.to_dict(),
        "observation": {"cameras": cameras, "proprio": proprio},
        "instruction": instruction,
        "action": action,
        "model": model,
    }


# --- export -------------------------------------------------------------------------------


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
    signing_key = _signing_key(options)  # a bad key fails now, not after a minute of exporting
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
        report = check_parity(policy, staging, manifest, observations, options.tolerance, source)
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


def torch_reference(policy: Any, observations: Sequence[Observation]) -> dict[str, np.ndarray]:
    """What the torch policy does with these observations (greedy), as numpy."""
    import torch

    with torch.no_grad():
        batch = policy.prepare(list(observations))
        out = policy.act(batch, deterministic=True)
    return {
        "tokens": out.tokens.cpu().numpy(),
        "actions": out.actions.cpu().float().numpy(),
        "logprob": out.logprobs.cpu().float().numpy(),
        "value": out.values.cpu().float().numpy(),
        "input_ids": batch["input_ids"].cpu().numpy(),
        "attention_mask": batch["attention_mask"].cpu().numpy(),
    }


def check_parity(
    policy: Any,
    staging: Path,
    manifest: dict[str, Any],
    observations: Sequence[Observation],
    tolerance: float,
    source: str,
) -> ParityReport:
    """Torch vs the bundle runtime (on the staged, not yet committed files): the whole batch,
    then single observations. Preprocessing is compared too (token ids must be identical)."""
    from simbridge.deploy.runtime import BundlePolicy

    try:  # the draft stays in memory: nothing claims a parity that has not been checked yet
        runtime = BundlePolicy.from_unverified_staging(staging, manifest, providers=["CPUExecutionProvider"])
    except BundleError as exc:
        raise ExportError(f"the exported graph does not load in onnxruntime: {exc}") from exc
    report = ParityReport(
        passed=True, num_observations=len(observations), source=source, tolerance=tolerance,
        providers=list(runtime.providers),
    )  # fmt: skip
    for batch in (list(observations), [observations[0]], [observations[-1]]):
        report.batch_sizes.append(len(batch))
        expected = torch_reference(policy, batch)
        feeds = runtime.prepare(batch)
        for key in ("input_ids", "attention_mask"):
            if not np.array_equal(feeds[key], expected[key]):
                report.problems.append(
                    f"the runtime's {key} differ from torch's at batch size {len(batch)} (instruction tokenization)"
                )
        got = runtime.infer(batch)
        mismatches = int(np.sum(expected["tokens"] != got["tokens"]))
        report.token_mismatches += mismatches
        if mismatches:
            report.problems.append(f"{mismatches} action token(s) differ at batch size {len(batch)}")
        for key in ("actions", "logprob", "value"):
            diff = float(np.max(np.abs(expected[key].astype(np.float64) - got[key].astype(np.float64))))
            report.max_abs_diff[key] = max(report.max_abs_diff.get(key, 0.0), diff)
    for key, diff in report.max_abs_diff.items():
        if not diff <= tolerance:  # also catches NaN
            report.problems.append(f"{key} differ by up to {diff:.3g} > tolerance {tolerance:g}")
    report.passed = not report.problems
    return report


def _signing_key(options: ExportOptions) -> Any:
    if options.signing_key is None:
        return None
    from simbridge.deploy.signing import load_private_key

    return load_private_key(options.signing_key)


def _software_version() -> str:
    from simbridge.data.runs import software_version

    return software_version()


# --- watch mode ---------------------------------------------------------------------------


def read_announcements(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``announce.jsonl`` after byte ``offset``; the new offset.

    A line still being written (no trailing newline yet) is left for the next poll; a line
    that is not valid JSON is reported and skipped.
    """
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    entries = []
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or "path" not in entry:
                raise ValueError("no 'path'")
            entries.append(entry)
        except ValueError as exc:
            print(f"[export] {path}: skipping malformed announcement {raw[:120]!r} ({exc})", file=sys.stderr)
    return entries, offset + end + 1


def _bundle_source_sha(bundle: Path) -> str | None:
    try:
        return read_manifest(bundle)["source"]["checkpoint_sha256"]
    except (BundleError, KeyError, TypeError):
        return None


def _signed_by(bundle: Path, key: Any) -> bool:
    """Whether ``bundle`` verifies with ``key``'s signature (True when no key is asked for)."""
    if key is None:
        return True
    try:
        verify_bundle(bundle, trusted_keys=[key.public_key()])
    except BundleError:
        return False
    return True


def remove_stale_staging(export_dir: Path) -> list[Path]:
    """Delete staging directories a killed exporter left behind (``.<name>.tmp-*``)."""
    removed = []
    if export_dir.is_dir():
        for p in export_dir.iterdir():
            if p.is_dir() and p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def watch(
    run_dir: str | Path,
    export_dir: str | Path,
    *,
    options: ExportOptions | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    max_exports: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Follow ``<run_dir>/checkpoints/announce.jsonl`` and export each announced checkpoint to
    ``<export_dir>/<checkpoint-name>/``, moving ``<export_dir>/latest`` to the newest iteration.

    Returns the bundles written. Stops after ``max_exports`` bundles or ``timeout_s`` seconds
    (runs until interrupted when both are None). A checkpoint whose export fails is reported
    and skipped; the watcher keeps going. Restarting a watcher skips checkpoints already
    exported (same checkpoint hash; with a signing key: and signed by it).

    Raises :class:`ExportError` before creating anything when ``run_dir`` does not exist (a
    typo would otherwise wait forever), :class:`BundleError` when the signing key is unusable.
    """
    say = log or (lambda msg: print(f"[export --watch] {msg}", file=sys.stderr, flush=True))
    run_dir, export_dir = Path(run_dir).absolute(), Path(export_dir).absolute()
    announce = run_dir / "checkpoints" / ANNOUNCE_FILE
    if not run_dir.is_dir():
        raise ExportError(
            f"run directory {run_dir} does not exist{' (it is a file)' if run_dir.exists() else ''}; "
            "pass the trainer's run directory (runs/<algo>/<stamp>, the one holding checkpoints/), "
            "or start the trainer first"
        )
    signing_key = _signing_key(options or ExportOptions())
    export_dir.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_staging(export_dir):
        say(f"removed {p.name} left by an interrupted export")
    poll_s = max(0.05, float(poll_s))
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    offset, seen, written = 0, set(), []
    latest_iteration = -1
    if not announce.exists():
        say(f"waiting for {announce} (the trainer writes it with its first checkpoint)")
    while True:
        entries, offset = read_announcements(announce, offset)
        for entry in entries:
            ckpt = Path(entry["path"])
            ckpt = ckpt if ckpt.is_absolute() else run_dir / "checkpoints" / ckpt
            if ckpt.name in seen:
                continue
            seen.add(ckpt.name)
            iteration = int(entry.get("iteration", -1))
            dest = export_dir / ckpt.name
            try:
                if (
                    dest.exists()
                    and ckpt.is_dir()
                    and _bundle_source_sha(dest) == hash_tree(ckpt)
                    and _signed_by(dest, signing_key)
                ):
                    say(f"{ckpt.name}: already exported")
                else:
                    result = export_checkpoint(
                        ckpt, dest, options=options, overwrite=dest.exists(), progress=say
                    )
                    written.append(result.bundle)
                if iteration >= latest_iteration:
                    update_latest(export_dir, ckpt.name)
                    latest_iteration = iteration
                    say(f"latest -> {ckpt.name}")
            except (ExportError, BundleError, OSError, ValueError) as exc:
                say(f"{ckpt.name}: export failed, skipped: {exc}")
            if max_exports is not None and len(written) >= max_exports:
                return written
        if deadline is not None and time.monotonic() >= deadline:
            say(f"timeout after {timeout_s:g} s; {len(written)} bundle(s) written")
            return written
        remaining = poll_s if deadline is None else min(poll_s, max(0.0, deadline - time.monotonic()))
        time.sleep(remaining)
