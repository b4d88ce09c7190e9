"""Checking a hand-eye calibration, and how calibration error grows with pixel noise.

:func:`verify_hand_eye` predicts where the board should be in each view from the robot's
kinematics (the reported ee pose) and the hand-eye transform, and compares with where the
camera sees it: residuals in millimetres, degrees and pixels. Run it on views *not* used for
the calibration (a fresh set of poses) to catch a bumped camera or a wrong file.

:func:`noise_study` runs the whole synthetic pipeline (projection + noise -> PnP -> five
solvers) for increasing pixel noise and reports the hand-eye error against the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simbridge.calibration.board import BoardConfig
from simbridge.calibration.camera_info import CameraIntrinsics
from simbridge.calibration.handeye import (
    HandEyeCalibration,
    HandEyeView,
    Mode,
    Residuals,
    collect_views,
    compute_residuals,
    hand_eye_error,
    solve_hand_eye,
)
from simbridge.calibration.handeye_poses import generate_poses


@dataclass
class VerificationReport:
    residuals: Residuals
    max_mm: float
    max_deg: float

    @property
    def passed(self) -> bool:
        return bool(np.max(self.residuals.translation_mm) <= self.max_mm
                    and np.max(self.residuals.rotation_deg) <= self.max_deg)

    def table(self) -> str:
        r = self.residuals
        lines = [f"{'view':>5} {'mm':>8} {'deg':>8} {'px':>8}"]
        for i in range(len(r.translation_mm)):
            px = f"{r.reprojection_px[i]:8.3f}" if len(r.reprojection_px) > i else f"{'-':>8}"
            lines.append(f"{i:>5} {r.translation_mm[i]:8.3f} {r.rotation_deg[i]:8.4f} {px}")
        s = r.summary()
        lines.append(f"max {s['translation_mm']['max']:.3f} mm, {s['rotation_deg']['max']:.4f} deg "
                     f"(limits {self.max_mm} mm, {self.max_deg} deg): {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def verify_hand_eye(views: Sequence[HandEyeView], calibration: HandEyeCalibration, board: BoardConfig,
                    intrinsics: CameraIntrinsics, max_mm: float = 3.0, max_deg: float = 0.5,
                    T_board: np.ndarray | None = None) -> VerificationReport:
    """Residuals of ``views`` under ``calibration`` (board pose estimated from the views unless given)."""
    residuals = compute_residuals(views, calibration.T, calibration.mode, board, intrinsics, T_board)
    return VerificationReport(residuals, max_mm, max_deg)


def noise_study(mode: Mode, noise_px: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0), n_poses: int = 15,
                trials: int = 3, seed: int = 0, board: BoardConfig | None = None) -> list[dict]:
    """Hand-eye error vs corner noise (px) on the synthetic rig: one row per noise level."""
    from simbridge.calibration.synthetic import example_rig

    rows = []
    for sigma in noise_px:
        mm, deg, spread_mm = [], [], []
        for trial in range(trials):
            rig, centre = example_rig(mode, board, render=False, pixel_noise=sigma, seed=seed + trial)
            pivot = (0.0, 0.0, 0.40) if mode == "eye_in_hand" else (0.0, 0.0, 0.02)
            poses = generate_poses(centre, n_poses, pivot_in_ee=pivot, seed=seed + trial)
            intrinsics = CameraIntrinsics(rig.K, rig.dist, rig.image_size)
            views = collect_views(poses, rig.move_to, rig.capture, rig.board, intrinsics)
            result = solve_hand_eye(views, mode)
            e_mm, e_deg = hand_eye_error(result.T, rig.T_hand_eye)
            mm.append(e_mm)
            deg.append(e_deg)
            spread_mm.append(result.agreement["translation_mm"])
        rows.append({"noise_px": float(sigma), "error_mm": float(np.mean(mm)), "error_deg": float(np.mean(deg)),
                     "max_error_mm": float(np.max(mm)), "max_error_deg": float(np.max(deg)),
                     "method_spread_mm": float(np.mean(spread_mm)), "trials": trials})
    return rows


def format_noise_table(mode: str, rows: Sequence[dict]) -> str:
    lines = [f"hand-eye error vs pixel noise ({mode})",
             f"{'noise px':>9} {'mean mm':>9} {'mean deg':>9} {'max mm':>9} {'max deg':>9} {'spread mm':>10}"]
    for r in rows:
        lines.append(f"{r['noise_px']:9.2f} {r['error_mm']:9.3f} {r['error_deg']:9.4f} {r['max_error_mm']:9.3f} "
                     f"{r['max_error_deg']:9.4f} {r['method_spread_mm']:10.3f}")
    return "\n".join(lines)
