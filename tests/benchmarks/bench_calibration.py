"""Calibration accuracy vs pixel noise on the synthetic rig (known truth), both hand-eye modes.

Prints a table and JSON, writes tests/benchmarks/results/calibration.json and calibration.png.
Also times the pieces: board rendering+detection per view, intrinsics solve, hand-eye solve.

    .venv/bin/python tests/benchmarks/bench_calibration.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from simbridge.calibration.board import BoardConfig, detect_board
from simbridge.calibration.intrinsics import IntrinsicsConfig, calibrate_intrinsics
from simbridge.calibration.synthetic import (
    default_camera_matrix,
    look_at_board,
    project_board,
    render_board_view,
)
from simbridge.calibration.verify import format_noise_table, noise_study

RESULTS = Path(__file__).parent / "results"
NOISE = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def intrinsics_vs_noise(board: BoardConfig, K: np.ndarray) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    poses = [look_at_board(board, rng.uniform(0.27, 0.36), (rng.uniform(-35, 35), rng.uniform(-35, 35), 0),
                           (rng.uniform(-0.1, 0.1), rng.uniform(-0.07, 0.07))) for _ in range(15)]
    for sigma in NOISE:
        dets = [project_board(board, K, T, (640, 480), noise_px=sigma, rng=rng) for T in poses]
        # The rejection threshold scales with the noise: here every view is equally noisy, none is an outlier.
        result = calibrate_intrinsics(dets, (640, 480), board, IntrinsicsConfig(max_view_error_px=max(1.0, 4 * sigma)))
        rows.append({"noise_px": sigma, "fx_error_pct": float(abs(result.K[0, 0] - K[0, 0]) / K[0, 0] * 100),
                     "cx_error_pct": float(abs(result.K[0, 2] - K[0, 2]) / K[0, 2] * 100),
                     "rms_px": result.rms_px, "rejected_views": len(result.views) - result.num_kept})
    return rows


def main() -> None:
    board = BoardConfig()
    K = default_camera_matrix()
    t0 = time.perf_counter()
    image = render_board_view(board, K, look_at_board(board, 0.35, (20, 15, 5)))
    t_render = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        detect_board(image, board)
    t_detect = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    intrinsics = intrinsics_vs_noise(board, K)
    t_intrinsics = (time.perf_counter() - t0) / len(NOISE)
    handeye = {}
    t0 = time.perf_counter()
    for mode in ("eye_in_hand", "eye_to_hand"):
        handeye[mode] = noise_study(mode, NOISE, n_poses=15, trials=5)
        print(format_noise_table(mode, handeye[mode]))
    t_handeye = (time.perf_counter() - t0) / (2 * len(NOISE) * 5)
    print("intrinsics error vs pixel noise (15 views)")
    for r in intrinsics:
        print(f"  {r['noise_px']:5.2f} px: fx {r['fx_error_pct']:.3f}%  cx {r['cx_error_pct']:.3f}%  "
              f"rms {r['rms_px']:.3f} px  rejected {r['rejected_views']}")
    figures = {
        "render_view_s": t_render, "detect_view_s": t_detect, "intrinsics_solve_s": t_intrinsics,
        "handeye_trial_s": t_handeye, "intrinsics_vs_noise": intrinsics, "handeye_vs_noise": handeye,
        # Slope of the hand-eye error per pixel of corner noise (mm/px, deg/px), at 1 px.
        "handeye_mm_per_px": {m: next(r["error_mm"] for r in rows if r["noise_px"] == 1.0) for m, rows in handeye.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibration.json").write_text(json.dumps(figures, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, rows in handeye.items():
        noise = [r["noise_px"] for r in rows]
        axes[0].plot(noise, [r["error_mm"] for r in rows], "o-", label=mode)
        axes[1].plot(noise, [r["error_deg"] for r in rows], "o-", label=mode)
    axes[0].set(xlabel="corner noise (px)", ylabel="hand-eye translation error (mm)")
    axes[1].set(xlabel="corner noise (px)", ylabel="hand-eye rotation error (deg)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "calibration.png", dpi=120)
    print(json.dumps({k: v for k, v in figures.items() if not k.endswith("_noise")}))


if __name__ == "__main__":
    main()
