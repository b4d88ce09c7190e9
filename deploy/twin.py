"""Simulated twin: franky-sim (MuJoCo) embedded in-process with a scene mirroring ``PutOnTarget-v1``.

When there is no robot, :class:`TwinSim` stands in for one. It runs the franky-sim server on a
loopback address, so :class:`~simbridge.deploy.franky_robot.FrankyRobot` (and the ROS 2 franka node) talk
to it through franky exactly as to a real Franka::

    with TwinSim(seed=0) as twin:
        with FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True)) as robot:
            layout = twin.reset(seed=3)              # new object/receptacle layout, colours, light
            frame = twin.render("scene")             # uint8 HxWx3 RGB, rendered headless (EGL)
            robot.send_action(action); twin.success()

The scene is the ManiSkill task's: both are built from the one scene description,
:mod:`simbridge.data.scene` (table, tablecloth, shapes and sizes, colours, lights, camera poses and
fields of view). :mod:`simbridge.deploy.twin_mjcf` builds it in MuJoCo, in the robot **base**
frame (table top z = 0). Scene conditions (colours, positions, light, tablecloth) come from
:class:`~simbridge.deploy.twin_scene.TwinScene` and can change between episodes without rebuilding
the model, which lets an evaluation protocol's conditions be applied to the twin.

Threading: franky-sim steps MuJoCo at 1 kHz in its own thread. The twin never touches the live
``MjData`` from another thread: edits (object poses, colours) are queued and applied by a
post-step callback inside the simulation thread, and rendering works on a copy of the state
taken there (``snapshot``), outside the 1 kHz loop.

The GIL: that 1 kHz loop is Python, so it shares the interpreter lock with every other thread of
the process (ROS executors, renderers, the policy). With Python's default 5 ms switch interval a
busy process makes each of the loop's many lock re-acquisitions wait up to a full interval, and
ticks stall for hundreds of ms; libfranka drops the connection after 1 s without a state
("UDP receive: Timeout"). While a twin runs, the process switch interval is lowered to
:data:`TWIN_SWITCH_INTERVAL_S` (restored when the last twin closes).

Several twins can run at once (other tests, other users): each binds the first free loopback
address of ``hostname_candidates`` (ports 1337/1338 on that address) and frees it on close.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from typing import Any

import numpy as np

from simbridge.data.scene import COLOURS, IMAGE_SIZE, OBJECT_SHAPES, RECEPTACLE_SHAPES, receptacle_top
from simbridge.deploy.twin_mjcf import ROBOT_PREFIX, build_scene, object_park_xyz, receptacle_park_xyz
from simbridge.deploy.twin_scene import TASK_TO_BASE_X, TwinLayout, TwinScene, sample_twin_layout

__all__ = [
    "COLOURS",
    "DEFAULT_SIM_SPEED",
    "OBJECT_SHAPES",
    "RECEPTACLE_SHAPES",
    "TASK_TO_BASE_X",
    "TWIN_SWITCH_INTERVAL_S",
    "TwinLayout",
    "TwinScene",
    "TwinSim",
]

log = logging.getLogger(__name__)

#: Simulated seconds per wall second. One 1 kHz tick of franky-sim costs ~1.3 ms of Python on a
#: small machine: at full speed the loop takes a whole core and the GIL, and the ROS nodes, renderer
#: and policy sharing the process fall seconds behind (stale commands). At half speed it leaves room.
DEFAULT_SIM_SPEED = 0.5
#: GIL switch interval while a twin runs (Python's default is 5 ms; see the module docstring).
TWIN_SWITCH_INTERVAL_S = 0.0005
_switch = {"twins": 0, "saved": 0.0}  # running twins, and the interval to restore after the last
_switch_lock = threading.Lock()


def _hold_short_switch_interval() -> None:
    with _switch_lock:
        if _switch["twins"] == 0:
            _switch["saved"] = sys.getswitchinterval()
            sys.setswitchinterval(min(TWIN_SWITCH_INTERVAL_S, _switch["saved"]))
        _switch["twins"] += 1


def _release_short_switch_interval() -> None:
    with _switch_lock:
        _switch["twins"] -= 1
        if _switch["twins"] == 0:
            sys.setswitchinterval(_switch["saved"])


class TwinSim:
    """franky-sim + MuJoCo scene of the tabletop task, served on a loopback address.

    ``hostname_candidates``: addresses to try for the robot server (default 127.0.0.1 then
    127.0.0.2 ... 127.0.0.63, so several twins can coexist). ``camera_size`` is (height, width).
    ``sim_speed``: simulated seconds per wall second (see :data:`DEFAULT_SIM_SPEED`; 1.0 on a
    machine with cores to spare).
    """

    def __init__(
        self,
        scene: TwinScene | None = None,
        seed: int | None = 0,
        camera_size: tuple[int, int] = IMAGE_SIZE,
        hostname_candidates: list[str] | None = None,
        sim_speed: float = DEFAULT_SIM_SPEED,
        bind_timeout_s: float = 30.0,
    ) -> None:
        self.scene = scene or TwinScene()
        self.seed = seed
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        self.hostname_candidates = hostname_candidates or [f"127.0.0.{i}" for i in range(1, 64)]
        if not 0 < sim_speed <= 1:
            raise ValueError(f"sim_speed: simulated seconds per wall second in (0, 1], got {sim_speed}")
        self.sim_speed = float(sim_speed)
        self.bind_timeout_s = bind_timeout_s
        self.layout: TwinLayout | None = None
        self._sim: Any = None
        self._server: Any = None
        self._robot: Any = None
        self._edits: list[Any] = []
        self._edit_lock = threading.Lock()
        self._snap_request = threading.Event()
        self._snap_ready = threading.Event()
        self._snap_qpos: np.ndarray | None = None
        self._snap_time = 0.0
        self._snap_held: frozenset[int] = frozenset()  # body ids both fingers touch, at the snapshot
        self._holds_switch_interval = False
        self._render_data: Any = None
        self._renderers: dict[tuple[int, int, int], Any] = {}
        self._render_lock = threading.Lock()
        self._ids: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        """The loopback address franky connects to (``FrankyRobotConfig(host=twin.hostname, sim=True)``)."""
        if self._robot is None:
            raise RuntimeError("the twin is not started: use `with TwinSim() as twin:` or call start()")
        return self._robot.hostname

    def __enter__(self) -> TwinSim:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        deadline = time.monotonic() + self.bind_timeout_s
        while True:
            sim = MujocoSimulator()
            sim.init()
            self._robot = sim.add_robot(
                initial_q=(0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)
            )
            build_scene(sim)
            server = SimulationServer(sim, hostname_candidates=list(self.hostname_candidates))
            try:
                server.init()  # binds 1337/1338 on the first free candidate address, then starts MuJoCo
                break
            except OSError as exc:  # every candidate is taken (other twins): wait for one to free up
                self._cleanup_partial(server, sim)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no free loopback address for franky-sim among {self.hostname_candidates[:3]}...: {exc}. "
                        f"Fix: stop other franky-sim servers (ports 1337/1338) or pass other hostname_candidates"
                    ) from exc
                time.sleep(0.5)
        self._sim, self._server = sim, server
        import mujoco

        model = sim.model
        self._render_data = mujoco.MjData(model)
        self._index(model)
        sim.register_post_step_callback(self._post_step)
        self.reset(seed=self.seed, wait=False)
        self._apply_edits(model, sim.data)
        mujoco.mj_forward(model, sim.data)
        _hold_short_switch_interval()
        self._holds_switch_interval = True
        server.run_async(1.0 / self.sim_speed)  # franky-sim's pacing: wall ms per simulated ms
        log.info("twin running on %s", self.hostname)

    @staticmethod
    def _cleanup_partial(server: Any, sim: Any) -> None:
        try:
            server.cleanup()
        finally:
            if sim.is_initialized and not sim.is_cleaned_up:
                sim.cleanup()

    def close(self) -> None:
        """Stop the simulation thread and free the ports (idempotent)."""
        for r in self._renderers.values():
            with contextlib.suppress(Exception):  # a renderer made by a finished thread may not close
                r.close()
        self._renderers.clear()
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._sim is not None and not self._sim.is_cleaned_up:
            self._sim.cleanup()
        self._sim = None
        if self._holds_switch_interval:
            self._holds_switch_interval = False
            _release_short_switch_interval()

    # --- scene ----------------------------------------------------------------------------

    def _index(self, model: Any) -> None:
        import mujoco

        for name in [*(f"obj_{n}" for n in OBJECT_SHAPES), *(f"rec_{n}" for n in RECEPTACLE_SHAPES)]:
            self._ids[f"body:{name}"] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            self._ids[f"geom:{name}"] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_joint")
            self._ids[f"qpos:{name}"] = int(model.jnt_qposadr[jid])
            self._ids[f"dof:{name}"] = int(model.jnt_dofadr[jid])
        self._ids["geom:tablecloth"] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "tablecloth")
        self._fingers = tuple(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"{ROBOT_PREFIX}{side}_finger")
                              for side in ("left", "right"))  # fmt: skip
        if min(self._fingers) < 0:
            raise RuntimeError(f"franky-sim's model has no {ROBOT_PREFIX}left_finger / right_finger bodies")
        self._light_diffuse0 = model.light_diffuse.copy()
        self._cameras = {
            mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i): i for i in range(model.ncam)
        }

    def sample_layout(self, seed: int | None) -> TwinLayout:
        """Draw an episode layout from :attr:`scene` (deterministic for a given seed)."""
        return sample_twin_layout(self.scene, seed)

    def reset(self, seed: int | None = None, scene: TwinScene | None = None, wait: bool = True,
              layout: TwinLayout | None = None) -> TwinLayout:  # fmt: skip
        """Lay out a new episode (objects, receptacle, colours, light); the arm is not moved.

        Home the arm through the driver first (``FrankyRobot.home()``), as on the real robot.
        ``scene`` replaces :attr:`scene` (an evaluation condition); ``layout`` is applied as given
        instead of sampled (e.g. a ManiSkill episode's, :func:`~simbridge.deploy.twin_scene.twin_layout_from_task`).
        Returns the applied layout.
        """
        if scene is not None:
            self.scene = scene
        if layout is None:
            layout = self.sample_layout(seed)
        self.layout = layout

        def edit(model: Any, data: Any) -> None:
            for name in OBJECT_SHAPES:
                body = f"obj_{name}"
                spec = layout.objects.get(body)
                half_h = OBJECT_SHAPES[name].half_height
                if spec is None:
                    self._set_free_pose(data, body, object_park_xyz(name))
                else:
                    self._set_free_pose(data, body, (*spec["xy"], half_h + 0.001), yaw=spec.get("yaw", 0.0))
                    model.geom_rgba[self._ids[f"geom:{body}"], :3] = COLOURS[spec["colour"]]
            for name in RECEPTACLE_SHAPES:
                body = f"rec_{name}"
                spec = layout.receptacles.get(body)
                if spec is None:
                    self._set_free_pose(data, body, receptacle_park_xyz(name))
                else:
                    self._set_free_pose(data, body, (*spec["xy"], 0.0005))
                    model.geom_rgba[self._ids[f"geom:{body}"], :3] = COLOURS[spec["colour"]]
            model.geom_rgba[self._ids["geom:tablecloth"], :3] = COLOURS[layout.tablecloth]
            model.light_diffuse[:] = np.clip(self._light_diffuse0 * layout.light, 0.0, 1.0)

        self._queue_edit(edit, wait=wait)
        return layout

    def _set_free_pose(self, data: Any, body: str, xyz: tuple[float, ...], yaw: float = 0.0) -> None:
        a, d = self._ids[f"qpos:{body}"], self._ids[f"dof:{body}"]
        data.qpos[a : a + 7] = [*xyz, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        data.qvel[d : d + 6] = 0.0

    def move_object(self, body: str, xy: tuple[float, float], lift: float = 0.0) -> None:
        """Teleport an object to ``xy``, its bottom ``lift`` m above the table (e.g. onto a receptacle).

        This is also the "object moved mid-episode" condition of the evaluation protocol.
        """
        half_h = OBJECT_SHAPES[body.removeprefix("obj_")].half_height
        self._queue_edit(lambda m, d: self._set_free_pose(d, body, (*xy, lift + half_h + 0.001)))

    def _queue_edit(self, fn: Any, wait: bool = True) -> None:
        with self._edit_lock:
            self._edits.append(fn)
        if wait and self._server is not None and self._server.running:
            self.snapshot()  # returns after the next step, i.e. after the edit was applied

    def _apply_edits(self, model: Any, data: Any) -> None:
        with self._edit_lock:
            edits, self._edits = self._edits, []
        for fn in edits:
            fn(model, data)

    def _post_step(self, sim: Any) -> None:
        """Runs in the simulation thread after every 1 ms step: apply edits, serve snapshots."""
        if self._edits:
            self._apply_edits(sim.model, sim.data)
        if self._snap_request.is_set():
            self._snap_qpos = sim.data.qpos.copy()
            self._snap_time = float(sim.data.time)
            self._snap_held = self._held_bodies(sim.model, sim.data)
            self._snap_request.clear()
            self._snap_ready.set()

    def _held_bodies(self, model: Any, data: Any) -> frozenset[int]:
        """Bodies in contact with both fingers: what the hand holds (SAPIEN's ``is_grasping`` in the task)."""
        touched: tuple[set[int], set[int]] = (set(), set())
        for contact in data.contact[: data.ncon]:
            a, b = int(model.geom_bodyid[contact.geom1]), int(model.geom_bodyid[contact.geom2])
            for side, finger in enumerate(self._fingers):
                if finger in (a, b):
                    touched[side].add(b if a == finger else a)
        return frozenset(touched[0] & touched[1])

    # --- observation ----------------------------------------------------------------------

    def snapshot(self, timeout_s: float = 2.0) -> np.ndarray:
        """A consistent copy of the simulator's ``qpos``, taken between two physics steps (what the
        fingers hold at that instant goes to :meth:`held`)."""
        if self._sim is None:
            raise RuntimeError("the twin is not started")
        if self._server is None or not self._server.running:
            self._snap_held = self._held_bodies(self._sim.model, self._sim.data)
            return self._sim.data.qpos.copy()
        self._snap_ready.clear()
        self._snap_request.set()
        if not self._snap_ready.wait(timeout_s):
            raise RuntimeError(f"the simulation thread did not answer within {timeout_s} s (is it running?)")
        return self._snap_qpos

    def object_poses(self) -> dict[str, np.ndarray]:
        """Pose (xyz + quaternion wxyz, base frame) of every object and receptacle."""
        qpos = self.snapshot()
        out = {}
        for name in [*(f"obj_{n}" for n in OBJECT_SHAPES), *(f"rec_{n}" for n in RECEPTACLE_SHAPES)]:
            a = self._ids[f"qpos:{name}"]
            out[name] = qpos[a : a + 7].copy()
        return out

    def held(self, body: str, fresh: bool = True) -> bool:
        """Whether both fingers touch ``body`` (e.g. ``"obj_cube"``): at a new snapshot, or with
        ``fresh=False`` at the last one (that of the last :meth:`object_poses`)."""
        if fresh:
            self.snapshot()
        return self._ids[f"body:{body}"] in self._snap_held

    def success(self, poses: dict[str, np.ndarray] | None = None) -> bool:
        """The target object rests on the target receptacle (centre inside its rim, bottom on its top)
        and the hand has let go of it (the task's success: placed, not held)."""
        if self.layout is None:
            return False
        if poses is None:
            poses = self.object_poses()
        if self.held(self.layout.target_object, fresh=False):
            return False
        obj, rec = self.layout.target_object, self.layout.target_receptacle
        p_obj, p_rec = poses[obj][:3], poses[rec][:3]
        rkind, rsize = RECEPTACLE_SHAPES[rec.removeprefix("rec_")]
        dx, dy = p_obj[0] - p_rec[0], p_obj[1] - p_rec[1]
        margin = 0.005
        if rkind == "box":  # receptacles are kept upright (yaw only matters little for the small trays)
            inside = abs(dx) <= rsize[0] - margin and abs(dy) <= rsize[1] - margin
        else:
            inside = math.hypot(dx, dy) <= rsize[0] - margin
        rec_top = p_rec[2] + receptacle_top(rec.removeprefix("rec_"))
        obj_bottom = p_obj[2] - OBJECT_SHAPES[obj.removeprefix("obj_")].half_height
        resting = -0.006 <= obj_bottom - rec_top <= 0.01
        return bool(inside and resting)

    def render(self, camera: str = "scene", size: tuple[int, int] | None = None) -> np.ndarray:
        """Render ``camera`` ("scene" or "wrist") headless; uint8 ``(H, W, 3)`` RGB."""
        import mujoco

        if camera not in self._cameras:
            raise ValueError(f"unknown camera {camera!r}; the twin has {sorted(self._cameras)}")
        h, w = size or self.camera_size
        model = self._sim.model
        with self._render_lock:  # one shared render state; callers may be several threads
            data = self._render_data
            data.qpos[:] = self.snapshot()
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            key = (threading.get_ident(), h, w)  # GL contexts belong to the thread that made them
            renderer = self._renderers.get(key)
            if renderer is None:
                renderer = self._renderers[key] = mujoco.Renderer(model, height=h, width=w)
            renderer.update_scene(data, camera=self._cameras[camera])
            return renderer.render().copy()

    # --- simulated time -------------------------------------------------------------------

    def clock(self) -> float:
        """Simulated seconds since start. Pass as ``FrankyRobot(..., clock=twin.clock)`` so the
        watchdog and stale-command checks run on simulated time (the simulator may run slower
        than real time on a loaded machine)."""
        if self._sim is None or self._sim.data is None:
            raise RuntimeError("the twin is not started")
        return float(self._sim.data.time)

    def wait(self, seconds: float, timeout_s: float = 60.0) -> None:
        """Block until ``seconds`` of simulated time have passed (pace a control loop on the twin)."""
        target = self.clock() + seconds
        deadline = time.monotonic() + timeout_s
        while self.clock() < target:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"simulated time did not advance {seconds} s within {timeout_s} s (is the twin running?)"
                )
            time.sleep(0.002)
