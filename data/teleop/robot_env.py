"""The contract environment API over a robot and its cameras, so the collection loop runs on hardware.

:class:`RobotEnv` turns a :class:`simbridge.deploy.robot.Robot` (a real Franka through franky, or
the franky-sim twin) plus cameras into the gym-like API of ``simbridge.training.envs``::

    with TwinSim(seed=0) as twin, FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True)) as robot:
        env = RobotEnv(robot, {"scene": lambda: twin.render("scene")}, contract,
                       reset_fn=lambda seed: twin.reset(seed=seed).instruction, success_fn=twin.success)
        Collector(env, device, writer).run(episodes=5)

``step`` sends the action (the robot applies its own safety filter and returns what it sent),
waits for the next control tick and observes; ``stop`` stops the arm (the collection loop calls
it to fail closed). Cameras are ``deploy.cameras.Camera`` objects (``read() -> (frame, stamp)``)
or plain callables returning an RGB frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from simbridge.data.spec import Observation, PolicyContract


class RobotEnv:
    def __init__(
        self,
        robot: Any,
        cameras: Mapping[str, Any],
        contract: PolicyContract,
        instruction: str = "",
        reset_fn: Callable[[int | None], str | None] | None = None,
        success_fn: Callable[[], bool] | None = None,
        max_episode_steps: int = 200,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        missing = [c for c in contract.observation.camera_names if c not in cameras]
        if missing:
            raise ValueError(
                f"cameras: the contract needs {list(contract.observation.camera_names)}, missing {missing}"
            )
        self.robot, self.cameras, self.contract = robot, dict(cameras), contract
        self.instruction = instruction
        self.reset_fn, self.success_fn = reset_fn, success_fn
        self.max_episode_steps = max_episode_steps
        self._clock, self._sleep = clock, sleep
        self._steps = 0
        self._next_tick = 0.0

    def _frame(self, name: str) -> np.ndarray:
        cam = self.cameras[name]
        out = cam.read() if hasattr(cam, "read") else cam()
        frame = out[0] if isinstance(out, tuple) else out
        spec = self.contract.observation.camera(name)
        if frame.shape != spec.shape:
            import cv2

            frame = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _observe(self) -> Observation:
        state = self.robot.get_observation()
        return Observation(
            images={name: self._frame(name) for name in self.contract.observation.camera_names},
            ee_pose=np.asarray(state["ee_pose"], np.float32),
            gripper_width=float(state["gripper_width"]),
            joint_positions=np.asarray(state["joint_positions"], np.float32),
            instruction=self.instruction,
            timestamp=float(state.get("timestamp", time.time())),
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Observation, dict]:
        if self.reset_fn is not None:
            instruction = self.reset_fn(seed)
            if instruction:
                self.instruction = instruction
        self._steps = 0
        self._next_tick = self._clock() + self.contract.action.period_s
        return self._observe(), {"instruction": self.instruction, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict]:
        sent = self.robot.send_action(np.asarray(action, np.float32))
        self._sleep(max(0.0, self._next_tick - self._clock()))  # hold the control rate
        self._next_tick = max(self._next_tick + self.contract.action.period_s, self._clock())
        self._steps += 1
        obs = self._observe()
        info: dict = {"sent": sent}
        success = False
        if self.success_fn is not None:  # without a judge, leave success to the operator's label
            success = info["success"] = bool(self.success_fn())
        truncated = self._steps >= self.max_episode_steps
        return obs, float(success), success, truncated, info

    def stop(self) -> None:
        self.robot.stop()

    def close(self) -> None:
        pass
