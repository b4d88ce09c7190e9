"""Training checkpoints: atomic directories in a run, an announcement log, and a Policy wrapper.

Layout inside a run directory (see :mod:`simbridge.data.runs`)::

    checkpoints/
      iter_000100/                 save_pretrained() files + simbridge_checkpoint.json
      iter_000200/
      announce.jsonl               one line per finished checkpoint (the exporter's watch mode tails it)

A checkpoint directory is written under a temporary name and renamed when complete, so a
reader (the exporter, an evaluation, a resumed run) never sees half a checkpoint; the
announcement line is appended only after the rename.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simbridge.data.spec import Observation, PolicyContract
from simbridge.training.models import VLAPolicy, check_policy_dir

CHECKPOINT_META = "simbridge_checkpoint.json"
ANNOUNCE_FILE = "announce.jsonl"
CHECKPOINT_PREFIX = "iter_"


class CheckpointError(FileNotFoundError):
    """A checkpoint is missing or incomplete; the message names the file and the fix."""


def _run_path(run_dir: Any) -> Path:
    return Path(getattr(run_dir, "path", run_dir))


def _plain(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "__dataclass_fields__"):
        from simbridge.data.config import to_dict

        return to_dict(obj)
    return json.loads(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def save_checkpoint(
    policy: VLAPolicy,
    run_dir: str | Path,
    iteration: int,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    config: Any = None,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<run_dir>/checkpoints/iter_<NNNNNN>/`` atomically, then announce it.

    ``training_state`` (optimizer/scheduler state dicts, RNG, step) goes to
    ``training_state.pt`` for resuming; evaluation and export ignore it.
    """
    root = _run_path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{int(iteration):06d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    policy.save_pretrained(tmp)
    if training_state is not None:
        torch.save(dict(training_state), tmp / "training_state.pt")
    meta = {
        "family": policy.config.family,
        "preset": policy.config.preset,
        "iteration": int(iteration),
        "metrics": _plain(dict(metrics or {})),
        "time": time.time(),
        "config": _plain(config),
        "extra": _plain(dict(extra or {})),
    }
    (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=2))
    if final.exists():  # re-saving an iteration (e.g. a resumed run): replace it whole
        old = root / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    with open(root / ANNOUNCE_FILE, "a") as f:
        f.write(
            json.dumps({"path": str(final.resolve()), "iteration": int(iteration), "time": meta["time"]})
            + "\n"
        )
        f.flush()
        os.fsync(f.fileno())
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest iteration first."""
    root = _run_path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and (p / CHECKPOINT_META).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def prune_checkpoints(run_dir: str | Path, keep_last: int, best_metric: str = "", higher_is_better: bool = True,
                      ) -> list[Path]:  # fmt: skip
    """Delete all but the newest ``keep_last`` complete checkpoints and the best one by
    ``best_metric`` (from each checkpoint's saved metrics; one without it is never the best).
    ``keep_last <= 0`` keeps everything. Returns the deleted directories."""
    found = list_checkpoints(run_dir)
    if keep_last <= 0 or len(found) <= keep_last:
        return []
    keep = set(found[-keep_last:])
    scored = [(float(m), p) for p in found if (m := checkpoint_meta(p).get("metrics", {}).get(best_metric)) is not None]
    if best_metric and scored:
        keep.add((max if higher_is_better else min)(scored, key=lambda mp: mp[0])[1])
    deleted = []
    for path in found:
        if path not in keep:
            trash = path.with_name(f".{path.name}.deleting-{os.getpid()}")
            os.replace(path, trash)  # never half a checkpoint under its own name
            shutil.rmtree(trash, ignore_errors=True)
            deleted.append(path)
    return deleted


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_meta(path: str | Path) -> dict:
    meta = Path(path) / CHECKPOINT_META
    if not meta.is_file():
        raise CheckpointError(
            f"{meta} is missing: {Path(path)} is not a complete SimBridge checkpoint "
            "(pick a directory listed in <run>/checkpoints/announce.jsonl)"
        )
    return json.loads(meta.read_text())


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (-> its latest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"checkpoint {p} does not exist; pass <run>/checkpoints/iter_NNNNNN or a run directory"
        )
    if (p / CHECKPOINT_META).is_file() or (p / "config.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise CheckpointError(f"{p} holds no checkpoint (no {CHECKPOINT_META}); pass a checkpoint directory")
    return latest


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> VLAPolicy:
    """Load a checkpoint (or a run's latest) as a policy in eval mode."""
    p = resolve_checkpoint(path)
    checkpoint_meta(p)
    try:
        check_policy_dir(p)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    return VLAPolicy.from_pretrained(p).to(device)


def load_training_state(path: str | Path) -> dict | None:
    f = Path(path) / "training_state.pt"
    return torch.load(f, map_location="cpu", weights_only=False) if f.is_file() else None


class CheckpointPolicy:
    """A torch checkpoint as a :class:`simbridge.data.spec.Policy` (for evaluation).

    ``deterministic=True`` takes the most likely bin of every action token (evaluation);
    otherwise it samples at ``temperature`` (RLinf evaluates at 0.6).
    """

    def __init__(
        self,
        path_or_policy: str | Path | VLAPolicy,
        deterministic: bool = True,
        temperature: float = 1.0,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ):
        if isinstance(path_or_policy, VLAPolicy):
            self.policy, self.path = path_or_policy, None
        else:
            self.path = resolve_checkpoint(path_or_policy)
            self.policy = load_checkpoint(self.path, device=device)
        self.policy.eval()
        self.deterministic = deterministic
        self.temperature = float(temperature)
        self.contract: PolicyContract = self.policy.contract
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.policy_id = self.path.name if self.path is not None else f"{self.policy.config.family}-in-memory"

    def reset(self) -> None:
        """Stateless between calls (the chunk is returned whole; executors queue it)."""

    @torch.no_grad()
    def predict_batch(self, observations: Sequence[Observation]) -> np.ndarray:
        """(B, K, 7) float32 actions for a batch of observations (vectorised evaluation)."""
        batch = self.policy.prepare(list(observations))
        out = self.policy.act(batch, deterministic=self.deterministic, temperature=self.temperature,
                              generator=self._generator)  # fmt: skip
        return out.actions.cpu().numpy().astype(np.float32)

    def predict(self, obs: Observation) -> np.ndarray:
        return self.predict_batch([obs])[0]
