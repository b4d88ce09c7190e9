"""Image preprocessing of the policies: the resize to the model's size and the encoders' normalization.

Two resizes, chosen by ``VLAConfig.image_interpolation``:

* ``bilinear-antialias`` (the presets): ``F.interpolate(bilinear, antialias=True)``.
* ``bicubic-pil`` (converted OpenVLA / OpenVLA-OFT checkpoints): Prismatic's image processor hands a
  PIL image to ``torchvision.transforms.functional.resize(..., BICUBIC, antialias=True)``, i.e.
  PIL's bicubic: Keys' kernel with a = -0.5, widened by the scale when shrinking, one pass along
  the width then one along the height, each clipped to the uint8 range. torch's antialiased
  bicubic uses the same kernel; we run the two passes the same way and clip to [0, 1] after each.
  PIL also rounds to uint8 after each pass; we do not (the ONNX graph must stay continuous for
  its parity check), so pixels are within one uint8 level of PIL's (mean ~0.3 level). An image
  already at the model's size is not resized at all, exactly as PIL leaves it.

Both are separable and linear up to the clipping, which is what the exporter relies on: it probes
the two passes as matrices and applies ``clip(Wy @ clip(x @ Wx^T))`` in the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Per-channel mean/std each vision encoder normalizes its [0, 1] RGB input with (timm's data
#: configs of Prismatic's backbones: SigLIP 0.5 / 0.5, DINOv2 ImageNet). Public because the
#: exporter records them in the bundle manifest (one source for the model and the manifest).
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ENCODER_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "siglip": (SIGLIP_MEAN, SIGLIP_STD),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
}
#: The default resize (presets and checkpoints without ``image_interpolation``).
RESIZE_INTERPOLATION = "bilinear-antialias"
INTERPOLATIONS = ("bilinear-antialias", "bicubic-pil")


def resize_images(
    x: torch.Tensor, size: int, interpolation: str = RESIZE_INTERPOLATION, value_range: float = 1.0
) -> torch.Tensor:
    """(N, 3, H, W) float in [0, value_range] -> (N, 3, size, size): the one resize of the policy's
    input images (``value_range``: 255.0 for unscaled pixels; bicubic clips to it).

    SFT resizes its demonstrations with it too, so training sees the pixels the policy sees at run
    time (the exported graph reproduces it, see the module docstring).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"image interpolation: one of {INTERPOLATIONS}, got {interpolation!r}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if interpolation == "bilinear-antialias":
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # PIL order: the width pass first, each pass clipped (PIL clips to uint8).
    if w != size:
        x = F.interpolate(x, size=(h, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, value_range)
    if h != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, value_range)
    return x


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def merge_patches(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, g*g, D) patch grid -> (B, (g/m)^2, m*m*D): each m x m block becomes one token."""
    if m == 1:
        return x
    b, p, d = x.shape
    g = math.isqrt(p)
    x = x.view(b, g // m, m, g // m, m, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (g // m) ** 2, m * m * d)
