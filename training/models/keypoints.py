"""A convolutional stem with spatial-softmax keypoints: vision tokens that localize.

A ViT patch embedding trained from scratch learns *where* things are slowly: at 64 px the tiny
preset sees 8 px patches, about one patch per object. robomimic's image encoders (Mandlekar et
al. 2021) instead end a small CNN in a *spatial softmax*: each of ``K`` feature maps becomes a
probability map over the image and its expected (x, y) position, a keypoint with sub-pixel
precision that moves smoothly with the object. This stem runs next to the ViT (``VLAConfig.
keypoint_stem = K``) on the same preprocessed image and adds ``keypoint_tokens`` LM tokens per
camera, after that camera's patch tokens::

    image (3, S, S) -> conv 5x5/2 -> conv 3x3 -> conv 3x3/2 -> conv 1x1 -> K maps (S/4 x S/4)
    -> spatial softmax -> K x (x, y) in [-1, 1] -> MLP -> keypoint_tokens x hidden

Everything is plain convolutions, GroupNorm, softmax and matmuls, so the stem exports to ONNX
with the rest of the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from simbridge.training.models.images import IMAGENET_MEAN, IMAGENET_STD, normalize


def _conv(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
            nn.GroupNorm(8, c_out), nn.GELU()]  # fmt: skip


class SpatialSoftmax(nn.Module):
    """(B, K, H, W) feature maps -> (B, K, 2) expected (x, y) in [-1, 1], learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        h, w = maps.shape[-2:]
        attn = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1)  # (B, K, H·W)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)
        return attn @ grid


class KeypointStem(nn.Module):
    """(B, 3, S, S) images in [0, 1] -> (B, tokens, hidden) keypoint tokens (see the module doc)."""

    def __init__(self, num_keypoints: int, tokens: int, hidden: int, width: int = 32) -> None:
        super().__init__()
        if num_keypoints < 1 or tokens < 1:
            raise ValueError("keypoint_stem / keypoint_tokens: positive numbers of keypoints and tokens")
        self.tokens, self.hidden = tokens, hidden
        self.convs = nn.Sequential(
            *_conv(3, width, 5, 2), *_conv(width, 2 * width, 3, 1), *_conv(2 * width, 2 * width, 3, 2),
            nn.Conv2d(2 * width, num_keypoints, 1),
        )  # fmt: skip
        self.softmax = SpatialSoftmax()
        self.project = nn.Sequential(
            nn.Linear(2 * num_keypoints, hidden), nn.GELU(), nn.Linear(hidden, tokens * hidden)
        )

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, K, 2) keypoint positions (x right, y down) in [-1, 1]."""
        return self.softmax(self.convs(normalize(images, IMAGENET_MEAN, IMAGENET_STD)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        points = self.keypoints(images)
        return self.project(points.flatten(1)).view(images.shape[0], self.tokens, self.hidden)
