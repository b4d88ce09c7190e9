"""simbridge.calibration: camera intrinsics and hand-eye calibration with ChArUco boards.

Modules (one job each):

* :mod:`~simbridge.calibration.board`: ``BoardConfig``, printable PNG/PDF at true scale, ``detect_board``.
* :mod:`~simbridge.calibration.intrinsics`: ``IntrinsicsCalibrator`` (frames from a folder, a video /
  device or the camera node, coverage feedback), ``calibrateCamera`` with per-view outlier rejection.
* :mod:`~simbridge.calibration.camera_info`: ROS camera_info YAML; ``load_camera_info(path) -> (K, dist, size, name)``.
* :mod:`~simbridge.calibration.handeye_poses`: pose generation, degenerate-set checks (``DegeneratePoseSet``).
* :mod:`~simbridge.calibration.handeye`: ``collect_views`` (any robot via ``move_to`` / ``capture``
  callables), five-method ``solve_hand_eye``, YAML with ``calibration_id``
  (``load_hand_eye(path).calibration_id`` is what ``EpisodeMeta.calibration_id`` records).
* :mod:`~simbridge.calibration.robot_motion`: ``robot_move_to(robot)`` for SimBridge ``Robot``s (safety filter).
* :mod:`~simbridge.calibration.verify`: residuals in mm / degrees / pixels; error-vs-noise study.
* :mod:`~simbridge.calibration.synthetic`: rendered board views and a virtual rig with known truth.
* :mod:`~simbridge.calibration.cli_calibrate`: ``simbridge calibrate board | intrinsics | handeye | verify``.
"""
