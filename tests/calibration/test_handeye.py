"""Hand-eye on a synthetic rig with known truth: accuracy, noise, degenerate sets, files, verification."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from simbridge.calibration.camera_info import CalibrationFileError, CameraIntrinsics
from simbridge.calibration.geometry import make_transform
from simbridge.calibration.handeye import (
    MODES,
    collect_views,
    fixed_board_pose,
    hand_eye_error,
    load_hand_eye,
    load_views,
    solve_hand_eye,
)
from simbridge.calibration.handeye_poses import DegeneratePoseSet, check_pose_diversity, generate_poses
from simbridge.calibration.synthetic import example_rig
from simbridge.calibration.verify import noise_study, verify_hand_eye

PIVOT = {"eye_in_hand": (0.0, 0.0, 0.40), "eye_to_hand": (0.0, 0.0, 0.02)}


def _run(mode, n=15, **rig_kwargs):
    rig, centre = example_rig(mode, render=False, **rig_kwargs)
    intrinsics = CameraIntrinsics(rig.K, rig.dist, rig.image_size)
    views = collect_views(generate_poses(centre, n, pivot_in_ee=PIVOT[mode]), rig.move_to, rig.capture,
                          rig.board, intrinsics)
    return rig, views, solve_hand_eye(views, mode, board=rig.board, intrinsics=intrinsics)


@pytest.mark.parametrize("mode", MODES)
def test_clean_data_recovers_hand_eye_with_all_five_methods(mode):
    rig, views, result = _run(mode)
    assert len(views) == 15
    assert set(result.per_method) == {"tsai", "park", "horaud", "andreff", "daniilidis"}
    for name, T in result.per_method.items():
        mm, deg = hand_eye_error(T, rig.T_hand_eye)
        assert mm < 2.0 and deg < 0.2, (name, mm, deg)
    assert result.agreement["translation_mm"] < 0.1 and result.agreement["rotation_deg"] < 0.01
    assert result.residuals.reprojection_px.max() < 0.01


def test_rendered_images_through_detection_give_hand_eye_within_2mm_02deg(handeye_data, board):
    folder, rig, intrinsics = handeye_data
    views = load_views(folder, board, intrinsics)
    assert len(views) == 10
    result = solve_hand_eye(views, "eye_in_hand", board=board, intrinsics=intrinsics)
    mm, deg = hand_eye_error(result.T, rig.T_hand_eye)
    assert mm < 2.0 and deg < 0.2, (result.method, mm, deg)


@pytest.mark.parametrize("noise_px", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("mode", MODES)
def test_error_grows_gracefully_with_pixel_noise(mode, noise_px):
    rig, _views, result = _run(mode, pixel_noise=noise_px, seed=2)
    mm, deg = hand_eye_error(result.T, rig.T_hand_eye)
    # Measured slope ~5-12 mm and ~0.5-1 deg per pixel of corner noise on this rig (see the benchmark).
    assert mm < 3.0 + 25.0 * noise_px and deg < 0.2 + 2.0 * noise_px, (mm, deg)
    assert mm > 0.01  # the noise did reach the solver


def test_noise_study_table_is_monotone_on_average():
    rows = noise_study("eye_in_hand", noise_px=(0.0, 0.5, 2.0), n_poses=12, trials=2)
    errors = [r["error_mm"] for r in rows]
    assert errors[0] < 1e-3 < errors[1] < errors[2]


def test_too_few_poses_are_refused():
    _, centre = example_rig("eye_in_hand", render=False)
    with pytest.raises(DegeneratePoseSet, match="at least 5"):
        check_pose_diversity(generate_poses(centre, 8)[:4])
    with pytest.raises(DegeneratePoseSet, match="at least 5"):
        generate_poses(centre, 3)


def test_rotations_about_parallel_axes_are_refused():
    _, centre = example_rig("eye_in_hand", render=False)
    poses = [centre @ make_transform(Rotation.from_euler("z", a, degrees=True).as_matrix(), [0.01 * i, 0, 0])
             for i, a in enumerate(range(-30, 31, 10))]
    with pytest.raises(DegeneratePoseSet, match=r"parallel axes.*rotate about at least one other axis"):
        check_pose_diversity(poses)


def test_pure_translations_are_refused():
    _, centre = example_rig("eye_in_hand", render=False)
    poses = [centre @ make_transform(np.eye(3), [0.02 * i, 0.01 * (i % 2), 0]) for i in range(8)]
    with pytest.raises(DegeneratePoseSet, match="barely rotate"):
        check_pose_diversity(poses)


def test_solver_refuses_degenerate_collected_views():
    rig, centre = example_rig("eye_to_hand", render=False)
    poses = [centre @ make_transform(Rotation.from_euler("x", a, degrees=True).as_matrix(), [0, 0, 0])
             for a in (-20, -10, 0, 10, 20, 25)]
    views = collect_views(poses, rig.move_to, rig.capture, rig.board, CameraIntrinsics(rig.K, rig.dist, rig.image_size))
    with pytest.raises(DegeneratePoseSet, match="parallel axes"):
        solve_hand_eye(views, "eye_to_hand")


def test_generated_poses_are_diverse_and_keep_the_board_in_view():
    for mode in MODES:
        rig, centre = example_rig(mode, render=False)
        poses = generate_poses(centre, 15, pivot_in_ee=PIVOT[mode])
        check_pose_diversity(poses)
        for pose in poses:
            rig.move_to(pose)
            assert len(rig.capture()) == rig.board.num_corners  # whole board visible


def test_yaml_has_calibration_id_and_detects_hand_edits(tmp_path):
    _, _, result = _run("eye_to_hand")
    path = result.write(tmp_path / "handeye.yaml")
    loaded = load_hand_eye(path)
    assert loaded.calibration_id == result.calibration_id
    assert loaded.calibration_id.startswith("he-") and len(loaded.calibration_id.split("-")[-1]) == 8
    np.testing.assert_allclose(loaded.T, result.T)
    assert "T_base_camera" in path.read_text()
    text = path.read_text()
    path.write_text(text.replace(repr(float(result.T[0, 3])), repr(float(result.T[0, 3]) + 0.01), 1))
    with pytest.raises(CalibrationFileError, match="edited by hand"):
        load_hand_eye(path)


def test_verification_flags_a_bumped_camera():
    rig, views, result = _run("eye_in_hand")
    from simbridge.calibration.handeye import HandEyeCalibration

    calibration = HandEyeCalibration("eye_in_hand", result.T, result.calibration_id, "camera")
    intrinsics = CameraIntrinsics(rig.K, rig.dist, rig.image_size)
    good = verify_hand_eye(views, calibration, rig.board, intrinsics)
    assert good.passed and good.residuals.translation_mm.max() < 0.01
    # The camera got bumped by 1 degree after calibration: fresh views disagree with the file.
    rig.T_hand_eye = rig.T_hand_eye @ make_transform(Rotation.from_euler("y", 1.0, degrees=True).as_matrix(), [0, 0, 0])
    _, centre = example_rig("eye_in_hand", render=False)
    fresh = collect_views(generate_poses(centre, 10, pivot_in_ee=PIVOT["eye_in_hand"], seed=5), rig.move_to,
                          rig.capture, rig.board, intrinsics)
    # The board has not moved since calibration: hold its pose from the calibration views fixed.
    T_base_board = fixed_board_pose(views, calibration.T, "eye_in_hand")
    bad = verify_hand_eye(fresh, calibration, rig.board, intrinsics, T_board=T_base_board)
    assert not bad.passed and bad.residuals.rotation_deg.min() > 0.9 and bad.residuals.reprojection_px.min() > 5
    assert "FAIL" in bad.table()
