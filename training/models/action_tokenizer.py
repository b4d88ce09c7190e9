"""Action normalization statistics and the 256-bin action discretization (OpenVLA style).

Physical actions (the contract's 7-D end-effector deltas + gripper) are mapped to ``[-1, 1]``
per dimension with the dataset's 1st/99th percentiles (clipped outside), then cut into
``NUM_BINS`` uniform bins. A bin id ``b`` becomes the vocabulary id ``vocab_size - NUM_BINS + b``
(the last 256 ids of the language model), which is how OpenVLA turns an LLM into a policy.

The statistics travel with every checkpoint (``action_stats.json``) and every exported
bundle, so a policy always de-normalizes with the numbers it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from simbridge.data.spec import ACTION_DIM, ACTION_NAMES, PROPRIO_DIM, ActionSpec

NUM_BINS = 256
#: Below this percentile range a dimension is treated as constant (no division by ~0).
_MIN_RANGE = 1e-6
STATS_FILE = "action_stats.json"
#: What :meth:`ActionStats.normalize` does, in a bundle manifest's words (``action.normalization``).
NORMALIZATION_KIND = "q01-q99 to [-1, 1]"


@dataclass
class ActionStats:
    """Per-dimension normalization of actions (and optionally of the proprio vector).

    ``normalize_mask[i]`` False leaves dimension ``i`` as it is (clipped to [-1, 1]): the
    gripper command is already +1 open / -1 closed, as in OpenVLA.
    """

    q01: np.ndarray
    q99: np.ndarray
    normalize_mask: np.ndarray = field(default_factory=lambda: np.array([True] * 6 + [False]))
    proprio_mean: np.ndarray | None = None
    proprio_std: np.ndarray | None = None
    num_samples: int = 0
    #: Clip normalized proprio to [-1, 1] (OpenVLA-OFT's q01/q99 proprio normalization does).
    proprio_clip: bool = False

    def __post_init__(self) -> None:
        self.q01 = np.asarray(self.q01, dtype=np.float32).reshape(ACTION_DIM)
        self.q99 = np.asarray(self.q99, dtype=np.float32).reshape(ACTION_DIM)
        self.normalize_mask = np.asarray(self.normalize_mask, dtype=bool).reshape(ACTION_DIM)
        if np.any(self.q99 < self.q01):
            bad = [ACTION_NAMES[i] for i in np.flatnonzero(self.q99 < self.q01)]
            raise ValueError(f"action stats: q99 < q01 for {bad}; recompute them from the dataset")
        if self.proprio_mean is not None:
            self.proprio_mean = np.asarray(self.proprio_mean, dtype=np.float32).reshape(PROPRIO_DIM)
            std = np.asarray(
                self.proprio_std if self.proprio_std is not None else np.ones(PROPRIO_DIM), np.float32
            )
            self.proprio_std = np.maximum(std.reshape(PROPRIO_DIM), 1e-3)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_actions(
        cls, actions: np.ndarray, proprio: np.ndarray | None = None, normalize_gripper: bool = False
    ) -> ActionStats:
        """1st/99th percentiles of ``actions`` (N, 7); mean/std of ``proprio`` (N, 8) if given."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, ACTION_DIM)
        a = a[np.all(np.isfinite(a), axis=1)]
        if len(a) == 0:
            raise ValueError("action stats: no finite actions to compute statistics from")
        mask = np.array([True] * 6 + [normalize_gripper])
        kw: dict = {}
        if proprio is not None:
            p = np.asarray(proprio, dtype=np.float64).reshape(-1, PROPRIO_DIM)
            kw = {"proprio_mean": p.mean(0), "proprio_std": p.std(0)}
        return cls(np.percentile(a, 1, axis=0), np.percentile(a, 99, axis=0), mask, num_samples=len(a), **kw)

    @classmethod
    def from_action_spec(cls, spec: ActionSpec | None = None) -> ActionStats:
        """Statistics spanning the contract's limits: a neutral default before data exists."""
        spec = spec or ActionSpec()
        return cls(spec.low, spec.high)

    # --- (de)normalization ----------------------------------------------------------------
    def _arrays(self, like: np.ndarray | torch.Tensor):
        lo, hi, m = self.q01, self.q99, self.normalize_mask
        if isinstance(like, torch.Tensor):
            lo, hi = torch.as_tensor(lo, device=like.device), torch.as_tensor(hi, device=like.device)
            m = torch.as_tensor(m, device=like.device)
        return lo, hi, m

    def normalize(self, actions: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Physical actions (..., 7) -> [-1, 1] (clipped)."""
        lo, hi, m = self._arrays(actions)
        rng = hi - lo
        lib = torch if isinstance(actions, torch.Tensor) else np
        safe = lib.where(rng > _MIN_RANGE, rng, lib.ones_like(rng))
        scaled = lib.where(rng > _MIN_RANGE, 2.0 * (actions - lo) / safe - 1.0, lib.zeros_like(actions))
        out = lib.where(m, scaled, actions)
        return out.clip(-1.0, 1.0) if lib is np else out.clamp(-1.0, 1.0)

    def denormalize(
        self, normalized: np.ndarray | torch.Tensor, clip: bool = True
    ) -> np.ndarray | torch.Tensor:
        """[-1, 1] (..., 7) -> physical actions (``clip=False``: values outside [-1, 1] extrapolate)."""
        lo, hi, m = self._arrays(normalized)
        lib = torch if isinstance(normalized, torch.Tensor) else np
        x = normalized
        if clip:
            x = normalized.clip(-1.0, 1.0) if lib is np else normalized.clamp(-1.0, 1.0)
        return lib.where(m, (x + 1.0) * 0.5 * (hi - lo) + lo, x)

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        if self.proprio_mean is None:
            return np.asarray(proprio, np.float32)
        out = (np.asarray(proprio, np.float32) - self.proprio_mean) / self.proprio_std
        return (out.clip(-1.0, 1.0) if self.proprio_clip else out).astype(np.float32)

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "action_names": list(ACTION_NAMES),
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
            "normalize_mask": self.normalize_mask.tolist(),
            "num_samples": int(self.num_samples),
            "num_bins": NUM_BINS,
        }
        if self.proprio_mean is not None:
            d["proprio_mean"] = self.proprio_mean.tolist()
            d["proprio_std"] = self.proprio_std.tolist()
            d["proprio_clip"] = bool(self.proprio_clip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionStats:
        return cls(
            q01=d["q01"],
            q99=d["q99"],
            normalize_mask=d.get("normalize_mask", [True] * 6 + [False]),
            proprio_mean=d.get("proprio_mean"),
            proprio_std=d.get("proprio_std"),
            num_samples=int(d.get("num_samples", 0)),
            proprio_clip=bool(d.get("proprio_clip", False)),
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / STATS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ActionStats:
        path = Path(directory) / STATS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: a policy directory needs its action statistics; "
                "re-save the policy with save_pretrained() or copy the file from the training run"
            )
        return cls.from_dict(json.loads(path.read_text()))


def discretize(normalized: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """[-1, 1] values -> bin ids ``0..num_bins-1`` (uniform bins, long)."""
    idx = torch.floor((normalized.clamp(-1.0, 1.0) + 1.0) * 0.5 * num_bins)
    return idx.clamp(0, num_bins - 1).long()


def bin_centers(bins: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Bin ids -> the centre of each bin in [-1, 1] (float32)."""
    return -1.0 + (2.0 * bins.float() + 1.0) / num_bins
