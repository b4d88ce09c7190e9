"""Board config validation, printable files at true scale, detection of the generated board."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from simbridge.calibration.board import (
    BoardConfig,
    board_corners_m,
    detect_board,
    load_board_config,
    write_board_files,
)
from simbridge.data.config import ConfigError


def test_pdf_page_is_board_plus_margin_at_true_scale(tmp_path):
    cfg = BoardConfig(squares_x=9, squares_y=6, square_length_m=0.03, marker_length_m=0.022, margin_m=0.01, dpi=200)
    paths = write_board_files(cfg, tmp_path)
    media_box = re.search(rb"/MediaBox \[ *([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) *\]", paths["pdf"].read_bytes())
    assert media_box is not None
    width_pt, height_pt = float(media_box.group(3)), float(media_box.group(4))
    # 1 pt = 1/72 inch: page = 9*30 + 2*10 mm by 6*30 + 2*10 mm.
    assert width_pt / 72 * 25.4 == pytest.approx(290.0, abs=0.05)
    assert height_pt / 72 * 25.4 == pytest.approx(200.0, abs=0.05)


def test_png_has_dpi_and_true_size_and_is_detectable(tmp_path):
    cfg = BoardConfig(dpi=150)
    paths = write_board_files(cfg, tmp_path)
    png = Image.open(paths["png"])
    assert png.info["dpi"][0] == pytest.approx(150, abs=0.05)  # PNG stores whole pixels per metre
    width_mm = png.size[0] / 150 * 25.4
    assert width_mm == pytest.approx((cfg.size_m[0] + 2 * cfg.margin_m) * 1000, abs=0.5)
    image = cv2.cvtColor(cv2.imread(str(paths["png"])), cv2.COLOR_BGR2RGB)
    det = detect_board(image, cfg)
    assert len(det) == cfg.num_corners
    # Corners land where the board geometry says (scale px/m, offset by the margin).
    ppm = 150 / 0.0254
    expected = (board_corners_m(cfg)[det.ids, :2] + cfg.margin_m) * ppm - 0.5
    assert np.abs(det.corners - expected).max() < 2.0


def test_board_yaml_round_trips(tmp_path):
    cfg = BoardConfig(squares_x=8, dictionary="DICT_4X4_50", dpi=100)
    assert load_board_config(write_board_files(cfg, tmp_path)["yaml"]) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("marker_length_m=0.05", "smaller than square_length_m"),
        ("dictionary=DICT_9X9_1", "ArUco dictionaries"),
        ("squares_x=50", "use a larger dictionary"),
        ("colour=red", "unknown key 'colour'"),
    ],
)
def test_bad_board_config_names_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_board_config(None, [override])


def test_no_board_in_image_gives_empty_detection(board):
    det = detect_board(np.full((240, 320, 3), 128, np.uint8), board)
    assert len(det) == 0 and not det.is_usable()
