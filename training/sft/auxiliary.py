"""SFT-only auxiliary targets: where the object and the placement target are, relative to the TCP.

Behaviour cloning from 200-600 demonstrations gives the vision encoder one weak signal (the
action tokens) to learn localization from. A dense auxiliary regression of the scene's geometry
is a cheap, known fix (privileged-state auxiliary losses; e.g. robomimic's and RT-1's ablations).
The geometry comes from the demonstration itself, so it needs no simulator field and works on
teleoperated episodes too:

* the **grasp point** is the TCP position at the step the gripper is commanded closed (the expert
  and a teleoperator close with the fingers around the object);
* the **place point** is the TCP position at the step it is commanded open again (the episode's
  last TCP position when it never opens).

For each step the targets are ``object - tcp`` and ``place - tcp`` in decimetres, where the object
is at the grasp point until the grasp, in the hand (at the TCP) while held, and at the place point
after the release. A small head on the mean of the policy's action-query states predicts them; when
the policy has a keypoint stem a second head predicts them from the stem's keypoints and the TCP
position alone, a short gradient path that teaches the stem to find the object and the target.
The losses are added to SFT's with ``aux_weight`` and the heads are dropped at the end: the
exported policy is unchanged. ``val/aux/object_error_mm`` (before the grasp) says whether the
policy localizes, ``val/aux/keypoint_object_error_mm`` whether its keypoints do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Targets are in decimetres so that they are O(1) like the normalized actions.
SCALE = 10.0
NUM_TARGETS = 6  # object - tcp (3), place - tcp (3)


def waypoint_targets(
    proprio: np.ndarray, actions: np.ndarray, episode_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6) float32 ``[object - tcp, place - tcp]`` in metres for every demonstration row, and
    (N,) bool: the row is at or before its episode's grasp.

    ``proprio`` (N, 8) holds the TCP xyz first, ``actions`` (N, 7) the gripper command last
    (+1 open ... -1 closed); ``episode_end`` (N,) is each row's exclusive episode end.
    """
    targets = np.zeros((len(proprio), NUM_TARGETS), np.float32)
    before_grasp = np.zeros(len(proprio), bool)
    start = 0
    for end in np.unique(episode_end):
        tcp = proprio[start:end, :3]
        closed = actions[start:end, 6] < 0
        grasp_t = int(np.argmax(closed)) if closed.any() else len(tcp) - 1
        reopened = np.flatnonzero(~closed[grasp_t:])
        place_t = grasp_t + int(reopened[0]) if closed.any() and len(reopened) else len(tcp) - 1
        obj = np.repeat(tcp[grasp_t][None], len(tcp), 0)
        obj[grasp_t + 1 : place_t] = tcp[grasp_t + 1 : place_t]  # in the hand
        obj[place_t:] = tcp[place_t]  # released on the target
        targets[start:end, :3] = obj - tcp
        targets[start:end, 3:] = tcp[place_t] - tcp
        before_grasp[start : start + grasp_t + 1] = True
        start = int(end)
    return targets, before_grasp


class WaypointHead(nn.Module):
    """Mean of the action-query states (B, T, H) -> (B, 6) offsets in decimetres."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, NUM_TARGETS)
        )

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        return self.net(action_hidden.float().mean(dim=1))


class KeypointWaypointHead(nn.Module):
    """Keypoints of every camera (B, N·K·2) + the normalized TCP xyz (B, 3) -> (B, 6) decimetres.

    It reads the keypoint stem's output through a forward hook on its spatial softmax (the model's
    forward is unchanged): call :meth:`attach` once, then :meth:`forward` after each policy forward.
    """

    def __init__(self, num_cameras: int, num_keypoints: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_cameras * num_keypoints * 2 + 3, hidden), nn.GELU(), nn.Linear(hidden, NUM_TARGETS)
        )
        self.num_cameras = num_cameras
        self._points: torch.Tensor | None = None
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    def attach(self, stem: nn.Module) -> None:
        def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self._points = output

        self._hook = stem.softmax.register_forward_hook(keep)

    def detach(self) -> None:
        """Stop capturing the stem's keypoints (a head used only for the warm-up)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook, self._points = None, None

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        if self._points is None:
            raise RuntimeError("KeypointWaypointHead: no keypoints captured; run the policy forward first")
        points, self._points = self._points, None
        b = proprio.shape[0]
        return self.net(torch.cat([points.float().reshape(b, -1), proprio[:, :3].float()], dim=1))


def waypoint_loss(
    pred: torch.Tensor, targets_m: torch.Tensor, before_grasp: torch.Tensor, prefix: str = "aux/"
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 in decimetres of predicted (B, 6) waypoints + the errors in millimetres (object: rows
    before the grasp only), metrics named ``<prefix>l1``, ``<prefix>place_error_mm``, ..."""
    # The object term only up to the grasp: after it the object is in the hand, which the TCP
    # position alone does not tell, and the ambiguous rows pulled the head to the mean (measured).
    l1 = (pred - targets_m * SCALE).abs()
    weight = torch.ones_like(l1)
    weight[:, :3] = before_grasp[:, None].to(l1.dtype)
    loss = (l1 * weight).sum() / weight.sum().clamp(min=1.0)
    with torch.no_grad():
        err_mm = (pred / SCALE - targets_m).reshape(-1, 2, 3).norm(dim=-1) * 1000.0
        metrics = {f"{prefix}l1": loss.item(), f"{prefix}place_error_mm": err_mm[:, 1].mean().item()}
        if before_grasp.any():
            metrics[f"{prefix}object_error_mm"] = err_mm[before_grasp, 0].mean().item()
    return loss, metrics


def auxiliary_loss(
    head: WaypointHead,
    action_hidden: torch.Tensor | None,
    targets_m: torch.Tensor,
    before_grasp: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`waypoint_loss` of the head on the action-query states."""
    if action_hidden is None:
        raise ValueError("aux_weight > 0 needs a policy that returns its action-query states (openvla-oft)")
    return waypoint_loss(head(action_hidden), targets_m, before_grasp)


class AuxiliaryHeads(nn.Module):
    """The SFT-only heads of a policy: on its action-query states, and on its keypoints if it has a
    keypoint stem. :meth:`loss` after each policy forward gives their summed loss and metrics."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        cfg = policy.config
        self.states = WaypointHead(cfg.hidden_size)
        self.keypoints: KeypointWaypointHead | None = None
        if getattr(policy, "keypoint_stem", None) is not None:
            self.keypoints = KeypointWaypointHead(len(policy.contract.observation.cameras), cfg.keypoint_stem)
            self.keypoints.attach(policy.keypoint_stem)

    def loss(
        self, out: object, proprio: torch.Tensor, targets_m: np.ndarray, before_grasp: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        targets, before = torch.as_tensor(targets_m), torch.as_tensor(before_grasp)
        loss, metrics = auxiliary_loss(self.states, getattr(out, "action_hidden", None), targets, before)
        if self.keypoints is not None:
            kp_loss, kp_metrics = waypoint_loss(self.keypoints(proprio), targets, before, "aux/keypoint_")
            loss, metrics = loss + kp_loss, metrics | kp_metrics
        return loss, metrics
