"""`simbridge calibrate` end to end on synthetic data, and its argument errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from simbridge.calibration.camera_info import load_camera_info
from simbridge.calibration.handeye import hand_eye_error, load_hand_eye
from simbridge.data import cli


def simbridge(*args: str) -> int:
    try:
        return cli.main(["calibrate", *args])
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def test_board_writes_png_pdf_yaml(tmp_path, capsys):
    assert simbridge("board", "-o", str(tmp_path), "--set", "dpi=100", "--set", "squares_x=6") == 0
    assert {p.name for p in tmp_path.iterdir()} == {"board.png", "board.pdf", "board.yaml"}
    assert yaml.safe_load((tmp_path / "board.yaml").read_text())["squares_x"] == 6
    assert "print at 100% scale" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        [],  # no subcommand
        ["board"],  # missing -o
        ["board", "-o", "x", "--set", "squares_x=1"],  # invalid config value
        ["intrinsics", "--board", "b.yaml", "-o", "c.yaml"],  # no --images / --video
        ["intrinsics", "--board", "missing.yaml", "--images", ".", "-o", "c.yaml"],  # missing board file
        ["handeye", "--mode", "eye_on_head"],  # bad choice
        ["handeye", "--mode", "eye_in_hand"],  # neither data nor --simulate
        ["verify", "--handeye", "h.yaml"],  # missing required options
    ],
)
def test_argument_and_config_errors_exit_2(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert simbridge(*args) == 2
    assert capsys.readouterr().err.strip()


def test_cli_subprocess_exit_code_is_2_on_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "simbridge.data.cli", "calibrate", "verify"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "required" in out.stderr


def test_intrinsics_from_image_folder(intrinsics_images, board_yaml, tmp_path, capsys):
    out = tmp_path / "cam.yaml"
    assert simbridge("intrinsics", "--board", board_yaml, "--images", str(intrinsics_images), "-o", str(out),
                     "--camera-name", "wrist") == 0
    K, _dist, size, name = load_camera_info(out)
    assert size == (640, 480) and name == "wrist" and K[0, 0] > 0
    printed = capsys.readouterr().out
    assert "coverage" in printed and "RMS" in printed
    assert (tmp_path / "cam.png").stat().st_size > 10_000  # per-view error + coverage plot


def test_intrinsics_with_too_few_views_fails_with_advice(intrinsics_images, board_yaml, tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(intrinsics_images.iterdir())[:3]:
        (few / image.name).write_bytes(image.read_bytes())
    assert simbridge("intrinsics", "--board", board_yaml, "--images", str(few), "-o", str(tmp_path / "c.yaml")) == 1
    assert "need at least 8" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()  # nothing half-written


def test_handeye_then_verify_from_a_data_folder(handeye_data, board_yaml, true_camera_info, tmp_path, capsys):
    folder, rig, _ = handeye_data
    out = tmp_path / "handeye.yaml"
    assert simbridge("handeye", "--mode", "eye_in_hand", "--board", board_yaml, "--camera-info", true_camera_info,
                     "--data", str(folder), "-o", str(out)) == 0
    printed = capsys.readouterr().out
    assert "methods agree within" in printed and "daniilidis" in printed
    calibration = load_hand_eye(out)
    mm, deg = hand_eye_error(calibration.T, rig.T_hand_eye)
    assert mm < 2.0 and deg < 0.2
    assert simbridge("verify", "--handeye", str(out), "--board", board_yaml, "--camera-info", true_camera_info,
                     "--data", str(folder)) == 0
    assert "PASS" in capsys.readouterr().out
    # A verify run against a calibration shifted by 5 mm fails (exit 1).
    raw = yaml.safe_load(out.read_text())
    from simbridge.calibration.handeye import calibration_id

    T = np.asarray(raw["T_ee_camera"]["matrix"])
    T[0, 3] += 0.005
    raw["T_ee_camera"]["matrix"] = T.tolist()
    raw["calibration_id"] = calibration_id(raw["mode"], T, raw["camera_name"], raw["created"])
    shifted = tmp_path / "shifted.yaml"
    shifted.write_text(yaml.safe_dump(raw))
    assert simbridge("verify", "--handeye", str(shifted), "--board", board_yaml, "--camera-info", true_camera_info,
                     "--data", str(folder), "--max-mm", "1.0") == 1
    assert "FAIL" in capsys.readouterr().out


def test_handeye_noise_table_on_the_simulated_rig(capsys):
    assert simbridge("handeye", "--mode", "eye_to_hand", "--simulate", "--noise-table", "--poses", "10") == 0
    printed = capsys.readouterr().out
    assert "hand-eye error vs pixel noise (eye_to_hand)" in printed
    assert len([line for line in printed.splitlines() if line.strip().startswith(("0.", "1.", "2."))]) == 6
