"""Teleop collection: scripted device in both modes, take-over / hand-back flags, fail-closed stops,
deadzones and speed scaling, and the real devices' drivers (terminal over a pty; SpaceMouse and
gamepad through stand-ins with hidapi's / pygame's APIs, since no USB device exists here)."""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest

from simbridge.data.spec import (
    ActionSpec,
    CameraSpec,
    Observation,
    ObservationSpec,
    PolicyContract,
)
from simbridge.data.store import EpisodeStore, EpisodeWriter
from simbridge.data.teleop import (
    ActionMapper,
    Collector,
    DeviceDisconnected,
    DeviceError,
    DeviceState,
    ScriptedDevice,
    TeleopMapping,
    apply_deadzone,
    make_device,
)
from simbridge.data.teleop.gamepad import GamepadDevice
from simbridge.data.teleop.keyboard import KeyboardDevice
from simbridge.data.teleop.spacemouse import SpaceMouseDevice

CAMS = (CameraSpec("scene", 16, 16),)
HOME_Q = np.array([0, -0.785, 0, -2.356, 0, 1.571, 0.785])  # Franka's ready pose (inside the joint limits)


class PointEnv:
    """A tiny gym-like contract environment: the hand moves by the executed deltas; success near the goal."""

    def __init__(self, goal=(0.5, 0.0, 0.2), max_steps=40):
        self.contract = PolicyContract(observation=ObservationSpec(cameras=CAMS), action=ActionSpec())
        self.instruction = "touch the goal"
        self.goal, self.max_steps = np.array(goal), max_steps
        self.executed: list[np.ndarray] = []
        self.stopped = 0

    def _obs(self) -> Observation:
        img = np.full((16, 16, 3), len(self.executed) % 256, np.uint8)
        pose = np.array([*self.pos, 0.0, 1.0, 0.0, 0.0], np.float32)  # gripper pointing down
        return Observation({"scene": img}, pose, 0.04 * (1 + self.gripper), HOME_Q, self.instruction,
                           0.1 * len(self.executed))  # fmt: skip

    def reset(self, seed=None):
        self.pos, self.gripper, self.executed = np.array([0.4, 0.0, 0.3]), 1.0, []
        return self._obs(), {"instruction": self.instruction, "seed": seed}

    def step(self, action):
        a = np.asarray(action, np.float64)
        self.executed.append(a.copy())
        self.pos = self.pos + a[:3]
        self.gripper = a[6]
        success = bool(np.linalg.norm(self.pos - self.goal) < 0.01)
        return (
            self._obs(),
            float(success),
            success,
            len(self.executed) >= self.max_steps,
            {"success": success},
        )

    def stop(self):
        self.stopped += 1

    def close(self):
        pass


class ConstantPolicy:
    """Proposes +y moves in chunks of two; counts its calls."""

    def __init__(self):
        self.contract = PolicyContract(observation=ObservationSpec(cameras=CAMS), chunk_size=2)
        self.calls = self.resets = 0

    def reset(self):
        self.resets += 1

    def predict(self, obs):
        self.calls += 1
        return np.tile(np.array([0, 0.01, 0, 0, 0, 0, 1.0], np.float32), (2, 1))


def push(x=0.0, y=0.0, z=0.0, gripper=None, buttons=()):
    return DeviceState(twist=[x, y, z, 0, 0, 0], gripper=gripper, buttons=frozenset(buttons))


IDLE = DeviceState()


@pytest.fixture
def writer(tmp_path):
    with EpisodeWriter(tmp_path / "teleop.zarr", CAMS, chunk_steps=4, software_version="test") as w:
        yield w


def test_pure_teleop_demo_records_operator_actions(writer):
    env = PointEnv()
    script = [push(x=1.0)] * 3 + [push(x=1.0, gripper=-1.0)] * 2 + [push(buttons={"success"})]
    device = ScriptedDevice(script).connect()
    mapping = TeleopMapping(deadzone=0.1, translation_step_m=0.02)
    collector = Collector(env, device, writer, mapper=ActionMapper(mapping), operator="ana", task="Point")
    res = collector.run_episode(seed=7)
    assert res.index == 0 and res.steps == 5 and res.success is True and not res.aborted
    ep = EpisodeStore(writer.path).episode(0)
    assert ep["intervention"].all() and np.isnan(ep["policy_action"]).all()
    np.testing.assert_allclose(ep["action"][:, 0], 0.02)  # full deflection = translation_step_m
    assert ep["action"][:, 6].tolist() == [1, 1, 1, -1, -1]
    np.testing.assert_allclose(np.array(env.executed), ep["action"], atol=1e-7)
    np.testing.assert_allclose(ep["ee_pose"][:, 0], 0.4 + 0.02 * np.arange(5), atol=1e-6)
    meta = EpisodeStore(writer.path).meta(0)
    assert meta.success_labeled_by == "operator:ana" and meta.policy_id == "teleop" and meta.seed == 7
    assert meta.extra["mode"] == "teleop" and meta.extra["intervention_steps"] == 5


def test_intervention_by_motion_takes_over_and_hands_back(writer):
    env, policy = PointEnv(max_steps=10), ConstantPolicy()
    script = [IDLE] * 3 + [push(x=0.5)] * 3 + [IDLE] * 4
    collector = Collector(env, ScriptedDevice(script).connect(), writer, mode="intervene", policy=policy,
                          takeover="motion", handback_idle_steps=2, policy_id="bundle:abc")  # fmt: skip
    res = collector.run_episode(seed=1)
    flags = [False] * 3 + [True] * 4 + [False] * 3  # 2 idle reads of grace before the hand-back
    ep = EpisodeStore(writer.path).episode(0)
    assert ep["intervention"].tolist() == flags
    assert res.interventions == 1 and res.intervention_steps == 4 and res.steps == 10
    assert res.events == ["take-over at step 3", "hand-back at step 7"]
    # Every step records what the policy proposed; the executed action is the operator's when flagged.
    np.testing.assert_allclose(ep["policy_action"][:, 1], 0.01)
    policy_steps, op_steps = ~ep["intervention"], ep["intervention"]
    np.testing.assert_allclose(ep["action"][policy_steps], ep["policy_action"][policy_steps], atol=1e-7)
    expected_x = 0.02 * (0.5 - 0.1) / 0.9
    np.testing.assert_allclose(ep["action"][op_steps][:3, 0], expected_x, atol=1e-6)
    assert np.all(ep["action"][op_steps][:, 1] == 0)
    # Chunks of 2 predicted at steps 0, 2, 4, 6 (the policy still proposes while the operator acts),
    # the chunk is dropped at the hand-back (step 7), so step 8 predicts again: 5 calls.
    assert policy.calls == 5 and policy.resets == 1
    meta = EpisodeStore(writer.path).meta(0)
    assert meta.num_interventions == 1 and meta.policy_id == "bundle:abc" and meta.success is False
    assert meta.success_labeled_by == "env"


def test_intervention_by_button_toggles(writer):
    env, policy = PointEnv(max_steps=8), ConstantPolicy()
    script = [
        IDLE,
        IDLE,
        push(buttons={"intervene"}),
        IDLE,
        push(x=1.0),
        push(buttons={"intervene"}),
        IDLE,
        IDLE,
    ]
    Collector(env, ScriptedDevice(script).connect(), writer, mode="intervene", policy=policy,
              takeover="button").run_episode()  # fmt: skip
    ep = EpisodeStore(writer.path).episode(0)
    assert ep["intervention"].tolist() == [False, False, True, True, True, False, False, False]
    assert ep["action"][2].tolist()[:6] == [0] * 6  # operator holds still: zero motion, not the policy's
    assert EpisodeStore(writer.path).meta(0).num_interventions == 1


def test_device_disconnect_stops_and_keeps_what_was_recorded(writer):
    env = PointEnv()
    device = ScriptedDevice([push(z=-1.0)] * 10, disconnect_after=4).connect()
    results = Collector(env, device, writer).run(episodes=3, progress=False)
    assert len(results) == 1  # collection stops: the device is gone
    res = results[0]
    assert res.steps == 4 and res.index == 0 and res.aborted.startswith("device disconnected at step 4")
    assert env.stopped == 1 and len(env.executed) == 4  # fail closed: stop(), no step after the loss
    store = EpisodeStore(writer.path)
    assert store.episode_length(0) == 4 and store.meta(0).extra["aborted"].startswith("device disconnected")
    assert store.meta(0).success is False  # the env said not yet


def test_safety_filter_clips_operator_and_rejects_bad_policy(writer):
    env = PointEnv()
    fast = TeleopMapping(deadzone=0.0, translation_step_m=0.05, speed_scale=2.5)
    device = ScriptedDevice([push(x=1.0, y=1.0, z=1.0)] * 2 + [push(buttons={"failure"})]).connect()
    Collector(env, device, writer, mapper=ActionMapper(fast)).run_episode()
    ep = EpisodeStore(writer.path).episode(0)
    step = ep["action"][0, :3]  # the operator asked for 0.087 m (0.05 on each axis)
    assert 0.01 < np.linalg.norm(step) <= 0.05 + 1e-6  # the safety filter's per-step limit
    np.testing.assert_allclose(
        step / np.linalg.norm(step), np.ones(3) / np.sqrt(3), atol=1e-5
    )  # same direction

    class NaNPolicy(ConstantPolicy):
        def predict(self, obs):
            out = super().predict(obs)
            if self.calls > 1:
                out[:] = np.nan
            return out

    class BrokenPolicy(ConstantPolicy):
        def predict(self, obs):
            if self.calls == 1:
                raise RuntimeError("onnxruntime: invalid input")
            return super().predict(obs)

    res = Collector(PointEnv(), ScriptedDevice([IDLE] * 5).connect(), writer, mode="intervene",
                    policy=BrokenPolicy()).run_episode()  # fmt: skip
    assert res.steps == 2 and res.aborted.startswith("policy error at step 2: RuntimeError")
    assert EpisodeStore(writer.path).episode_length(1) == 2

    env2 = PointEnv()
    res = Collector(
        env2, ScriptedDevice([IDLE] * 10).connect(), writer, mode="intervene", policy=NaNPolicy()
    ).run_episode()
    assert res.steps == 2 and "safety filter rejected the policy action at step 2" in res.aborted
    assert env2.stopped == 1 and len(env2.executed) == 2
    assert EpisodeStore(writer.path).episode_length(2) == 2


def test_discard_drops_the_episode_and_collection_goes_on(writer):
    env = PointEnv()
    device = ScriptedDevice(
        [push(x=1)] * 3 + [push(buttons={"discard"})] + [push(y=1)] * 2 + [push(buttons={"success"})]
    )
    collector = Collector(env, device.connect(), writer)
    first, second = collector.run_episode(), collector.run_episode()
    assert first.discarded and first.index is None
    assert second.index == 0 and second.steps == 2
    ep = EpisodeStore(writer.path).episode(0)
    assert (
        ep["action"][:, 1].tolist() == pytest.approx([0.02 * 1.0] * 2) and len(EpisodeStore(writer.path)) == 1
    )


def test_deadzone_and_speed_scaling():
    np.testing.assert_allclose(apply_deadzone(np.array([0.05, -0.05, 0.55, -1.0, 1.0, 0.1]), 0.1),
                               [0, 0, 0.5, -1, 1, 0], atol=1e-6)  # fmt: skip
    mapper = ActionMapper(TeleopMapping(deadzone=0.0, translation_step_m=0.01, rotation_step_rad=0.05))
    assert mapper(push(x=1.0))[0] == pytest.approx(0.01)
    mapper(push(buttons={"speed_up"}))
    assert mapper(push(x=1.0))[0] == pytest.approx(0.015)
    for _ in range(10):
        mapper(push(buttons={"speed_down"}))
    assert mapper(push(x=1.0))[0] == pytest.approx(0.001)  # min_speed_scale 0.1
    rot = mapper(DeviceState(twist=[0, 0, 0, 0, 0, -1.0]))
    assert rot[5] == pytest.approx(-0.005) and rot[6] == 1.0  # gripper latched open
    assert not mapper.is_active(push(x=0.05)) or mapper.mapping.deadzone == 0
    with pytest.raises(ValueError, match="deadzone"):
        TeleopMapping(deadzone=1.5)


def test_registry_and_scripted_device_failure_modes():
    assert isinstance(make_device("keyboard"), KeyboardDevice)
    with pytest.raises(DeviceError, match=r"unknown device 'joystick'.*spacemouse"):
        make_device("joystick")
    with pytest.raises(DeviceError, match="no such device"):
        make_device("scripted", connect_error="no such device").connect()
    dev = make_device("scripted", script=[push(x=1)], disconnect_after=1)
    with pytest.raises(DeviceDisconnected, match="not connected"):
        dev.read()
    with dev:
        assert dev.read().twist[0] == 1
        with pytest.raises(DeviceDisconnected):
            dev.read()
    with pytest.raises(DeviceError, match="unknown button"):
        DeviceState(buttons=frozenset({"self_destruct"}))


def test_terminal_keyboard_over_a_pty():
    master, slave = os.openpty()
    dev = KeyboardDevice(backend="terminal", fd=slave, hold_s=0.2).connect()
    try:
        os.write(master, b"wa ")
        time.sleep(0.05)
        s = dev.read()
        assert s.twist.tolist() == [1, 1, 0, 0, 0, 0] and s.gripper == -1.0
        os.write(master, b"ty")
        time.sleep(0.05)
        assert dev.read().buttons == {"intervene", "success"}
        time.sleep(0.25)
        assert not dev.read().twist.any()  # no auto-repeat: the key was released
        os.close(master)
        with pytest.raises(DeviceDisconnected):
            for _ in range(3):
                dev.read()
    finally:
        dev.disconnect()
        os.close(slave)
    with pytest.raises(DeviceError, match="not a terminal"):
        r, w = os.pipe()
        try:
            KeyboardDevice(fd=r).connect()
        finally:
            os.close(r), os.close(w)


class FakeHid:
    """Stand-in for the `hid` module (cython-hidapi): enumerate(), device() with open_path/read/close."""

    def __init__(self, reports, present=True, unplug_after=None, permission=False):
        self.reports, self.present, self.unplug_after, self.permission = (
            list(reports),
            present,
            unplug_after,
            permission,
        )
        self.reads = 0

    def enumerate(self, vendor_id=0, product_id=0):
        if not self.present:
            return [
                {"vendor_id": 0x1234, "product_id": 1, "path": b"/dev/hidraw0", "product_string": "Keyboard"}
            ]
        return [
            {
                "vendor_id": 0x256F,
                "product_id": 0xC635,
                "path": b"/dev/hidraw3",
                "product_string": "SpaceMouse Compact",
            }
        ]

    def device(self):
        fake = self

        class Device:
            def open_path(self, path):
                if fake.permission:
                    raise OSError("open failed")

            def set_nonblocking(self, flag):
                self.nonblocking = flag

            def read(self, size):
                fake.reads += 1
                if fake.unplug_after is not None and fake.reads > fake.unplug_after:
                    raise OSError("read error")
                return list(fake.reports.pop(0)) if fake.reports else []

            def close(self):
                pass

        return Device()


def test_spacemouse_reports_map_to_twist_buttons_and_unplug():
    reports = [
        b"\x01" + struct.pack("<3h", 0, -350, -175),  # translation: away from operator (y-), up (z-)
        b"\x02" + struct.pack("<3h", 0, 0, 350),  # rotation about z
        b"\x03\x01\x00",  # left button down
    ]
    hid = FakeHid(reports, unplug_after=9)  # counts every hid read, the empty ones too
    dev = SpaceMouseDevice(hid_module=hid).connect()
    s = dev.read()
    np.testing.assert_allclose(s.twist, [1.0, 0, 0.5, 0, 0, -1.0])
    assert s.gripper == -1.0  # left button: close
    hid.reports.append(b"\x03\x00\x00")
    assert dev.read().gripper is None  # release: no new command
    hid.reports.append(b"\x01" + struct.pack("<6h", 350, 0, 0, 0, 0, 0))  # six-axis report (newer models)
    assert dev.read().twist[1] == -1.0
    with pytest.raises(DeviceDisconnected, match="read error"):
        for _ in range(3):
            dev.read()
    with pytest.raises(DeviceError, match="no 3Dconnexion device"):
        SpaceMouseDevice(hid_module=FakeHid([], present=False)).connect()
    with pytest.raises(DeviceError, match="udev"):
        SpaceMouseDevice(hid_module=FakeHid([], permission=True)).connect()


class FakePygame:
    """Stand-in for pygame's joystick/event API with one Xbox-style pad."""

    JOYDEVICEREMOVED = 1542

    def __init__(self, count=1):
        fake = self
        self.axes, self.buttons, self.hat, self.queue = [0.0] * 6, [0] * 8, (0, 0), []

        class Event:
            def __init__(self, type, **kw):
                self.type, self.__dict__ = type, {**kw, "type": type}

        class Joystick:
            def __init__(self, index):
                self.index = index

            def init(self):
                pass

            def quit(self):
                pass

            def get_instance_id(self):
                return 7

            def get_axis(self, i):
                return fake.axes[i]

            def get_numbuttons(self):
                return len(fake.buttons)

            def get_button(self, i):
                return fake.buttons[i]

            def get_numhats(self):
                return 1

            def get_hat(self, i):
                return fake.hat

        class JoystickModule:
            @staticmethod
            def init():
                pass

            @staticmethod
            def get_count():
                return count

        class EventModule:
            @staticmethod
            def get():
                out, fake.queue = fake.queue, []
                return out

        self.Event, self.joystick, self.event = Event, JoystickModule, EventModule
        JoystickModule.Joystick = Joystick

    def init(self):
        pass


def test_gamepad_sticks_buttons_and_unplug():
    pg = FakePygame()
    dev = GamepadDevice(pygame_module=pg).connect()
    pg.axes[1], pg.axes[3], pg.buttons[0], pg.buttons[1] = -1.0, 0.5, 1, 1  # stick forward, A, B
    s = dev.read()
    np.testing.assert_allclose(s.twist, [1.0, 0, 0, 0, 0, -0.5])
    assert s.gripper == -1.0 and s.buttons == {"intervene"}
    assert dev.read().buttons == frozenset() and dev.read().gripper is None  # held buttons fire once
    pg.queue.append(pg.Event(pg.JOYDEVICEREMOVED, instance_id=7))
    with pytest.raises(DeviceDisconnected, match="unplugged"):
        dev.read()
    with pytest.raises(DeviceError, match="no gamepad"):
        GamepadDevice(pygame_module=FakePygame(count=0)).connect()


class FakePynputKey:
    """pynput's KeyCode (``.char``) / Key (``.name``) as the listener passes them to callbacks."""

    def __init__(self, char=None, name=None):
        self.char, self.name = char, name


class FakeListener:
    running = True

    def stop(self):
        self.running = False


def test_pynput_keyboard_sees_presses_and_releases():
    dev = KeyboardDevice(backend="pynput")
    try:
        import pynput.keyboard  # noqa: F401  (needs a display; without one connect() must say so)

        has_display = True
    except Exception:
        has_display = False
    if not has_display:
        with pytest.raises(DeviceError, match="backend='terminal'"):
            dev.connect()
    # Drive the listener callbacks the way pynput's thread does.
    dev._listener, dev.connected = FakeListener(), True
    dev._on_press(FakePynputKey(char="W"))
    dev._on_press(FakePynputKey(char="w"))  # key repeat: one press event only
    dev._on_press(FakePynputKey(name="space"))
    s = dev.read()
    assert s.twist[0] == 1 and s.gripper == -1.0
    dev._on_release(FakePynputKey(char="w"))
    dev._on_press(FakePynputKey(name="esc"))
    s = dev.read()
    assert not s.twist.any() and s.buttons == {"quit"}
    dev._listener.running = False
    with pytest.raises(DeviceDisconnected, match="listener stopped"):
        dev.read()


def test_collect_cli_rejects_bad_configuration_before_starting(tmp_path, capsys):
    from simbridge.data.cli import main

    out = str(tmp_path / "x.zarr")
    assert main(["collect", "--device", "joystick", "--out", out]) == 2
    assert "unknown device 'joystick'" in capsys.readouterr().err
    assert main(["collect", "--device", "scripted", "--mode", "intervene", "--out", out]) == 2
    assert "needs --policy" in capsys.readouterr().err
    assert main(["collect", "--device", "scripted", "--out", out, "--set", "mapping.deadzone=2"]) == 2
    assert "deadzone" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_environment_fault_stops_and_keeps_the_executed_steps(writer):
    class FaultyEnv(PointEnv):
        def step(self, action):
            if len(self.executed) == 3:
                raise RuntimeError("communication_constraints_violation")  # what franky raises on a reflex
            return super().step(action)

    env = FaultyEnv()
    results = Collector(env, ScriptedDevice([push(x=1.0)] * 10).connect(), writer).run(
        episodes=2, progress=False
    )
    assert len(results) == 1 and results[0].steps == 3
    assert results[0].aborted.startswith("environment error at step 3: RuntimeError: communication")
    assert env.stopped == 1
    assert EpisodeStore(writer.path).episode_length(0) == 3  # only the executed steps
