"""A converted OpenVLA / OpenVLA-OFT policy next to what the checkpoint's own files define.

:func:`check_checkpoint` (what ``simbridge check-checkpoint`` runs) loads a checkpoint directory
with the converter and compares, on one observation:

* **prompt**: the policy's token ids with what the checkpoint's processor gives (its
  ``tokenizer.json`` with ``<s>`` on OpenVLA's prompt, instruction lowercased, ``▁`` appended as
  ``predict_action`` does) and, for the default task, with the ids the real Llama-2 tokenizer
  gives (:data:`DOCUMENTED_PROMPT_IDS`);
* **sequence**: the LM input must be ``<s>`` at position 0, the projected patches (of every image,
  then OFT's proprio token) at 1..P, the rest of the prompt after them;
* **image**: each backbone's normalized tensor against ``preprocessor_config.json``'s pipeline run
  with PIL (bicubic resize, ToTensor, Normalize), with its statistics;
* **proprio** (OFT): q01/q99 normalization, clipped, from ``dataset_statistics.json``;
* **action**: the first predicted chunk against OpenVLA's decoding of the emitted token ids
  (``centers[clip(V - id - 1, 0, 254)]``) or OFT's L1 output, unnormalized with the checkpoint's
  statistics (``mask`` defaulting to all True).

Everything expected is computed here from the checkpoint's files, not by the policy's code path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import Observation
from simbridge.training.models.prismatic import LLAMA2_EMPTY_TOKEN_ID, OPENVLA_PROMPT

#: A LIBERO task and its prompt's ids under the real Llama-2 tokenizer (recorded with
#: transformers 4.40.1 / LlamaTokenizerFast for "In: What action should the robot take to
#: {task.lower()}?\nOut:" plus predict_action's 29871).
DOCUMENTED_TASK = "Pick up the black bowl between the plate and the ramekin and place it on the plate"
DOCUMENTED_PROMPT_IDS = [
    1, 512, 29901, 1724, 3158, 881, 278, 19964, 2125, 304, 5839, 701, 278, 4628, 12580, 29880, 1546,
    278, 15284, 322, 278, 364, 420, 9089, 322, 2058, 372, 373, 278, 15284, 29973, 13, 3744, 29901, 29871,
]  # fmt: skip
_DEFAULT_PROCESSOR = {"interpolations": ["bicubic"] * 2, "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
                      "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]}  # fmt: skip


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    checks: list[Check] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # what is printed next to the checks

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks], "values": self.values}


def processor_prompt_ids(tokenizer_file: str | Path, instruction: str) -> list[int]:
    """What OpenVLA's processor + ``predict_action`` feed the model for ``instruction``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = tok.encode(OPENVLA_PROMPT.format(instruction=instruction.lower()), add_special_tokens=True).ids
    return ids if ids[-1] == LLAMA2_EMPTY_TOKEN_ID else [*ids, LLAMA2_EMPTY_TOKEN_ID]


def processor_pixel_values(checkpoint: str | Path, image: np.ndarray, size: int) -> list[np.ndarray]:
    """Prismatic's image processor on one uint8 HWC image: one (3, size, size) array per backbone."""
    from PIL import Image

    proc_file = Path(checkpoint) / "preprocessor_config.json"
    proc = json.loads(proc_file.read_text()) if proc_file.is_file() else _DEFAULT_PROCESSOR
    pil = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    out = []
    for interp, mean, std in zip(proc["interpolations"], proc["means"], proc["stds"], strict=True):
        assert interp == "bicubic", interp  # the converter refuses the others
        resized = pil if pil.size == (size, size) else pil.resize((size, size), Image.BICUBIC)
        x = np.asarray(resized, np.float32).transpose(2, 0, 1) / 255.0
        out.append(
            (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
        )
    return out


def checkpoint_norm_stats(checkpoint: str | Path, unnorm_key: str | None) -> dict[str, Any]:
    """``norm_stats[unnorm_key]`` as upstream reads it (``dataset_statistics.json`` first)."""
    path = Path(checkpoint)
    file = path / "dataset_statistics.json"
    stats = (
        json.loads(file.read_text())
        if file.is_file()
        else json.loads((path / "config.json").read_text())["norm_stats"]
    )
    key = unnorm_key if unnorm_key is not None else next(iter(stats))
    return stats[key]


def decode_action_ids(ids: np.ndarray, vocab_size: int, num_bins: int = 256) -> np.ndarray:
    """OpenVLA's ``predict_action``: token ids -> normalized actions (bin centres)."""
    edges = np.linspace(-1, 1, num_bins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    return centers[np.clip(vocab_size - np.asarray(ids) - 1, 0, centers.shape[0] - 1)]


def unnormalize(normalized: np.ndarray, action_stats: dict[str, Any]) -> np.ndarray:
    q01, q99 = np.asarray(action_stats["q01"]), np.asarray(action_stats["q99"])
    mask = np.asarray(action_stats.get("mask", np.ones_like(q01, dtype=bool)), bool)
    return np.where(mask, 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)


def _stats(x: np.ndarray) -> dict[str, list[float]]:
    return {
        k: [round(float(v), 4) for v in getattr(x.reshape(3, -1), k)(1)]
        for k in ("mean", "std", "min", "max")
    }


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic smooth test image (gradients and a block), uint8 HWC."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([200 * xx + 30, 180 * yy + 40, 120 + 100 * np.sin(6 * xx + 3 * yy + seed)], -1)
    img[height // 3 : height // 2, width // 4 : width // 2] = (220, 40 + 30 * seed, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def check_checkpoint(path: str | Path, policy: Any = None, instruction: str = DOCUMENTED_TASK,
                     images: list[np.ndarray] | None = None, proprio: np.ndarray | None = None,
                     unnorm_key: str | None = None, **load: Any) -> CheckReport:  # fmt: skip
    """Load ``path`` (unless ``policy`` is given) and compare it with the checkpoint's definition."""
    from simbridge.training.models.loaders import load_pretrained_policy

    path = Path(path)
    policy = policy or load_pretrained_policy(path, unnorm_key=unnorm_key, **load)
    cfg, report = policy.config, CheckReport()
    raw = json.loads((path / "config.json").read_text())
    vocab = int(raw["text_config"]["vocab_size"]) - int(raw.get("pad_to_multiple_of", 0))
    stats = checkpoint_norm_stats(path, unnorm_key)

    # Prompt.
    ids = policy.prepare_text([instruction])[0][0].tolist()
    expected = processor_prompt_ids(path / "tokenizer.json", instruction)
    report.values["prompt"] = {"text": OPENVLA_PROMPT.format(instruction=instruction.lower()), "ids": ids}
    report.add("prompt ids = the checkpoint's processor", ids == expected, f"expected {expected}")
    if instruction == DOCUMENTED_TASK:
        report.add("prompt ids = Llama-2's documented ids", ids == DOCUMENTED_PROMPT_IDS,
                   f"expected {DOCUMENTED_PROMPT_IDS}")  # fmt: skip

    # Images, proprio and the observation they form.
    cams = policy.contract.observation.cameras
    images = images or [synthetic_image(c.height, c.width, i) for i, c in enumerate(cams)]
    p = np.asarray(proprio if proprio is not None else _mid_proprio(stats), np.float32)
    obs = Observation(images={c.name: im for c, im in zip(cams, images, strict=True)}, ee_pose=p[:7],
                      gripper_width=float(p[7]), joint_positions=np.zeros(7, np.float32), instruction=instruction)  # fmt: skip
    with torch.no_grad():
        batch = policy.prepare([obs])
        inputs = policy.encoder_inputs(batch["pixel_values"].flatten(0, 1))
    report.values["image"] = []
    for cam_i, (cam, image) in enumerate(zip(cams, images, strict=True)):
        want = processor_pixel_values(path, image, cfg.image_size)
        exact = image.shape[:2] == (cfg.image_size, cfg.image_size)
        for (name, got), ref in zip(inputs, want, strict=True):
            g = got[cam_i].float().cpu().numpy()
            diff = float(np.abs(g - ref).max())
            # Not exact when resizing: PIL rounds each pass to uint8 (see simbridge.training.models.images).
            tol = 1e-5 if exact else 1.6 / 255 / float(np.min(_DEFAULT_PROCESSOR["stds"]))
            report.values["image"].append({"camera": cam.name, "backbone": name, "shape": list(g.shape),
                                           "got": _stats(g), "processor": _stats(ref), "max_abs_diff": diff})  # fmt: skip
            report.add(
                f"image {cam.name}/{name} = the processor",
                diff <= tol,
                f"max |diff| {diff:.2e} (tol {tol:.1e})",
            )
    if cfg.use_proprio:
        s = stats["proprio"]
        q01, q99 = np.asarray(s["q01"]), np.asarray(s["q99"])
        want = np.clip(np.where(s.get("mask", True), 2 * (p - q01) / (q99 - q01 + 1e-8) - 1, p), -1, 1)
        got_p = batch["proprio"][0].cpu().numpy()
        report.add("proprio = OFT's q01/q99 normalization", np.allclose(got_p, want, atol=1e-4),
                   f"got {np.round(got_p, 4).tolist()} expected {np.round(want, 4).tolist()}")  # fmt: skip

    _check_sequence(policy, batch, ids, report)

    # The first action chunk.
    with torch.no_grad():
        out = policy.act(batch, deterministic=True)
    acts = out.actions[0].float().cpu().numpy()
    head = cfg.family == "openvla-oft" and cfg.use_regression_head
    normalized = (
        out.normalized_actions[0].cpu().numpy()
        if head
        else decode_action_ids(out.token_ids[0].cpu().numpy(), vocab)
    )
    want = unnormalize(normalized.reshape(acts.shape), stats["action"])
    report.values["action"] = {"token_ids": out.token_ids[0].tolist(), "normalized": np.round(normalized, 5).tolist(),
                               "actions": np.round(acts, 5).tolist(), "q01": stats["action"]["q01"],
                               "q99": stats["action"]["q99"], "unnorm_key": unnorm_key}  # fmt: skip
    what = "OFT's L1 head output unnormalized" if head else "OpenVLA's decoding of the emitted ids"
    report.add(
        f"actions = {what}", np.allclose(acts, want, atol=1e-5), f"expected {np.round(want, 5).tolist()}"
    )
    return report


def _mid_proprio(stats: dict[str, Any]) -> np.ndarray:
    if "proprio" not in stats:
        return np.array([0.4, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0, 0.04], np.float32)
    q01, q99 = np.asarray(stats["proprio"]["q01"]), np.asarray(stats["proprio"]["q99"])
    return (q01 + 0.3 * (q99 - q01)).astype(np.float32)


def _check_sequence(policy: Any, batch: dict[str, torch.Tensor], ids: list[int], report: CheckReport) -> None:
    """Prismatic's LM input: <s> at position 0, the vision (+ proprio) tokens at 1..P, the prompt after."""
    with torch.no_grad():
        embeds, mask = policy.prefix(batch)
        vision = policy.vision_tokens(batch["pixel_values"])[0]
        text = policy.embed_tokens(torch.tensor([ids], device=embeds.device))[0]
    keep = mask[0].bool()
    seq, positions = embeds[0][keep], (mask[0].cumsum(-1) - 1)[keep]
    n_vis = vision.shape[0] + int(policy.config.use_proprio)
    want = torch.cat([text[:1], vision, seq[1 + vision.shape[0] : n_vis + 1], text[1:]])
    same = seq.shape == want.shape and torch.allclose(seq, want, atol=1e-6)
    contiguous = bool(torch.equal(positions, torch.arange(len(positions), device=positions.device)))
    report.values["sequence"] = {"length": len(seq), "bos": 0, "vision": [1, vision.shape[0]],
                                 "proprio": n_vis if policy.config.use_proprio else None,
                                 "prompt": [n_vis + 1, len(seq) - 1]}  # fmt: skip
    report.add("sequence = <s>, vision tokens, prompt (positions 0..L-1)", same and contiguous,
               f"{len(seq)} tokens; vision at 1..{vision.shape[0]}, prompt from {n_vis + 1}")  # fmt: skip


def format_report(report: CheckReport) -> str:
    v = report.values
    lines = [f"prompt: {v['prompt']['text']!r}", f"  ids ({len(v['prompt']['ids'])}): {v['prompt']['ids']}"]
    if "sequence" in v:
        s = v["sequence"]
        lines.append(f"sequence: {s['length']} tokens: <s> at 0, vision {s['vision'][0]}..{s['vision'][1]}"
                     + (f", proprio at {s['proprio']}" if s["proprio"] else "") + f", prompt {s['prompt'][0]}..{s['prompt'][1]}")  # fmt: skip
    for im in v.get("image", []):
        lines.append(f"image {im['camera']}/{im['backbone']} {im['shape']}: mean {im['got']['mean']} std "
                     f"{im['got']['std']} | processor mean {im['processor']['mean']} std {im['processor']['std']}")  # fmt: skip
    a = v.get("action", {})
    if a:
        lines += [f"action token ids: {a['token_ids']}", f"normalized: {a['normalized'][:7]}",
                  f"first action: {a['actions'][0]}", f"  q01 {a['q01']}", f"  q99 {a['q99']}"]  # fmt: skip
    lines += [
        f"[{'ok' if c.ok else 'MISMATCH'}] {c.name}: {c.detail if not c.ok else ''}".rstrip(": ")
        for c in report.checks
    ]
    lines.append("conformant" if report.ok else "NOT conformant: see MISMATCH above")
    return "\n".join(lines)
