"""``simbridge calibrate``: board | intrinsics | handeye | verify.

    simbridge calibrate board -o calib/board [--board board.yaml] [board.squares_x=9 ...]
    simbridge calibrate intrinsics --board calib/board/board.yaml (--images DIR | --video FILE|DEVICE) -o cam.yaml
    simbridge calibrate handeye --mode eye_in_hand --board B --camera-info cam.yaml --data DIR -o handeye.yaml
    simbridge calibrate handeye --mode eye_to_hand --simulate --noise-table     # synthetic rig, error vs noise
    simbridge calibrate verify --handeye handeye.yaml --board B --camera-info cam.yaml --data DIR

Hand-eye data folders hold ``views.jsonl`` (one ``{"image", "ee_pose"}`` per line, ee_pose =
xyz + quaternion wxyz in the base frame) and the images; the live routine
(:func:`simbridge.calibration.handeye.collect_views`) writes exactly that.

Each subcommand's options are a config dataclass (:data:`COMMANDS`): ``--config FILE``, one flag per
field (``simbridge calibrate <command> --help``), ``key=value``. The board is a section of each:
``--board board.yaml`` reads it, ``--board.square_length_m 0.0398`` or ``board.square_length_m=0.0398``
(or the older ``--set square_length_m=0.0398``) changes one key.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import field
from pathlib import Path
from typing import Literal

from simbridge.calibration.board import BoardConfig
from simbridge.calibration.intrinsics import IntrinsicsConfig
from simbridge.data.cli_config import add_config_arguments, config_from_args
from simbridge.data.config import ConfigError, config

_BOARD_DOC = "the ChArUco board: --board board.yaml (what 'simbridge calibrate board' wrote), --board.<key> flags"


@config(kw_only=True)
class BoardCommand:
    #: Output folder: board.png, board.pdf (true scale) and board.yaml.
    out: Path
    #: The board to print; --board FILE starts from a board YAML (board.yaml of an earlier print).
    board: BoardConfig = field(default_factory=BoardConfig)


@config(kw_only=True)
class IntrinsicsCommand:
    #: The ChArUco board (required): FILE is the board.yaml 'simbridge calibrate board' wrote.
    board: BoardConfig | None = None
    #: Folder of board images.
    images: Path | None = None
    #: Video file, device index (0) or /dev/videoN.
    video: str = ""
    #: Use every Nth video frame.
    stride: int = 5
    #: camera_info YAML to write (a PNG of the per-view errors and coverage goes next to it).
    out: Path
    #: Camera name written into the camera_info.
    camera_name: str = "camera"
    #: Calibration settings (view selection, outlier rejection, distortion model); FILE: a YAML file of them.
    intrinsics: IntrinsicsConfig = field(default_factory=IntrinsicsConfig)

    def __post_init__(self) -> None:
        if self.board is None:
            raise ValueError(f"board: required, {_BOARD_DOC}")
        if (self.images is None) == (not self.video):
            raise ValueError("images: give either --images DIR or --video FILE|DEVICE (one of them)")
        if self.stride < 1:
            raise ValueError("stride: at least 1")


@config(kw_only=True)
class HandeyeCommand:
    #: eye_in_hand: the camera rides on the gripper; eye_to_hand: the camera is fixed, the board on the gripper.
    mode: Literal["eye_in_hand", "eye_to_hand"]
    #: The ChArUco board: FILE is the board.yaml 'simbridge calibrate board' wrote (--simulate: the default board).
    board: BoardConfig | None = None
    #: camera_info YAML of the camera.
    camera_info: Path | None = None
    #: Folder with views.jsonl + images.
    data: Path | None = None
    #: Run on the synthetic rig (known truth) instead of recorded views.
    simulate: bool = False
    #: With --simulate: print the error vs pixel noise table.
    noise_table: bool = False
    #: With --simulate: number of poses.
    poses: int = 15
    #: Hand-eye YAML to write.
    out: Path | None = None
    #: Camera name written into the result.
    camera_name: str = "camera"

    def __post_init__(self) -> None:
        if self.simulate:
            return
        given = {"board": self.board, "camera_info": self.camera_info, "data": self.data, "out": self.out}
        missing = [k for k, v in given.items() if v is None]
        if missing:
            flags = ", ".join("-o" if k == "out" else "--" + k.replace("_", "-") for k in missing)
            raise ValueError(f"{missing[0]}: handeye needs {flags} (or --simulate for the synthetic rig)")


@config(kw_only=True)
class VerifyCommand:
    #: The ChArUco board (required): FILE is the board.yaml 'simbridge calibrate board' wrote.
    board: BoardConfig | None = None
    #: Hand-eye YAML to check.
    handeye: Path
    #: camera_info YAML of the camera.
    camera_info: Path
    #: Folder with (fresh) views.jsonl + images.
    data: Path
    #: Largest mean translation residual that passes (mm).
    max_mm: float = 3.0
    #: Largest mean rotation residual that passes (degrees).
    max_deg: float = 0.5

    def __post_init__(self) -> None:
        if self.board is None:
            raise ValueError(f"board: required, {_BOARD_DOC}")


#: Subcommand -> (its config, help line).
COMMANDS: dict[str, tuple[type, str]] = {
    "board": (BoardCommand, "write a printable ChArUco board: PNG, PDF at true scale, config YAML"),
    "intrinsics": (IntrinsicsCommand, "camera intrinsics from board views -> ROS camera_info YAML"),
    "handeye": (HandeyeCommand, "hand-eye calibration (five methods) -> T_ee_camera / T_base_camera YAML"),
    "verify": (VerifyCommand, "residuals of a hand-eye calibration on (fresh) views, mm and degrees"),
}
SUBCOMMANDS = tuple(COMMANDS)
_ALIASES = {
    "intrinsics": {"intrinsics.max_view_error_px": "--max-view-error", "intrinsics.min_views": "--min-views",
                   "intrinsics.distortion_model": "--model"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (schema, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        aliases = {"out": "-o", **_ALIASES.get(name, {})} if name != "verify" else {}
        add_config_arguments(p, schema, aliases=aliases)
        p.add_argument("--set", dest="board_set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a board key, e.g. --set square_length_m=0.0398 (= board.KEY=VALUE)")


def run(args: argparse.Namespace) -> int:
    from simbridge.calibration.camera_info import CalibrationFileError
    from simbridge.calibration.handeye_poses import DegeneratePoseSet
    from simbridge.calibration.intrinsics import CalibrationError

    handlers = {"board": _board, "intrinsics": _intrinsics, "handeye": _handeye, "verify": _verify}
    schema = COMMANDS[args.subcommand][0]
    cfg = config_from_args(args, schema, extra_overrides=[f"board.{o}" for o in args.board_set])
    try:
        return handlers[args.subcommand](cfg)
    except CalibrationFileError as exc:
        raise ConfigError(str(exc)) from exc
    except (CalibrationError, DegeneratePoseSet) as exc:
        print(f"simbridge calibrate {args.subcommand}: {exc}", file=sys.stderr)
        return 1


def _board(cmd: BoardCommand) -> int:
    from simbridge.calibration.board import caption, write_board_files

    paths = write_board_files(cmd.board, cmd.out)
    print(caption(cmd.board))
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0


def _intrinsics(cmd: IntrinsicsCommand) -> int:
    from simbridge.calibration.intrinsics import (
        calibrate_frames,
        iter_image_folder,
        iter_video_frames,
        plot_result,
    )

    assert cmd.board is not None  # checked by IntrinsicsCommand
    frames = iter_image_folder(cmd.images) if cmd.images else iter_video_frames(cmd.video, stride=cmd.stride)
    result = calibrate_frames(frames, cmd.board, cmd.intrinsics, progress=sys.stderr.isatty())
    print(f"{'view':<24} {'corners':>7} {'error px':>9} {'tilt deg':>9}")
    for v in result.views:
        print(f"{v.name:<24} {v.num_corners:>7} {v.error_px:9.3f} {v.tilt_deg:9.1f}{'  REJECTED' if v.rejected else ''}")
    print("coverage ('.' = no corners yet):\n" + result.coverage.ascii_map())
    summary = result.summary()
    print(f"fx {summary['fx']:.2f} fy {summary['fy']:.2f} cx {summary['cx']:.2f} cy {summary['cy']:.2f}  "
          f"RMS {result.rms_px:.3f} px, {result.num_kept} views kept")
    for warning in result.warnings:
        print(f"warning: {warning}")
    path = result.write(cmd.out, camera_name=cmd.camera_name)
    plot = plot_result(result, Path(cmd.out).with_suffix(".png"))
    print(f"wrote {path} and {plot}")
    return 0


def _handeye(cmd: HandeyeCommand) -> int:
    from simbridge.calibration.camera_info import load_camera_info
    from simbridge.calibration.handeye import load_views, solve_hand_eye

    if cmd.simulate:
        return _simulate(cmd)
    assert cmd.board is not None and cmd.camera_info and cmd.data and cmd.out  # checked by HandeyeCommand
    intrinsics = load_camera_info(cmd.camera_info)
    views = load_views(cmd.data, cmd.board, intrinsics)
    result = solve_hand_eye(views, cmd.mode, board=cmd.board, intrinsics=intrinsics, camera_name=cmd.camera_name)
    _print_result(result)
    print(f"wrote {result.write(cmd.out)}  (calibration_id {result.calibration_id})")
    return 0


def _print_result(result) -> None:
    from simbridge.calibration.geometry import matrix_to_pose7, pose_difference

    print(f"{'method':<11} {'x':>9} {'y':>9} {'z':>9}  {'vs chosen mm':>12} {'deg':>7}")
    for name, T in result.per_method.items():
        mm, deg = pose_difference(T, result.T)
        x, y, z = matrix_to_pose7(T)[:3]
        print(f"{name:<11} {x:9.4f} {y:9.4f} {z:9.4f}  {mm:12.3f} {deg:7.3f}{'  <- chosen' if T is result.T else ''}")
    a, s = result.agreement, result.residuals.summary()
    print(f"methods agree within {a['translation_mm']:.3f} mm / {a['rotation_deg']:.3f} deg"
          f"{'; failed: ' + ', '.join(a['failed']) if a['failed'] else ''}")
    print(f"residuals: {s['translation_mm']['mean']:.3f} mm / {s['rotation_deg']['mean']:.4f} deg mean over "
          f"{result.num_views} views")


def _simulate(cmd: HandeyeCommand) -> int:
    from simbridge.calibration.camera_info import CameraIntrinsics
    from simbridge.calibration.handeye import collect_views, hand_eye_error, solve_hand_eye
    from simbridge.calibration.handeye_poses import generate_poses
    from simbridge.calibration.synthetic import example_rig
    from simbridge.calibration.verify import format_noise_table, noise_study

    board = cmd.board or BoardConfig()
    if cmd.noise_table:
        rows = noise_study(cmd.mode, n_poses=cmd.poses, board=board)
        print(format_noise_table(cmd.mode, rows))
        print(json.dumps(rows))
        return 0
    rig, centre = example_rig(cmd.mode, board, render=True)
    pivot = (0.0, 0.0, 0.40) if cmd.mode == "eye_in_hand" else (0.0, 0.0, 0.02)
    intrinsics = CameraIntrinsics(rig.K, rig.dist, rig.image_size, cmd.camera_name)
    views = collect_views(generate_poses(centre, cmd.poses, pivot_in_ee=pivot), rig.move_to, rig.capture, board,
                          intrinsics, save_dir=None, progress=sys.stderr.isatty())
    result = solve_hand_eye(views, cmd.mode, board=board, intrinsics=intrinsics, camera_name=cmd.camera_name)
    _print_result(result)
    mm, deg = hand_eye_error(result.T, rig.T_hand_eye)
    print(f"error vs ground truth: {mm:.3f} mm, {deg:.4f} deg")
    if cmd.out:
        print(f"wrote {result.write(cmd.out)}")
    return 0


def _verify(cmd: VerifyCommand) -> int:
    from simbridge.calibration.camera_info import load_camera_info
    from simbridge.calibration.handeye import load_hand_eye, load_views
    from simbridge.calibration.verify import verify_hand_eye

    board = cmd.board
    assert board is not None  # checked by VerifyCommand
    intrinsics = load_camera_info(cmd.camera_info)
    calibration = load_hand_eye(cmd.handeye)
    views = load_views(cmd.data, board, intrinsics)
    if len(views) < 2:
        print(f"simbridge calibrate verify: the board was found in only {len(views)} views of {cmd.data}; "
              "need at least 2", file=sys.stderr)
        return 1
    report = verify_hand_eye(views, calibration, board, intrinsics, cmd.max_mm, cmd.max_deg)
    print(f"calibration {calibration.calibration_id} ({calibration.mode}), {len(views)} views")
    print(report.table())
    return 0 if report.passed else 1
