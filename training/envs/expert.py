"""The scripted expert on the ManiSkill ``PutOnTarget`` task: :class:`simbridge.data.expert.WaypointExpert`
reading its privileged state (object and receptacle poses, grasp contact) from the simulator.

The waypoint logic (phases, funnel, yaw) lives in :mod:`simbridge.data.expert`, shared with the
franky-sim twin's expert (:mod:`simbridge.deploy.twin_expert`); this module only says where the
state comes from in ManiSkill.
"""

from __future__ import annotations

import numpy as np

from simbridge.data.expert import (
    GRIPPER_OPENING,
    STYLES,
    WIDTH_MARGIN,
    ExpertState,
    ExpertStyle,
    WaypointExpert,
    footprint_width,
    funnel_height,
    grasp_yaw,
    needs_yaw,
    width_excess,
    yaw_of,
)
from simbridge.training.envs.wrapper import ContractEnv

__all__ = [
    "GRIPPER_OPENING",
    "STYLES",
    "WIDTH_MARGIN",
    "ExpertStyle",
    "ScriptedExpert",
    "footprint_width",
    "funnel_height",
    "grasp_yaw",
    "make_expert",
    "maniskill_state",
    "needs_yaw",
    "width_excess",
]


def maniskill_state(env: ContractEnv) -> ExpertState:
    """The expert's privileged state from the (single-env) ManiSkill task, in the robot base frame."""
    ms = env.unwrapped_ms
    t = ms.target_info()
    base = ms.agent.robot.pose.raw_pose[0].cpu().numpy()
    # The base is not rotated in this task (identity quaternion); subtract its position.
    assert np.allclose(base[3:], [1, 0, 0, 0], atol=1e-5), "expert assumes an unrotated robot base"
    obj = t["obj_pose"][0].cpu().numpy().astype(np.float64)
    return ExpertState(
        obj=obj[:3] - base[:3],
        obj_yaw=yaw_of(obj[3:]),
        goal=t["goal_pos"][0].cpu().numpy().astype(np.float64) - base[:3],
        obj_half=float(t["obj_half_height"][0]),
        grasped=bool(ms._target_grasped()[0]),
        shape=env.layout.target_object,
    )


class ScriptedExpert(WaypointExpert):
    """The waypoint expert on a ``make_env`` environment (``env`` is kept: demo writers read it)."""

    def __init__(self, env: ContractEnv, **kwargs) -> None:
        if not isinstance(env, ContractEnv):
            raise TypeError(
                f"the scripted expert needs a ManiSkill PutOnTarget env from make_env(), got {type(env).__name__}; "
                "LIBERO suites have no scripted expert (use their demonstration datasets)"
            )
        self.env = env
        super().__init__(env.contract, lambda obs: maniskill_state(env), **kwargs)


def make_expert(env, **kwargs) -> ScriptedExpert:
    """The scripted expert for a ``make_env`` environment (raises ``TypeError`` for other envs)."""
    return ScriptedExpert(env, **kwargs)
