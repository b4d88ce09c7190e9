"""``simbridge calibrate``: board | intrinsics | handeye | verify.

    simbridge calibrate board -o calib/board [--config board.yaml] [--set squares_x=9 ...]
    simbridge calibrate intrinsics --board calib/board/board.yaml (--images DIR | --video FILE|DEVICE) -o cam.yaml
    simbridge calibrate handeye --mode eye_in_hand --board B --camera-info cam.yaml --data DIR -o handeye.yaml
    simbridge calibrate handeye --mode eye_to_hand --simulate --noise-table     # synthetic rig, error vs noise
    simbridge calibrate verify --handeye handeye.yaml --board B --camera-info cam.yaml --data DIR

Hand-eye data folders hold ``views.jsonl`` (one ``{"image", "ee_pose"}`` per line, ee_pose =
xyz + quaternion wxyz in the base frame) and the images; the live routine
(:func:`simbridge.calibration.handeye.collect_views`) writes exactly that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simbridge.data.config import ConfigError

SUBCOMMANDS = ("board", "intrinsics", "handeye", "verify")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    def board_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--board", required=required, help="board YAML (written by 'simbridge calibrate board')")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a board config key, e.g. --set square_length_m=0.0398")

    p = sub.add_parser("board", help="write a printable ChArUco board: PNG, PDF at true scale, config YAML")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--config", help="board YAML to start from (defaults otherwise)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("intrinsics", help="camera intrinsics from board views -> ROS camera_info YAML")
    board_args(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of board images")
    source.add_argument("--video", help="video file, device index (0) or /dev/videoN")
    p.add_argument("--stride", type=int, default=5, help="use every Nth video frame")
    p.add_argument("-o", "--out", required=True, help="camera_info YAML to write")
    p.add_argument("--camera-name", default="camera")
    p.add_argument("--max-view-error", type=float, default=1.0, help="drop views above this RMS error (px)")
    p.add_argument("--min-views", type=int, default=8)
    p.add_argument("--model", choices=("plumb_bob", "rational_polynomial"), default="plumb_bob")

    p = sub.add_parser("handeye", help="hand-eye calibration (five methods) -> T_ee_camera / T_base_camera YAML")
    p.add_argument("--mode", required=True, choices=("eye_in_hand", "eye_to_hand"))
    board_args(p, required=False)
    p.add_argument("--camera-info", help="camera_info YAML of the camera")
    p.add_argument("--data", help="folder with views.jsonl + images")
    p.add_argument("--simulate", action="store_true", help="run on the synthetic rig (known truth) instead")
    p.add_argument("--noise-table", action="store_true", help="with --simulate: print error vs pixel noise")
    p.add_argument("--poses", type=int, default=15, help="with --simulate: number of poses")
    p.add_argument("-o", "--out", help="hand-eye YAML to write")
    p.add_argument("--camera-name", default="camera")

    p = sub.add_parser("verify", help="residuals of a hand-eye calibration on (fresh) views, mm and degrees")
    board_args(p)
    p.add_argument("--handeye", required=True, help="hand-eye YAML")
    p.add_argument("--camera-info", required=True)
    p.add_argument("--data", required=True, help="folder with views.jsonl + images")
    p.add_argument("--max-mm", type=float, default=3.0)
    p.add_argument("--max-deg", type=float, default=0.5)


def run(args: argparse.Namespace) -> int:
    from simbridge.calibration.camera_info import CalibrationFileError
    from simbridge.calibration.handeye import DegeneratePoseSet
    from simbridge.calibration.intrinsics import CalibrationError

    handlers = {"board": _board, "intrinsics": _intrinsics, "handeye": _handeye, "verify": _verify}
    try:
        return handlers[args.subcommand](args)
    except CalibrationFileError as exc:
        raise ConfigError(str(exc)) from exc
    except (CalibrationError, DegeneratePoseSet) as exc:
        print(f"simbridge calibrate {args.subcommand}: {exc}", file=sys.stderr)
        return 1


def _load_board(path: str | None, overrides: list[str]):
    from simbridge.calibration.board import load_board_config

    if path is not None and not Path(path).is_file():
        raise ConfigError(f"board config {path} does not exist; write one with 'simbridge calibrate board -o DIR'")
    return load_board_config(path, overrides)


def _board(args: argparse.Namespace) -> int:
    from simbridge.calibration.board import caption, write_board_files

    cfg = _load_board(args.config, args.overrides)
    paths = write_board_files(cfg, args.out)
    print(caption(cfg))
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0


def _intrinsics(args: argparse.Namespace) -> int:
    from simbridge.calibration.intrinsics import (
        IntrinsicsConfig,
        calibrate_frames,
        iter_image_folder,
        iter_video_frames,
        plot_result,
    )
    from simbridge.data.config import validate_config

    board = _load_board(args.board, args.overrides)
    cfg = validate_config(IntrinsicsConfig, {"max_view_error_px": args.max_view_error, "min_views": args.min_views,
                                             "distortion_model": args.model}, "command line")
    frames = iter_image_folder(args.images) if args.images else iter_video_frames(args.video, stride=args.stride)
    result = calibrate_frames(frames, board, cfg, progress=sys.stderr.isatty())
    print(f"{'view':<24} {'corners':>7} {'error px':>9} {'tilt deg':>9}")
    for v in result.views:
        print(f"{v.name:<24} {v.num_corners:>7} {v.error_px:9.3f} {v.tilt_deg:9.1f}{'  REJECTED' if v.rejected else ''}")
    print("coverage ('.' = no corners yet):\n" + result.coverage.ascii_map())
    summary = result.summary()
    print(f"fx {summary['fx']:.2f} fy {summary['fy']:.2f} cx {summary['cx']:.2f} cy {summary['cy']:.2f}  "
          f"RMS {result.rms_px:.3f} px, {result.num_kept} views kept")
    for warning in result.warnings:
        print(f"warning: {warning}")
    path = result.write(args.out, camera_name=args.camera_name)
    plot = plot_result(result, Path(args.out).with_suffix(".png"))
    print(f"wrote {path} and {plot}")
    return 0


def _handeye(args: argparse.Namespace) -> int:
    from simbridge.calibration.camera_info import load_camera_info
    from simbridge.calibration.handeye import load_views, solve_hand_eye

    if args.simulate:
        return _simulate(args)
    missing = [f"--{k.replace('_', '-')}" for k in ("board", "camera_info", "data", "out") if getattr(args, k) is None]
    if missing:
        raise ConfigError(f"handeye needs {', '.join(missing)} (or --simulate for the synthetic rig)")
    board = _load_board(args.board, args.overrides)
    intrinsics = load_camera_info(args.camera_info)
    views = load_views(args.data, board, intrinsics)
    result = solve_hand_eye(views, args.mode, board=board, intrinsics=intrinsics, camera_name=args.camera_name)
    _print_result(result)
    print(f"wrote {result.write(args.out)}  (calibration_id {result.calibration_id})")
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


def _simulate(args: argparse.Namespace) -> int:
    from simbridge.calibration.camera_info import CameraIntrinsics
    from simbridge.calibration.handeye import collect_views, generate_poses, hand_eye_error, solve_hand_eye
    from simbridge.calibration.synthetic import example_rig
    from simbridge.calibration.verify import format_noise_table, noise_study

    board = _load_board(args.board, args.overrides)
    if args.noise_table:
        rows = noise_study(args.mode, n_poses=args.poses, board=board)
        print(format_noise_table(args.mode, rows))
        print(json.dumps(rows))
        return 0
    rig, centre = example_rig(args.mode, board, render=True)
    pivot = (0.0, 0.0, 0.40) if args.mode == "eye_in_hand" else (0.0, 0.0, 0.02)
    intrinsics = CameraIntrinsics(rig.K, rig.dist, rig.image_size, args.camera_name)
    views = collect_views(generate_poses(centre, args.poses, pivot_in_ee=pivot), rig.move_to, rig.capture, board,
                          intrinsics, save_dir=None, progress=sys.stderr.isatty())
    result = solve_hand_eye(views, args.mode, board=board, intrinsics=intrinsics, camera_name=args.camera_name)
    _print_result(result)
    mm, deg = hand_eye_error(result.T, rig.T_hand_eye)
    print(f"error vs ground truth: {mm:.3f} mm, {deg:.4f} deg")
    if args.out:
        print(f"wrote {result.write(args.out)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from simbridge.calibration.camera_info import load_camera_info
    from simbridge.calibration.handeye import load_hand_eye, load_views
    from simbridge.calibration.verify import verify_hand_eye

    board = _load_board(args.board, args.overrides)
    intrinsics = load_camera_info(args.camera_info)
    calibration = load_hand_eye(args.handeye)
    views = load_views(args.data, board, intrinsics)
    if len(views) < 2:
        print(f"simbridge calibrate verify: the board was found in only {len(views)} views of {args.data}; "
              "need at least 2", file=sys.stderr)
        return 1
    report = verify_hand_eye(views, calibration, board, intrinsics, args.max_mm, args.max_deg)
    print(f"calibration {calibration.calibration_id} ({calibration.mode}), {len(views)} views")
    print(report.table())
    return 0 if report.passed else 1
