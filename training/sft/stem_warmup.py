"""Vision warm-up: teach the keypoint stem where the object and the target are before SFT.

Measured on the 600 funnel demonstrations (docs/experiments/sft_recipe.md): trained on its own
to predict the auxiliary waypoints (:mod:`.auxiliary`), the keypoint stem finds the object to
~16 mm on the first frames of held-out episodes after 250 steps (40 s); inside SFT, sharing one
clipped gradient with the language model and the action head, it is still 60 mm off after 3000
steps. So the stem gets a short phase of its own first: the stem and the keypoint waypoint head,
nothing else, on the same (augmented) demonstration images, with a higher learning rate and no
gradient clipping. SFT then starts from keypoints that already track the scene.

Like the auxiliary loss it uses the demonstrations only (grasp and release points) and leaves the
exported policy unchanged; the head is SFT-only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from simbridge.training.models import VLAPolicy
from simbridge.training.sft.auxiliary import KeypointWaypointHead, waypoint_loss
from simbridge.training.sft.config import AugmentConfig
from simbridge.training.sft.data import Demos, augment_images


def warm_up_keypoint_stem(
    policy: VLAPolicy,
    head: KeypointWaypointHead,
    demos: Demos,
    waypoints: tuple[np.ndarray, np.ndarray],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    augment: AugmentConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
    log: Callable[[int, dict[str, float]], None],
    log_every: int = 50,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``policy.keypoint_stem`` and ``head`` (attached to it) for ``steps`` steps on the
    waypoint loss; the rest of the policy is untouched. Returns the last step's metrics."""
    stem = policy.keypoint_stem
    assert stem is not None, "warm_up_keypoint_stem: the policy has no keypoint stem"
    params = list(stem.parameters()) + list(head.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    targets, before_grasp = waypoints

    from tqdm.auto import tqdm

    metrics: dict[str, float] = {}
    stem.train()
    for step in tqdm(range(1, steps + 1), desc="keypoint stem warm-up", disable=not progress, dynamic_ncols=True):
        rows = rng.integers(0, len(demos), batch_size)
        pixels = augment_images(policy.prepare_images(demos.images[rows]), augment, generator)
        stem.keypoints(pixels.flatten(0, 1))  # the head's hook keeps the keypoints
        loss, metrics = waypoint_loss(
            head(policy.prepare_proprio(demos.proprio[rows])),
            torch.as_tensor(targets[rows]), torch.as_tensor(before_grasp[rows]), "warmup/",
        )  # fmt: skip
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if step % log_every == 0 or step == steps:
            log(step, metrics)
    return metrics
