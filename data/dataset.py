"""Torch training view over episode stores: (observation at t, action chunk t..t+K-1) windows.

    ds = EpisodeDataset("runs/demos/expert.zarr", chunk_size=8, successful_only=True, splits=["train"])
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, collate_fn=collate_windows)
    batch = next(iter(loader))
    batch["observations"]   # list[Observation] -> policy.prepare(...)
    batch["actions"]        # (B, K, 7) float32, executed actions t..t+K-1
    batch["action_mask"]    # (B, K) bool, False where the chunk ran past the episode's end

Chunks that run past an episode's end are padded by repeating its last action (so a policy
learns to hold still at the end, as in OpenVLA-OFT and diffusion_policy) and masked.

Filters: ``successful_only`` (episodes labelled successful), ``splits`` (the task split an
episode was recorded in, ``EpisodeMeta.split``; the train / validation partition of ``simbridge
data split`` is a store of its own, and ``EpisodeMeta.partition``), ``interventions_only`` (only
windows whose step the human operator controlled: HIL-SERL's correction data), or any
``episode_filter(meta) -> bool``.

Low-dimensional arrays of the selected episodes are loaded at construction; images are read
per item (one frame per camera, cheap with the store's per-frame chunks) unless
``cache_images``. This module is the only one in ``simbridge.data`` that imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from simbridge.data.spec import EpisodeMeta, Observation, image_key
from simbridge.data.store import EpisodeStore, StoreError

_LOWDIM = (
    "ee_pose",
    "gripper_width",
    "joint_positions",
    "action",
    "policy_action",
    "intervention",
    "timestamp",
)


@dataclass(frozen=True)
class EpisodeRef:
    """One selected episode: which store, its index there, its rows in the data arrays, its metadata."""

    store: int  # index into the dataset's stores
    index: int  # episode index in that store
    rows: slice  # global rows in the store's data arrays
    meta: EpisodeMeta


class EpisodeDataset(Dataset):
    """Windows over the committed episodes of one or several stores (same cameras)."""

    def __init__(
        self,
        stores: str | os.PathLike | EpisodeStore | Sequence[str | os.PathLike | EpisodeStore],
        chunk_size: int = 1,
        *,
        cameras: Sequence[str] | None = None,
        successful_only: bool = False,
        interventions_only: bool = False,
        splits: Sequence[str] | None = None,
        episode_filter: Callable[[EpisodeMeta], bool] | None = None,
        cache_images: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size: at least 1, got {chunk_size}")
        if isinstance(stores, (str, os.PathLike, EpisodeStore)):
            stores = [stores]
        opened = [s if isinstance(s, EpisodeStore) else EpisodeStore(s) for s in stores]
        if not opened:
            raise StoreError("EpisodeDataset needs at least one store")
        self.paths = [s.path for s in opened]
        self._stores: list[EpisodeStore] | None = opened
        self.chunk_size = int(chunk_size)
        known = {c.name for c in opened[0].cameras}
        for s in opened[1:]:
            if {c.name for c in s.cameras} != known:
                raise StoreError(f"stores {self.paths[0]} and {s.path} record different cameras")
        self.cameras = tuple(cameras) if cameras else tuple(c.name for c in opened[0].cameras)
        unknown = sorted(set(self.cameras) - known)
        if unknown:
            raise StoreError(f"cameras {unknown} are not in the store(s); they record {sorted(known)}")

        self.episodes: list[EpisodeRef] = []
        for si, store in enumerate(opened):
            for i, meta in enumerate(store.metas()):
                if successful_only and meta.success is not True:
                    continue
                if splits is not None and meta.split not in splits:
                    continue
                if episode_filter is not None and not episode_filter(meta):
                    continue
                self.episodes.append(EpisodeRef(si, i, store.episode_slice(i), meta))

        # Low-dim arrays of the selected episodes, concatenated; windows index into them.
        self._lowdim: dict[str, np.ndarray] = {}
        self._images: dict[str, np.ndarray] | None = None
        starts, ends, windows = [], [], []
        offset = 0
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _LOWDIM}
        image_parts: dict[str, list[np.ndarray]] = {c: [] for c in self.cameras}
        for e, ep in enumerate(self.episodes):
            store = opened[ep.store]
            for k in _LOWDIM:
                parts[k].append(store.read(k, ep.rows, episode=ep.index))
            if cache_images:
                for c in self.cameras:
                    image_parts[c].append(store.read(image_key(c), ep.rows, episode=ep.index))
            n = ep.rows.stop - ep.rows.start
            steps = np.arange(n)
            if interventions_only:
                steps = steps[parts["intervention"][-1]]
            windows.append(np.stack([np.full(len(steps), e), steps], 1))
            starts.append(offset)
            ends.append(offset + n)
            offset += n
        if self.episodes:
            self._lowdim = {k: np.concatenate(v) for k, v in parts.items()}
            if cache_images:
                self._images = {c: np.concatenate(v) for c, v in image_parts.items()}
        self._starts = np.asarray(starts, np.int64)
        self._ends = np.asarray(ends, np.int64)
        self._windows = np.concatenate(windows).astype(np.int64) if windows else np.zeros((0, 2), np.int64)

    # pickling for DataLoader workers: reopen the stores in each worker
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stores"] = None
        return state

    def _store(self, i: int) -> EpisodeStore:
        if self._stores is None:
            self._stores = [EpisodeStore(p) for p in self.paths]
        return self._stores[i]

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def actions(self, key: str = "action") -> np.ndarray:
        """Every action of the selected episodes (N, 7), e.g. for ActionStats.from_actions.

        ``key="action"``: what was executed; ``key="policy_action"``: what the policy or expert
        proposed (NaN where nothing was recorded, e.g. steps a teleoperator drove alone).
        """
        if key not in ("action", "policy_action"):
            raise ValueError(f"key: 'action' or 'policy_action', got {key!r}")
        return self._lowdim.get(key, np.zeros((0, 7), np.float32))

    def proprio(self) -> np.ndarray:
        """Every proprio vector (N, 8): ee_pose + gripper width, as Observation.proprio()."""
        if not self._lowdim:
            return np.zeros((0, 8), np.float32)
        return np.concatenate([self._lowdim["ee_pose"], self._lowdim["gripper_width"][:, None]], 1)

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(f"window {idx} out of range ({len(self)} windows)")
        e, t = (int(v) for v in self._windows[idx])
        ep = self.episodes[e]
        row = int(self._starts[e]) + t
        end = int(self._ends[e])
        low = self._lowdim
        if self._images is not None:
            images = {c: self._images[c][row] for c in self.cameras}
        else:
            store = self._store(ep.store)
            images = {c: store.read(image_key(c), ep.rows.start + t, episode=ep.index) for c in self.cameras}
        obs = Observation(
            images=images,
            ee_pose=low["ee_pose"][row],
            gripper_width=float(low["gripper_width"][row]),
            joint_positions=low["joint_positions"][row],
            instruction=ep.meta.instruction,
            timestamp=float(low["timestamp"][row]),
        )
        # Chunk t..t+K-1, padded with the episode's last action and masked past the end.
        rows = np.minimum(np.arange(row, row + self.chunk_size), end - 1)
        mask = np.arange(row, row + self.chunk_size) < end
        return {
            "observation": obs,
            "images": {c: torch.from_numpy(np.ascontiguousarray(images[c])) for c in self.cameras},
            "proprio": torch.from_numpy(obs.proprio()),
            "actions": torch.from_numpy(low["action"][rows]),
            "policy_actions": torch.from_numpy(low["policy_action"][rows]),
            "action_mask": torch.from_numpy(mask),
            "intervention": bool(low["intervention"][row]),
            "instruction": ep.meta.instruction,
            "episode": ep.index,
            "step": t,
        }


def collate_windows(batch: Sequence[dict]) -> dict:
    """Batch items of :class:`EpisodeDataset`: tensors stacked, observations/strings as lists."""
    return {
        "observations": [b["observation"] for b in batch],
        "images": {c: torch.stack([b["images"][c] for b in batch]) for c in batch[0]["images"]},
        "proprio": torch.stack([b["proprio"] for b in batch]),
        "actions": torch.stack([b["actions"] for b in batch]),
        "policy_actions": torch.stack([b["policy_actions"] for b in batch]),
        "action_mask": torch.stack([b["action_mask"] for b in batch]),
        "intervention": torch.tensor([b["intervention"] for b in batch]),
        "instructions": [b["instruction"] for b in batch],
        "episode": torch.tensor([b["episode"] for b in batch]),
        "step": torch.tensor([b["step"] for b in batch]),
    }
