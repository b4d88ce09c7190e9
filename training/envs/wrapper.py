"""The contract wrapper: a ManiSkill task seen through :mod:`simbridge.data.spec`.

:class:`ContractEnv` turns ManiSkill's batched torch dicts into one :class:`~simbridge.data.spec.Observation`
per step and maps a contract action (metres / radians per step, gripper +1 open ... -1 closed)
onto the Panda's ``pd_ee_pose`` controller.

Why ``pd_ee_pose`` with a target kept here, and not ``pd_ee_delta_pose``: ManiSkill's delta
controller applies each delta to the *measured* pose, and its joint PD (stiffness 1e3, damping 1e2)
has a 0.1 s time constant, exactly one control period at 10 Hz — so a commanded 1 cm step moved
the TCP only 0.63 cm, every step (measured). Like a real Cartesian impedance controller, we keep
a target pose, add each delta to it and send it as an absolute pose: in steady motion the TCP
then moves exactly the commanded distance per step (it lags by one time constant). The
target may not run away from the measured pose by more than ``max_target_lead_m`` (anti-windup
when the hand is blocked by the table or an object). Delta rotations compose as in the contract:
extrinsic XYZ Euler angles about base-aligned axes, applied at the end-effector.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from simbridge.data.geometry import euler_xyz_to_quat, quat_multiply, quat_to_matrix
from simbridge.data.images import center_crop_resize
from simbridge.data.spec import ActionSpec, Observation, ObservationSpec, PolicyContract
from simbridge.training.envs.spec import SimEnvSpec
from simbridge.training.envs.splits import Split, get_split

CONTROL_MODE = "pd_ee_pose"


# The contract's rotation conventions (shared with the robot's safety filter).
quat_mul = quat_multiply
euler_xyz_extrinsic_to_quat = euler_xyz_to_quat


def matrix_to_intrinsic_xyz(m: np.ndarray) -> np.ndarray:
    """Angles ``(a, b, c)`` with ``m = Rx(a) Ry(b) Rz(c)``: ManiSkill's ``euler_angles_to_matrix(.., "XYZ")``."""
    b = math.asin(max(-1.0, min(1.0, m[0, 2])))
    a = math.atan2(-m[1, 2], m[2, 2])
    c = math.atan2(-m[0, 1], m[0, 0])
    return np.array([a, b, c])


def _poses7(link: Any) -> np.ndarray:
    """(num_envs, 7) float64 poses of a ManiSkill link/actor (entity poses on a CPU scene)."""
    objs = getattr(link, "_objs", None)
    if objs is not None and all(hasattr(o, "entity_pose") for o in objs) and len(objs) == 1:
        pose = objs[0].entity_pose
        return np.concatenate([pose.p, pose.q]).astype(np.float64)[None]
    return _np(link.pose.raw_pose).astype(np.float64)


def target_step(
    target_p: np.ndarray, target_q: np.ndarray, tcp: np.ndarray, a: np.ndarray, max_lead: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One env's new target ``(p, q)`` and ``pd_ee_pose`` action for contract action ``a``.

    ``target_p + a[:3]``, kept within ``max_lead`` metres of the measured ``tcp`` (anti-windup);
    ``q``: the delta rotation (extrinsic XYZ, base-aligned axes) applied at the end-effector.
    """
    p = target_p + a[:3]
    lead = p - tcp[:3]
    dist = float(np.linalg.norm(lead))
    if dist > max_lead:  # anti-windup: do not let the target run away
        p = tcp[:3] + lead * (max_lead / dist)
    q = quat_mul(euler_xyz_extrinsic_to_quat(a[3:6]), target_q)
    q /= np.linalg.norm(q)
    euler = matrix_to_intrinsic_xyz(quat_to_matrix(q))
    return p, q, np.concatenate([p, euler, [a[6]]]).astype(np.float32)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class ContractEnv(gym.Env):
    """A single ManiSkill ``PutOnTarget`` environment speaking the SimBridge contract.

    ``reset`` returns ``(Observation, info)`` with ``info["instruction"]``, ``info["split"]``,
    ``info["seed"]``; ``step`` returns ``(Observation, reward, terminated, truncated, info)`` with
    ``info["success"]`` and ``info["dense_reward"]`` (and ``info["state"]``, the flat privileged
    state vector, in state mode). The reward is 1.0 on the success step (which terminates the
    episode) plus, when ``dense_reward=True``, the task's normalized dense reward.

    ``spec`` (what it was made from) gives the observation mode, the cameras and the episode
    length; ``split`` is the current split (``set_split`` / ``reset(options={"split": ...})``).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        ms_env: gym.Env,
        spec: SimEnvSpec,
        *,
        task: str,
        split: Split,
        seed: int = 0,
        dense_reward: bool = False,
        action_spec: ActionSpec | None = None,
        max_target_lead_m: float = 0.06,
    ):
        self.ms_env = ms_env
        self.unwrapped_ms = ms_env.unwrapped
        self.spec = spec
        self.task = task
        self.split = split
        self.obs_mode = spec.obs_mode
        self.max_episode_steps = spec.max_episode_steps
        self.dense_reward = bool(dense_reward)
        self.max_target_lead_m = float(max_target_lead_m)
        self.contract = PolicyContract(
            observation=ObservationSpec(cameras=spec.cameras), action=action_spec or ActionSpec()
        )
        self._black = {c.name: np.zeros(c.shape, np.uint8) for c in spec.cameras}
        self._next_seed = int(seed)
        self._rng = np.random.default_rng(seed)  # image noise only
        self.num_envs = int(getattr(self.unwrapped_ms, "num_envs", 1))
        # Per env (rows): the target pose kept here (see the module docstring) and the TCP it leads.
        self._target_p = np.zeros((self.num_envs, 3))
        self._target_q = np.tile([1.0, 0, 0, 0], (self.num_envs, 1))
        self._steps = 0
        self._seed = int(seed)
        self._base: np.ndarray | None = None
        self._last_tcp: np.ndarray | None = None
        self.instruction = ""
        spec = self.contract.action
        self.action_space = gym.spaces.Box(spec.low, spec.high, dtype=np.float32)
        self.observation_space = gym.spaces.Dict({})  # Observation objects: see simbridge.data.spec

    # --- gym API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Observation, dict]:
        options = dict(options or {})
        if "split" in options:
            self.split = get_split(options["split"])
            options["split"] = self.split
        else:
            options["split"] = self.split
        if seed is None:
            seed = self._next_seed
        self._seed = int(seed)
        self._next_seed = self._seed + 1
        self._rng = np.random.default_rng([self.split.salt, self._seed, 7])
        raw_obs, ms_info = self.ms_env.reset(seed=self._seed, options=options)
        self._base = None
        self._last_tcp = None
        self._steps = 0
        tcp = self._tcp_poses_base()
        self._target_p, self._target_q = tcp[:, :3].copy(), tcp[:, 3:].copy()
        self.instruction = self.unwrapped_ms.layouts[0].instruction
        info = self._info(raw_obs, ms_info)
        return self._observation(raw_obs), info

    def step(self, action: np.ndarray, *, observe: bool = True) -> tuple[Observation | None, float, bool, bool, dict]:
        """One control step. ``observe=False``: the caller will not read this step's observation
        (a step inside an open-loop action chunk), so the cameras are not rendered and ``None`` is
        returned instead, unless the episode ends on this step: a final observation is always real.
        """
        a = self.contract.action.clip(action)
        self.unwrapped_ms.render_sensors = observe
        try:
            raw_obs, ms_reward, _, _, ms_info = self.ms_env.step(self._controller_actions(a[None]))
        finally:
            self.unwrapped_ms.render_sensors = True
        self._steps += 1
        info = self._info(raw_obs, ms_info, float(_np(ms_reward).reshape(-1)[0]))
        success = info["success"]
        reward = (1.0 if success else 0.0) + (info["dense_reward"] if self.dense_reward else 0.0)
        truncated = (not success) and self._steps >= self.max_episode_steps
        if observe:
            obs = self._observation(raw_obs)
        elif success or truncated:
            obs = self._observation(self.unwrapped_ms.get_obs(ms_info))
        else:
            obs, self._last_tcp = None, self._tcp_poses_base()  # the next action is applied to this pose
        return obs, float(reward), bool(success), bool(truncated), info

    def render(self) -> np.ndarray:
        return _np(self.ms_env.render())[0]

    def close(self) -> None:
        self.ms_env.close()

    def set_split(self, split: str | Split) -> None:
        """Use another split from the next reset on (same scene, no rebuild)."""
        self.split = get_split(split)

    @property
    def layout(self):
        """The current episode's :class:`~simbridge.training.envs.put_on_target.EpisodeLayout`."""
        return self.unwrapped_ms.layouts[0]

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    # --- action mapping (rows: envs) -------------------------------------------------------
    def _controller_action(self, a: np.ndarray) -> np.ndarray:
        """The ``pd_ee_pose`` action for contract action ``a`` (7,) of a one-env scene."""
        return self._controller_actions(np.asarray(a)[None])[0]

    def _controller_actions(self, a: np.ndarray) -> np.ndarray:
        """(num_envs, 7) contract actions -> (num_envs, 7) ``pd_ee_pose`` actions; updates the targets.

        Row by row with the scalar geometry of the contract: every env's target and anti-windup
        are its own, and one env computes bit for bit what the single-env wrapper always did.
        """
        tcp = self._last_tcp if self._last_tcp is not None else self._tcp_poses_base()
        out = np.empty((len(a), 7), np.float32)
        for i in range(len(a)):
            p, q, out[i] = target_step(self._target_p[i], self._target_q[i], tcp[i], a[i], self.max_target_lead_m)
            self._target_p[i], self._target_q[i] = p, q
        return out

    # --- observation ----------------------------------------------------------------------
    def _tcp_pose_base(self) -> np.ndarray:
        """(7,) TCP pose of env 0 in its robot base frame (see :meth:`_tcp_poses_base`)."""
        return self._tcp_poses_base()[0]

    def _tcp_poses_base(self) -> np.ndarray:
        """(num_envs, 7) TCP poses (xyz + wxyz) in each env's robot base frame, in numpy.

        Reads SAPIEN's entity poses directly on a CPU scene: ManiSkill's batched torch ``Pose``
        ops cost ~10 ms per call on this CPU, more than the wrapper may add per step.
        """
        agent = self.unwrapped_ms.agent
        if self._base is None:  # the base does not move within an episode
            self._base = _poses7(agent.robot.root)
        tcp = _poses7(agent.tcp)
        out = np.empty((len(tcp), 7))
        for i in range(len(tcp)):
            base_p, base_q = self._base[i, :3], self._base[i, 3:]
            q = quat_mul(base_q * np.array([1, -1, -1, -1]), tcp[i, 3:])
            out[i] = np.concatenate([quat_to_matrix(base_q).T @ (tcp[i, :3] - base_p), q / np.linalg.norm(q)])
        return out

    # Per-env episode bookkeeping; one env here, BatchedContractEnv keeps one per env.
    def _env_rng(self, i: int) -> np.random.Generator:
        return self._rng

    def _env_instruction(self, i: int) -> str:
        return self.instruction

    def _env_steps(self, i: int) -> int:
        return self._steps

    def _env_seed(self, i: int) -> int:
        return self._seed

    def _env_split(self, i: int) -> Split:
        return self.split

    def _observation(self, raw_obs: Any) -> Observation:
        return self._observations(raw_obs)[0]

    def _observations(self, raw_obs: Any) -> list[Observation]:
        """One contract Observation per env (row ``i`` of ManiSkill's batched tensors)."""
        agent = self.unwrapped_ms.agent
        objs = agent.robot._objs
        if len(objs) == 1 and hasattr(objs[0], "qpos"):
            qpos = objs[0].qpos[None]
        else:
            qpos = _np(agent.robot.get_qpos())
        self._last_tcp = self._tcp_poses_base()  # also what the next actions are applied to
        rgb = raw_obs["sensor_data"] if isinstance(raw_obs, dict) and "sensor_data" in raw_obs else None
        out = []
        for i in range(len(qpos)):
            images = {}
            if rgb is not None:
                for cam in self.spec.cameras:
                    # The robot's cameras fit frames to the contract with the same function; simulated
                    # cameras render at the contract size, so here it returns the image as is.
                    img = center_crop_resize(_np(rgb[cam.name]["rgb"][i]), cam.height, cam.width)
                    std = self._env_split(i).image_noise_std
                    if std > 0:
                        noise = self._env_rng(i).normal(0.0, std, img.shape)
                        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
                    images[cam.name] = img
            else:
                images = {k: v.copy() for k, v in self._black.items()}
            out.append(Observation(
                images=images,
                ee_pose=self._last_tcp[i].astype(np.float32),
                gripper_width=float(qpos[i][7] + qpos[i][8]),
                joint_positions=qpos[i][:7].astype(np.float32),
                instruction=self._env_instruction(i),
                timestamp=self._env_steps(i) * self.contract.action.period_s,
            ))  # fmt: skip
        return out

    def _info(self, raw_obs: Any, ms_info: dict, dense_reward: float = 0.0) -> dict:
        return self._infos(raw_obs, ms_info, np.array([dense_reward]))[0]

    def _infos(self, raw_obs: Any, ms_info: dict, dense_rewards: np.ndarray) -> list[dict]:
        """One info dict per env (see the class docstring for the keys)."""
        n = len(dense_rewards)
        success = _np(ms_info["success"]).reshape(n)
        grasped = _np(ms_info["is_grasped"]).reshape(n)
        moved = _np(ms_info["object_moved"]).reshape(n) if "object_moved" in ms_info else np.zeros(n, bool)
        state = _np(raw_obs).reshape(n, -1).astype(np.float32) if self.obs_mode == "state" else None
        infos = []
        for i in range(n):
            info = {
                "success": bool(success[i]),
                "is_grasped": bool(grasped[i]),
                "object_moved": bool(moved[i]),
                "dense_reward": dense_rewards[i].item(),  # ManiSkill's normalized dense reward (0..1)
                "instruction": self._env_instruction(i),
                "split": self._env_split(i).name,
                "category": self._env_split(i).category,
                "seed": self._env_seed(i),
                "elapsed_steps": self._env_steps(i),
            }
            if state is not None:
                info["state"] = state[i]
            infos.append(info)
        return infos
