"""``PutOnTarget-v1``: "put the <object> on the <receptacle>" with a Panda (ManiSkill3 task).

Importing this module imports ManiSkill/SAPIEN and registers the task with ``@register_env``;
:func:`simbridge.training.envs.make_env` does it lazily. The task is described by its class
docstring; what it randomizes is chosen by a :class:`~simbridge.training.envs.splits.Split`.

Design notes (why it is built this way):

* Every shape of object and receptacle the splits can ask for is built once per scene (a pool);
  an episode moves the ones it uses onto the table and parks the rest on the floor far away, and
  recolours them through their render materials. So changing colours, shapes or even the split
  never needs a scene reconfiguration (which costs seconds on the CPU renderer).
* The scene (table, tablecloth, shapes and sizes, lights, cameras) is built from the one scene
  description, :mod:`simbridge.data.scene`, which the franky-sim twin builds from too. Positions
  are in its task frame: table centre at the origin, table surface at z = 0, the robot base at
  ``ROBOT_BASE_XYZ`` facing +x.
* All per-episode sampling uses ``numpy.random.default_rng([split.salt, episode_seed])``: one
  episode is reproducible from its split and seed alone, on the CPU and in batched GPU sim.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import sapien
import torch
from mani_skill.agents.robots import Panda
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
from mani_skill.utils.registration import register_env
from mani_skill.utils.scene_builder.table import TableSceneBuilder
from mani_skill.utils.structs.pose import Pose
from mani_skill.utils.structs.types import SimConfig

from simbridge.data.scene import (
    CAMERAS,
    COLOURS,
    LIGHTING,
    OBJECT_SHAPES,
    RECEPTACLE_SHAPES,
    ROBOT_BASE_XYZ,
    VIEWER_CAMERA,
    FixedCamera,
)
from simbridge.data.spec import CameraSpec
from simbridge.training.envs.layout import EpisodeLayout, object_half_height, receptacle_top, sample_layout
from simbridge.training.envs.spec import SIM_CAMERAS
from simbridge.training.envs.splits import Split, get_split
from simbridge.training.envs.task_scene import (
    Tablecloth,
    build_object,
    build_receptacle,
    park_xyz,
    set_colour,
    tile_cells,
)

__all__ = ["TASK_ID", "PutOnTargetEnv", "tile_cells"]

TASK_ID = "PutOnTarget-v1"
_OBJECTS = list(OBJECT_SHAPES)
_RECEPTACLES = list(RECEPTACLE_SHAPES)


def _upright(x: float, y: float, z: float, yaw: float) -> list[float]:
    """Raw pose (xyz + wxyz) at (x, y, z) turned by ``yaw`` about z."""
    return [x, y, z, math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]


@register_env(TASK_ID, max_episode_steps=80)
class PutOnTargetEnv(BaseEnv):
    """Put the named object on the named receptacle (Panda, tabletop, language-conditioned).

    **Scene:** the ManiSkill table with a coloured tablecloth, one Panda (``pd_ee_pose``, driven with delta actions by the contract wrapper),
    graspable objects built from primitives (cube, block, can, capsule, brick), flat receptacles
    (plate, tray, mat, coaster), a front "scene" camera close to the workspace and an optional
    "wrist" camera on the hand. Control at 10 Hz (100 Hz physics).

    **Randomizations** (per episode, by the split; see ``splits.py``):

    - object shape and colour, receptacle shape and colour (from the split's palettes)
    - object xy in the split's region, yaw in [-45, 45] deg; receptacle xy; items >= 13 cm apart
    - tablecloth colour (or two-colour checker texture); per-step colour jitter (dynamic texture)
    - robot initial joints: rest pose + Gaussian noise (+ a joint offset in unseen-pose splits)
    - instruction phrasing (templates of the split)
    - number of objects (distractors) and receptacles (distractor receptacles)
    - the object jumping to a new place at a given step (moved-object split)

    **Success conditions** (all at once):

    - the target object's centre is over the target receptacle (inside its rim by 5 mm),
    - its bottom rests on the receptacle (centre height within 2 cm of resting height),
    - the gripper does not hold it (the object was released).

    **Dense reward** (``compute_dense_reward``, max 5): reaching (1 - tanh(5 d_tcp_obj)), +1 while
    grasped, placing (1 - tanh(5 d_obj_goal)) while grasped, +1 when over the receptacle and
    released; 5 on success.
    """

    SUPPORTED_ROBOTS: ClassVar[list[str]] = ["panda"]
    agent: Panda

    def __init__(
        self,
        *args,
        split: str | Split = "train",
        cameras: Sequence[CameraSpec] = (CameraSpec("scene"),),
        robot_uids: str = "panda",
        **kwargs,
    ):
        self.split = get_split(split)
        unknown = [c.name for c in cameras if c.name not in SIM_CAMERAS]
        if unknown:
            raise ValueError(f"cameras: this task renders {list(SIM_CAMERAS)}, not {unknown}")
        self.cameras = tuple(cameras)  # decided by SimEnvSpec.cameras
        self.layouts: list[EpisodeLayout] = []
        #: False: the next observations leave the camera images out (see _get_obs_with_sensor_data).
        self.render_sensors = True
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    # --- configuration ----------------------------------------------------------------
    @property
    def _default_sim_config(self):
        return SimConfig(sim_freq=100, control_freq=10)

    @property
    def _default_sensor_configs(self):
        # Poses, fields of view and clipping planes are the scene description's (simbridge.data.scene).
        configs = []
        for spec in self.cameras:
            cam = CAMERAS[spec.name]
            w, h = spec.width, spec.height
            if isinstance(cam, FixedCamera):
                pose = sapien_utils.look_at(eye=list(cam.eye), target=list(cam.target))
                configs.append(CameraConfig(cam.name, pose, w, h, cam.fovy, cam.near, cam.far))
            else:
                mount_pose = sapien.Pose(p=list(cam.pos), q=list(cam.quat))
                link = self.agent.robot.links_map[f"panda_{cam.link}"]
                configs.append(CameraConfig(cam.name, mount_pose, w, h, cam.fovy, cam.near, cam.far, mount=link))
        return configs

    @property
    def _default_human_render_camera_configs(self):
        cam = VIEWER_CAMERA
        pose = sapien_utils.look_at(eye=list(cam.eye), target=list(cam.target))
        return CameraConfig(cam.name, pose, *cam.image_size[::-1], cam.fovy, cam.near, cam.far)

    # --- scene --------------------------------------------------------------------------
    def _load_agent(self, options: dict):
        super()._load_agent(options, sapien.Pose(p=list(ROBOT_BASE_XYZ)))

    def _load_lighting(self, options: dict):
        self.scene.set_ambient_light(list(LIGHTING.ambient))
        shadow = LIGHTING.shadows or self.enable_shadow
        for k, light in enumerate(LIGHTING.directional):
            extra = dict(shadow=shadow, shadow_scale=5, shadow_map_size=2048) if k == 0 else {}
            self.scene.add_directional_light(list(light.direction), list(light.colour), **extra)

    def _load_scene(self, options: dict):
        self.table_scene = TableSceneBuilder(self, robot_init_qpos_noise=0.0)
        self.table_scene.build()
        self.tablecloth = Tablecloth(self.scene)
        self.objects = {name: build_object(self.scene, name) for name in OBJECT_SHAPES}
        self.receptacles = {name: build_receptacle(self.scene, name) for name in RECEPTACLE_SHAPES}

    # --- episodes -----------------------------------------------------------------------
    def set_split(self, split: str | Split) -> None:
        """Use ``split`` from the next reset on (no reconfiguration needed)."""
        self.split = get_split(split)

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        if "split" in options:
            self.set_split(options["split"])
        seeds = np.atleast_1d(self._episode_seed)
        if len(self.layouts) != self.num_envs:
            self.layouts = [None] * self.num_envs  # type: ignore[list-item]
            self._new_episode_state()
        idx = env_idx.tolist()
        for i in idx:
            self.layouts[i] = sample_layout(self.split, int(seeds[i] if len(seeds) > i else seeds[0]))
        with torch.device(self.device):
            self.table_scene.initialize(env_idx)
            qpos = torch.as_tensor(np.stack([self.layouts[i].robot_qpos for i in idx]), dtype=torch.float32)
            self.agent.reset(qpos)
            self._apply_layouts(env_idx)
        self._reset_episode_state(idx)

    # --- per-env episode state (tensors on self.device; partial resets touch only env_idx) ---
    def _new_episode_state(self) -> None:
        n, dev = self.num_envs, self.device
        self._moved = torch.zeros(n, dtype=torch.bool, device=dev)
        self._move_at = torch.full((n,), -1, dtype=torch.int64, device=dev)  # elapsed step of the move; -1: none
        self._target_obj = torch.zeros(n, dtype=torch.int64, device=dev)  # index into OBJECT_SHAPES
        self._target_rec = torch.zeros(n, dtype=torch.int64, device=dev)  # index into RECEPTACLE_SHAPES
        self._rec_top = torch.zeros(n, dtype=torch.float32, device=dev)
        self._obj_half = torch.zeros(n, dtype=torch.float32, device=dev)
        self._rec_is_box = torch.zeros(n, dtype=torch.bool, device=dev)
        self._rec_inner = torch.zeros((n, 2), dtype=torch.float32, device=dev)  # half sizes / radius - 5 mm
        self._jitter: dict[int, tuple[np.random.Generator, float]] = {}

    def _reset_episode_state(self, idx: list[int]) -> None:
        lays = [self.layouts[i] for i in idx]
        at = torch.as_tensor(idx, dtype=torch.int64, device=self.device)
        move = self.split.move_object_at_step
        self._moved[at] = False
        self._move_at[at] = self._tensor([move if move >= 0 and "move_to" in lay.extra else -1 for lay in lays])
        self._target_obj[at] = self._tensor([_OBJECTS.index(lay.target_object) for lay in lays])
        self._target_rec[at] = self._tensor([_RECEPTACLES.index(lay.target_receptacle) for lay in lays])
        self._rec_top[at] = self._tensor([receptacle_top(lay.target_receptacle) for lay in lays], torch.float32)
        self._obj_half[at] = self._tensor([object_half_height(lay.target_object) for lay in lays], torch.float32)
        shapes = [RECEPTACLE_SHAPES[lay.target_receptacle] for lay in lays]
        self._rec_is_box[at] = self._tensor([kind == "box" for kind, _ in shapes], torch.bool)
        inner = [(s[0] - 0.005, s[1] - 0.005) if kind == "box" else (s[0] - 0.005, 0.0) for kind, s in shapes]
        self._rec_inner[at] = self._tensor(inner, torch.float32).reshape(-1, 2)
        for i, lay in zip(idx, lays, strict=True):
            rng = np.random.default_rng(lay.extra["tablecloth_jitter_seed"])
            self._jitter[i] = (rng, self.split.dynamic_texture)

    def _tensor(self, values: list, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    def _apply_layouts(self, env_idx: torch.Tensor) -> None:
        idx = env_idx.tolist()
        for kind, pool in (("obj", self.objects), ("rec", self.receptacles)):
            for name, actor in pool.items():
                poses = []
                for i in idx:
                    lay = self.layouts[i]
                    items = lay.objects if kind == "obj" else lay.receptacles
                    used = [k for k, (s, _) in enumerate(items) if s == name]
                    if not used:
                        poses.append([*park_xyz(kind, name), 1, 0, 0, 0])
                        continue
                    k = used[0]
                    set_colour(actor, i, COLOURS[items[k][1]])
                    if kind == "obj":
                        x, y, yaw = lay.object_xy_yaw[k]
                        poses.append(_upright(x, y, object_half_height(name) + 0.001, yaw))
                    else:
                        x, y = lay.receptacle_xy[k]
                        poses.append([x, y, 0.0, 1, 0, 0, 0])
                actor.set_pose(Pose.create(torch.as_tensor(poses, dtype=torch.float32)))
                if kind == "obj":
                    actor.set_linear_velocity(torch.zeros((len(idx), 3)))
                    actor.set_angular_velocity(torch.zeros((len(idx), 3)))
        self.tablecloth.place([self.layouts[i].extra.get("texture", "none") for i in idx])
        for i in idx:
            self.tablecloth.paint(i, self.layouts[i].tablecloth)

    # --- per-step perturbations ------------------------------------------------------
    def _before_control_step(self):
        # Runs before this step's elapsed_steps += 1: env i moves on its own step move_at + 1.
        due = (self._move_at >= 0) & (self.elapsed_steps.to(self.device) == self._move_at)
        if due.any():
            self._move_objects(due)
        for i, (rng, amplitude) in self._jitter.items():
            if amplitude > 0:
                self.tablecloth.paint(i, self.layouts[i].tablecloth, rng.uniform(-amplitude, amplitude, 3))

    @contextlib.contextmanager
    def _only_envs(self, mask: torch.Tensor):
        """Pose / velocity setters of the GPU sim write the rows of ``scene._reset_mask``: just ``mask``."""
        previous = self.scene._reset_mask
        self.scene._reset_mask = mask
        try:
            yield
        finally:
            self.scene._reset_mask = previous

    def _move_objects(self, due: torch.Tensor) -> None:
        """Move the target object of the ``due`` envs that do not hold it to ``extra["move_to"]``."""
        due = due & ~self._target_grasped()
        for i in due.nonzero().flatten().tolist():
            lay = self.layouts[i]
            x, y = lay.extra["move_to"]
            yaw = lay.object_xy_yaw[0][2]
            lay.moved_to = (x, y)
            lay.object_xy_yaw[0] = (x, y, yaw)
        for k, name in enumerate(_OBJECTS):
            mask = due & (self._target_obj == k)
            if not mask.any():
                continue
            envs = mask.nonzero().flatten().tolist()
            raw = self._tensor([_upright(*self.layouts[i].moved_to, object_half_height(name) + 0.001,
                                         self.layouts[i].object_xy_yaw[0][2]) for i in envs], torch.float32)  # fmt: skip
            actor = self.objects[name]
            with self._only_envs(mask):
                if self.gpu_sim_enabled:
                    actor.set_pose(Pose.create(raw))
                else:  # one env per CPU scene
                    full = actor.pose.raw_pose.clone()
                    full[mask] = raw
                    actor.set_pose(Pose.create(full))
                zeros = torch.zeros((len(envs) if self.gpu_sim_enabled else self.num_envs, 3), device=self.device)
                actor.set_linear_velocity(zeros)
                actor.set_angular_velocity(zeros)
        if self.gpu_sim_enabled:
            self.scene.px.gpu_apply_rigid_dynamic_data()  # the step's fetch reads them back
        self._moved |= due

    # --- target geometry (batched over envs) -------------------------------------------
    def _target_actor_pose(self, which: str) -> torch.Tensor:
        """(num_envs, 7) raw poses of each env's target object / receptacle."""
        names, target = (_OBJECTS, self._target_obj) if which == "obj" else (_RECEPTACLES, self._target_rec)
        pool = self.objects if which == "obj" else self.receptacles
        out = torch.zeros((self.num_envs, 7), device=self.device)
        for k in target.unique().tolist():
            mask = target == k
            out[mask] = pool[names[k]].pose.raw_pose.to(self.device).expand(self.num_envs, 7)[mask]
        return out

    def _target_grasped(self) -> torch.Tensor:
        out = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        for k in self._target_obj.unique().tolist():
            out |= (self._target_obj == k) & self.agent.is_grasping(self.objects[_OBJECTS[k]])
        return out

    def target_info(self) -> dict[str, torch.Tensor]:
        """Privileged geometry the scripted expert and the dense reward use (task frame)."""
        obj = self._target_actor_pose("obj")
        rec = self._target_actor_pose("rec")
        goal = rec[:, :3].clone()
        goal[:, 2] = rec[:, 2] + self._rec_top + self._obj_half
        return dict(
            obj_pose=obj, rec_pose=rec, goal_pos=goal, rec_top=self._rec_top.clone(),
            obj_half_height=self._obj_half.clone(),
        )  # fmt: skip

    def _inside_receptacle(self, obj_xy: torch.Tensor, rec_xy: torch.Tensor) -> torch.Tensor:
        """Per env: the object's centre inside its target receptacle's rim by 5 mm."""
        d = obj_xy - rec_xy
        in_box = (d.abs() < self._rec_inner).all(dim=1)
        in_disc = torch.linalg.norm(d, dim=1) < self._rec_inner[:, 0]
        return torch.where(self._rec_is_box, in_box, in_disc)

    def evaluate(self):
        if not self.layouts or any(lay is None for lay in self.layouts):
            z = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            return dict(success=z, is_grasped=z, is_obj_on_receptacle=z)
        t = self.target_info()
        over = self._inside_receptacle(t["obj_pose"][:, :2], t["rec_pose"][:, :2])
        resting = (t["obj_pose"][:, 2] - t["goal_pos"][:, 2]).abs() < 0.02
        grasped = self._target_grasped()
        on = over & resting
        return dict(
            success=on & ~grasped,
            is_grasped=grasped,
            is_obj_on_receptacle=on,
            object_moved=self._moved.clone(),
        )

    def _get_obs_with_sensor_data(self, info: dict, apply_texture_transforms: bool = True) -> dict:
        # Rendering is ~90% of a CPU step (2 cameras: ~65 ms of ~70). The steps inside an
        # open-loop action chunk produce observations that nobody reads: skip their images.
        if not self.render_sensors:
            return self._get_obs_state_dict(info)
        return super()._get_obs_with_sensor_data(info, apply_texture_transforms)

    def _get_obs_extra(self, info: dict):
        obs = dict(tcp_pose=self.agent.tcp_pose.raw_pose)
        if "state" in self.obs_mode:
            t = self.target_info()
            obs.update(
                is_grasped=info["is_grasped"],
                obj_pose=t["obj_pose"],
                goal_pos=t["goal_pos"],
                tcp_to_obj_pos=t["obj_pose"][:, :3] - self.agent.tcp_pose.p,
                obj_to_goal_pos=t["goal_pos"] - t["obj_pose"][:, :3],
            )
        return obs

    def compute_dense_reward(self, obs: Any, action: torch.Tensor, info: dict):
        t = self.target_info()
        obj_p = t["obj_pose"][:, :3]
        reward = 1 - torch.tanh(5 * torch.linalg.norm(obj_p - self.agent.tcp_pose.p, axis=1))
        grasped = info["is_grasped"].float()
        reward = reward + grasped
        lift_goal = t["goal_pos"].clone()
        reward = reward + (1 - torch.tanh(5 * torch.linalg.norm(lift_goal - obj_p, axis=1))) * grasped
        reward = reward + (info["is_obj_on_receptacle"] & ~info["is_grasped"]).float()
        reward[info["success"]] = 5.0
        return reward

    def compute_normalized_dense_reward(self, obs: Any, action: torch.Tensor, info: dict):
        return self.compute_dense_reward(obs=obs, action=action, info=info) / 5.0
