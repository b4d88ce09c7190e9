"""The parity check: the torch policy vs the bundle runtime on the same observations, and the
observations it uses (generated from the contract, or recorded in an episode store).

The same observations go through ``policy.act(policy.prepare(obs), deterministic=True)`` in
torch and through :class:`~simbridge.deploy.runtime.BundlePolicy` — the very code the robot
runs, tokenization included — on the staged bundle, loaded with its in-memory draft manifest
(``BundlePolicy.from_unverified_staging``: nothing on disk claims a parity not yet checked).
Token ids fed to the graph and the action tokens must be identical, continuous outputs
(actions, log-prob, value) within ``tolerance``. The check runs the whole batch (dynamic batch
dimension) and single observations (what the robot sends).

Lossy levers (int8 quantization, :mod:`.levers`) cannot match tokens exactly: with an
``action_tolerance`` the check runs in ``"decoded-actions"`` mode. Tokenization must still be
identical; the decoded actions (physical units) must agree within ``action_tolerance`` times each
action dimension's range (contract ``action.high - action.low``); token flips are counted and
reported, not failed on by themselves (a flip that moves an action beyond the tolerance fails);
log-prob and value differences are recorded, not gated. The record then carries ``mode``,
``action_tolerance``, ``max_action_diff_fraction``, ``token_flips`` and ``tokens_compared`` instead
of the exact mode's ``tolerance`` and ``token_mismatches``.

Torch is imported lazily (:func:`torch_reference`); the observation generators need only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simbridge.data.spec import Observation, PolicyContract
from simbridge.deploy.bundle import BundleError
from simbridge.deploy.export.options import ExportError


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
    mode: str = "exact"  # "exact" | "decoded-actions" (lossy levers)
    action_tolerance: float | None = None  # decoded-actions mode: fraction of each dimension's range
    max_action_diff_fraction: list[float] = field(default_factory=list)  # per action dimension
    token_flips: int = 0  # decoded-actions mode: action tokens that differ from torch's
    tokens_compared: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.mode == "exact":
            for key in ("action_tolerance", "max_action_diff_fraction", "token_flips", "tokens_compared"):
                out.pop(key)
        else:  # the exact mode's gates (absolute tolerance, identical tokens) do not apply
            out.pop("tolerance")
            out.pop("token_mismatches")
        return out


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


# --- the check ---------------------------------------------------------------------------


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
    action_tolerance: float | None = None,
) -> ParityReport:
    """Torch vs the bundle runtime (on the staged, not yet committed files): the whole batch,
    then single observations. Preprocessing is compared too (token ids must be identical).
    ``action_tolerance``: decoded-actions mode (module docstring), else exact mode."""
    from simbridge.deploy.runtime import BundlePolicy

    try:  # the draft stays in memory: nothing claims a parity that has not been checked yet
        runtime = BundlePolicy.from_unverified_staging(staging, manifest, providers=["CPUExecutionProvider"])
    except BundleError as exc:
        raise ExportError(f"the exported graph does not load in onnxruntime: {exc}") from exc
    report = ParityReport(
        passed=True, num_observations=len(observations), source=source, tolerance=tolerance,
        providers=list(runtime.providers),
    )  # fmt: skip
    lossy = action_tolerance is not None
    action_range = np.maximum(
        np.asarray(manifest["action"]["high"], np.float64) - np.asarray(manifest["action"]["low"], np.float64),
        1e-12,
    )
    worst = np.zeros_like(action_range)  # max |torch - bundle| per action dimension, physical units
    if lossy:
        report.mode, report.action_tolerance = "decoded-actions", float(action_tolerance)
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
        report.tokens_compared += int(expected["tokens"].size)
        if lossy:
            report.token_flips += mismatches
        else:
            report.token_mismatches += mismatches
            if mismatches:
                report.problems.append(f"{mismatches} action token(s) differ at batch size {len(batch)}")
        delta = np.abs(expected["actions"].astype(np.float64) - got["actions"].astype(np.float64))
        worst = np.maximum(worst, delta.reshape(-1, delta.shape[-1]).max(axis=0))
        for key in ("actions", "logprob", "value"):
            diff = float(np.max(np.abs(expected[key].astype(np.float64) - got[key].astype(np.float64))))
            report.max_abs_diff[key] = max(report.max_abs_diff.get(key, 0.0), diff)
    fraction = worst / action_range
    report.max_action_diff_fraction = [float(f) for f in fraction]
    if lossy:
        over = [d for d in range(len(fraction)) if not fraction[d] <= action_tolerance]  # NaN fails
        if over:
            names = manifest["action"].get("names") or [str(d) for d in range(len(fraction))]
            dims = ", ".join(
                f"{names[d]} by {worst[d]:.3g} ({fraction[d]:.1%} of its range)" for d in over
            )
            report.problems.append(
                f"decoded actions differ beyond the action tolerance {action_tolerance:.1%} of each "
                f"dimension's range: {dims}; {report.token_flips} of {report.tokens_compared} action "
                "tokens flipped"
            )
    else:
        for key, diff in report.max_abs_diff.items():
            if not diff <= tolerance:  # also catches NaN
                report.problems.append(f"{key} differ by up to {diff:.3g} > tolerance {tolerance:g}")
    report.passed = not report.problems
    return report
