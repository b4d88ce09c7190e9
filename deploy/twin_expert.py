"""The scripted expert in the franky-sim twin, and one episode of any policy there.

The expert is the ManiSkill task's (:class:`simbridge.data.expert.WaypointExpert`, same phases and
gains) reading privileged state from MuJoCo instead of SAPIEN: the object and receptacle poses
(:meth:`TwinSim.object_poses`, robot base frame) and whether both fingers touch the object
(:meth:`TwinSim.held`, MuJoCo's contacts; SAPIEN's ``is_grasping`` in the task). Its actions go through the whole robot stack (safety filter -> franky -> franky-sim),
exactly as a policy's would, so a high expert success rate shows the twin's physics and grasping
work before any policy is judged there::

    with TwinSim(seed=0) as twin, FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True),
                                              clock=twin.clock) as robot:
        expert = make_twin_expert(twin, contract)
        result = run_twin_episode(twin, robot, expert, contract, seed=3, scene=TwinScene())
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbridge.data.expert import ExpertState, WaypointExpert, yaw_of
from simbridge.data.scene import OBJECT_SHAPES, receptacle_top
from simbridge.data.spec import Observation, Policy, PolicyContract
from simbridge.data.teleop.robot_env import RobotEnv
from simbridge.deploy.chunking import ChunkExecutor, RecedingHorizon
from simbridge.deploy.twin import TwinSim
from simbridge.deploy.twin_scene import TwinLayout, TwinScene


def twin_state(twin: TwinSim, obs: Observation) -> ExpertState:
    """The expert's privileged state from the twin's current layout and object poses (base frame)."""
    layout = twin.layout
    if layout is None:
        raise RuntimeError("the twin has no episode layout: call twin.reset() before the expert acts")
    poses = twin.object_poses()
    obj, rec = poses[layout.target_object], poses[layout.target_receptacle]
    shape = layout.target_object.removeprefix("obj_")
    half = OBJECT_SHAPES[shape].half_height
    goal = np.array([rec[0], rec[1], rec[2] + receptacle_top(layout.target_receptacle.removeprefix("rec_")) + half])
    return ExpertState(obj=obj[:3].astype(np.float64), obj_yaw=yaw_of(obj[3:]), goal=goal, obj_half=half,
                       grasped=twin.held(layout.target_object, fresh=False), shape=shape)  # fmt: skip


def make_twin_expert(twin: TwinSim, contract: PolicyContract, **kwargs: Any) -> WaypointExpert:
    """The scripted expert (``funnel`` style unless ``style=`` says otherwise) acting in ``twin``."""
    return WaypointExpert(contract, lambda obs: twin_state(twin, obs), **kwargs)


@dataclass
class TwinEpisode:
    """What one episode in the twin did."""

    seed: int
    success: bool
    steps: int
    wall_s: float
    instruction: str
    target_object: str
    #: The expert's phase per step (empty for a learned policy).
    phases: list[str] = field(default_factory=list)


def run_twin_episode(twin: TwinSim, robot: Any, policy: Policy, contract: PolicyContract, *, seed: int,
                     scene: TwinScene | None = None, layout: TwinLayout | None = None,
                     home_joints: tuple[float, ...] | None = None, max_steps: int = 80,
                     chunker: ChunkExecutor | None = None) -> TwinEpisode:  # fmt: skip
    """Home the arm (to ``home_joints``, default the driver's), lay out episode ``seed`` of ``scene``
    (or ``layout`` as given), and run ``policy`` at the contract's rate on the twin's simulated clock
    until success or ``max_steps``; the arm is stopped at the end. ``chunker`` executes the policy's
    chunks (default: the whole chunk, then predict again, as ``simbridge eval`` does)."""
    cameras = {name: (lambda n=name: twin.render(n, size=contract.observation.camera(n).shape[:2]))
               for name in contract.observation.camera_names}  # fmt: skip
    env = RobotEnv(robot, cameras, contract, reset_fn=lambda s: twin.reset(seed=s, scene=scene, layout=layout).instruction,
                   success_fn=twin.success, max_episode_steps=max_steps, clock=twin.clock, sleep=twin.wait)  # fmt: skip
    t0 = time.monotonic()
    robot.home(joints=home_joints)
    obs, info = env.reset(seed=seed)
    twin.wait(0.2)  # let the objects settle on the table
    reset_fn = getattr(policy, "reset", None)
    if reset_fn is not None:
        reset_fn()
    chunker = chunker or RecedingHorizon(contract.chunk_size)
    chunker.reset()
    success, truncated, steps = False, False, 0
    try:
        while not (success or truncated):
            obs, _, success, truncated, _ = env.step(chunker.act(policy, obs))
            steps += 1
    finally:
        env.stop()
    layout = twin.layout
    return TwinEpisode(seed=seed, success=bool(success), steps=steps, wall_s=round(time.monotonic() - t0, 2),
                       instruction=info["instruction"], target_object=layout.target_object if layout else "",
                       phases=list(getattr(policy, "phases", [])))  # fmt: skip
