"""SFT's demonstrations: episodes of a store in memory, the train / validation split, augmentation.

One training sample is the observation at step ``t`` of an episode and the chunk of the next
``K`` executed actions, padded with the episode's last action at its end (:meth:`Demos.chunk`).
Images are resized once, at load time, to the model's resolution with the policy's own resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from simbridge.data.config import ConfigError
from simbridge.data.spec import CameraSpec, image_key
from simbridge.training.models.images import resize_images
from simbridge.training.sft.config import AugmentConfig


@dataclass
class Demos:
    """Demonstration steps held in memory (images already at the model's resolution)."""

    images: np.ndarray  # (N, C, S, S, 3) uint8
    proprio: np.ndarray  # (N, 8) float32
    actions: np.ndarray  # (N, 7) float32
    episode: np.ndarray  # (N,) int, index into ``instructions`` / episode bounds
    episode_end: np.ndarray  # (N,) int, exclusive end row of the step's episode
    instructions: list[str]
    cameras: tuple[CameraSpec, ...]

    def __len__(self) -> int:
        return len(self.actions)

    def chunk(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(B, k, 7) actions rows..rows+k-1, repeating each episode's last action past its end."""
        offs = rows[:, None] + np.arange(k)[None]
        offs = np.minimum(offs, self.episode_end[rows, None] - 1)
        return self.actions[offs]

    def subset(self, episodes: np.ndarray) -> Demos:
        keep = np.isin(self.episode, episodes)
        rows = np.flatnonzero(keep)
        # Re-base the episode ends onto the kept rows.
        new_index = np.full(len(self), -1)
        new_index[rows] = np.arange(len(rows))
        ends = new_index[self.episode_end[rows] - 1] + 1
        return Demos(self.images[rows], self.proprio[rows], self.actions[rows], self.episode[rows], ends,
                     self.instructions, self.cameras)  # fmt: skip


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3) with the policy's own resize (see resize_images)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = resize_images(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float(), size)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_demos(
    store_path: str | Path | list[str],
    image_size: int,
    cameras: list[str] | None = None,
    only_successful: bool = True,
    max_episodes: int = 0,
    splits: list[str] | None = None,
    action_label: str = "action",
) -> Demos:
    """Read the selected episodes of one or more episode stores into memory for training.

    Selection goes through :class:`simbridge.data.dataset.EpisodeDataset` (successful-only and
    split filters); images are read per episode and resized once to the model's resolution.
    """
    from simbridge.data.dataset import EpisodeDataset
    from simbridge.data.store import EpisodeStore, StoreError

    paths = [Path(p) for p in ([store_path] if isinstance(store_path, (str, Path)) else store_path)]
    for path in paths:
        if not str(path) or str(path) == "." or not path.exists():
            raise ConfigError(
                f"data.store {str(path)!r} does not exist; record demos first "
                "(simbridge demos --episodes 100 --out <path.zarr>, or simbridge collect) and pass data.store=<path.zarr>"
            )
    try:
        ds = EpisodeDataset(paths, chunk_size=1, cameras=cameras or None, successful_only=only_successful,
                            splits=splits or None)  # fmt: skip
    except StoreError as exc:
        raise ConfigError(f"data.store: {exc}") from None
    episodes = ds.episodes[:max_episodes] if max_episodes else ds.episodes
    if not episodes:
        raise ConfigError(
            f"{paths} hold no usable episodes (only_successful={only_successful}, splits={splits})"
        )
    stores = [EpisodeStore(p) for p in ds.paths]
    specs = {c.name: c for c in stores[0].cameras}
    names = list(ds.cameras)
    actions_all, proprio_all = ds.actions(action_label), ds.proprio()
    images, episode, ends, instructions = [], [], [], []
    total = 0
    for j, ep in enumerate(episodes):
        n = ep.rows.stop - ep.rows.start
        store = stores[ep.store]
        cams = [_resize(store.read(image_key(c), ep.rows, episode=ep.index), image_size) for c in names]
        images.append(np.stack(cams, axis=1))
        episode.append(np.full(n, j))
        total += n
        ends.append(np.full(n, total))
        instructions.append(ep.meta.instruction)
    missing = np.isnan(actions_all[:total]).any(axis=1)
    if missing.any():
        bad = sorted({instructions[j] for j in np.concatenate(episode)[missing]})[:3]
        raise ConfigError(
            f"data.action_label={action_label}: {int(missing.sum())} step(s) of {paths} have no {action_label} "
            f"recorded (episodes such as {bad}); use data.action_label=action or select other episodes"
        )
    return Demos(
        images=np.concatenate(images),
        proprio=proprio_all[:total].astype(np.float32),
        actions=actions_all[:total].astype(np.float32),
        episode=np.concatenate(episode),
        episode_end=np.concatenate(ends),
        instructions=instructions,
        cameras=tuple(CameraSpec(n, specs[n].height, specs[n].width) for n in names),
    )


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode ids for training / validation (at least one of each when there are >= 2 episodes)."""
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = round(num_episodes * val_fraction)
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def augment_images(pixels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random shift + colour jitter of (B, N, 3, S, S) images in [0, 1] (per image)."""
    if not cfg.enabled:
        return pixels
    b, n, c, h, w = pixels.shape
    x = pixels.reshape(b * n, c, h, w)
    if cfg.shift_px > 0:
        pad = cfg.shift_px
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        dx = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator)
        dy = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b * n)])

    def factor(strength: float) -> torch.Tensor:
        u = torch.rand(b * n, 1, 1, 1, generator=generator)
        return 1.0 + (2.0 * u - 1.0) * strength

    if cfg.brightness > 0:
        x = x * factor(cfg.brightness)
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(cfg.contrast) + mean
    if cfg.saturation > 0:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = (x - gray) * factor(cfg.saturation) + gray
    # Domain randomization (off by default, so earlier runs draw the same numbers).
    if cfg.hue > 0:
        x = rotate_hue(x, (2.0 * torch.rand(b * n, generator=generator) - 1.0) * cfg.hue)
    if cfg.channel_gain > 0:
        x = x * (1.0 + (2.0 * torch.rand(b * n, c, 1, 1, generator=generator) - 1.0) * cfg.channel_gain)
    if cfg.gamma > 0:
        x = x.clamp(0.0, 1.0) ** factor(cfg.gamma)
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=generator) * cfg.noise_std
    return x.clamp(0.0, 1.0).reshape(b, n, c, h, w)


def drop_proprio(batch: dict[str, torch.Tensor], cfg: AugmentConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The model's inputs with ``proprio`` replaced by zeros (the normalized demo mean) in a random
    ``cfg.proprio_dropout`` fraction of the samples; ``batch`` itself is left as it is."""
    if not cfg.enabled or cfg.proprio_dropout <= 0 or "proprio" not in batch:
        return batch
    proprio = batch["proprio"]
    keep = torch.rand(proprio.shape[0], generator=generator) >= cfg.proprio_dropout
    return {**batch, "proprio": proprio * keep.to(proprio.dtype)[:, None]}


#: RGB <-> YIQ: hue is the angle in the IQ plane (a linear, differentiable hue rotation).
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (M, 3, H, W) RGB images by ``turns`` (M,) fractions of the colour wheel."""
    to_yiq = _RGB_TO_YIQ.to(x)
    angle = 2.0 * torch.pi * turns.to(x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(angle), 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (M, 3, 3)
    return torch.einsum("mij,mjhw->mihw", m, x)
