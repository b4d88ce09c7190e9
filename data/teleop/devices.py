"""Teleoperation devices: one interface, a registry, and a scripted device for tests.

Every device (keyboard, SpaceMouse, gamepad, scripted) is a :class:`TeleopDevice`::

    with make_device("spacemouse") as dev:      # connect() ... disconnect()
        state = dev.read()                       # non-blocking: the latest DeviceState
        state.twist      # (6,) in [-1, 1]: vx vy vz wx wy wz, robot base frame, full deflection = 1
        state.gripper    # +1 open / -1 close command, or None (unchanged)
        state.buttons    # semantic button *presses* since the last read (see BUTTONS)

Deadzones, speed scaling and the safety filter are applied afterwards, the same for every
device (:mod:`simbridge.data.teleop.mapping`). A device that goes away raises
:class:`DeviceDisconnected` from ``read()``; the collection loop then stops the robot.
Hardware libraries (hidapi, pygame, pynput) are imported in ``connect()`` only.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Semantic buttons a device can report; each device maps its physical buttons onto these.
BUTTONS = frozenset(
    {
        "intervene",  # toggle: the operator takes over from the policy / hands back
        "success",  # end the episode, label it successful
        "failure",  # end the episode, label it failed
        "discard",  # drop the episode being recorded (re-record)
        "quit",  # stop collecting
        "speed_up",
        "speed_down",
    }
)


class DeviceError(RuntimeError):
    """A teleop device could not be opened or used; the message says which and how to fix it."""


class DeviceDisconnected(DeviceError):
    """The device went away while in use (unplugged, out of range, closed terminal)."""


@dataclass
class DeviceState:
    twist: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    gripper: float | None = None
    buttons: frozenset[str] = frozenset()
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        self.twist = np.clip(np.asarray(self.twist, np.float32).reshape(6), -1.0, 1.0)
        unknown = set(self.buttons) - BUTTONS
        if unknown:
            raise DeviceError(f"unknown button(s) {sorted(unknown)}; devices report {sorted(BUTTONS)}")
        self.buttons = frozenset(self.buttons)


class TeleopDevice:
    """Base class: ``connect()``, ``read() -> DeviceState``, ``disconnect()``; a context manager."""

    name = "device"

    def __init__(self) -> None:
        self.connected = False

    def connect(self) -> TeleopDevice:
        self.connected = True
        return self

    def read(self) -> DeviceState:
        raise NotImplementedError

    def disconnect(self) -> None:
        self.connected = False

    def _require_connected(self) -> None:
        if not self.connected:
            raise DeviceDisconnected(
                f"{self.name}: not connected (call connect() or use it as a context manager)"
            )

    def __enter__(self) -> TeleopDevice:
        return self.connect() if not self.connected else self

    def __exit__(self, *exc) -> None:
        self.disconnect()


# --- registry ---------------------------------------------------------------------------------

#: name -> "module:Class" (imported on demand, so listing devices needs no hardware library).
DEVICES: dict[str, str | type[TeleopDevice]] = {
    "keyboard": "simbridge.data.teleop.keyboard:KeyboardDevice",
    "spacemouse": "simbridge.data.teleop.spacemouse:SpaceMouseDevice",
    "gamepad": "simbridge.data.teleop.gamepad:GamepadDevice",
    "scripted": "simbridge.data.teleop.devices:ScriptedDevice",
}


def register_device(name: str, cls: type[TeleopDevice]) -> type[TeleopDevice]:
    DEVICES[name] = cls
    return cls


def device_class(name: str) -> type[TeleopDevice]:
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose from {sorted(DEVICES)}")
    entry = DEVICES[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def make_device(name: str, **kwargs) -> TeleopDevice:
    """Instantiate a registered device (not yet connected)."""
    return device_class(name)(**kwargs)


def rising_edges(now: Iterable[str], before: Iterable[str]) -> frozenset[str]:
    """Buttons pressed now that were not pressed at the previous read (held buttons fire once)."""
    return frozenset(now) - frozenset(before)


# --- scripted device (tests, demos) -----------------------------------------------------------


class ScriptedDevice(TeleopDevice):
    """Replays a script of device states, with a real device's failure modes.

    ``script`` is a sequence of :class:`DeviceState` or of dicts with the same fields (so a
    config file can hold it; ``repeat: N`` repeats an entry), or a function ``read_index -> DeviceState``;
    after it ends the device reports idle. ``disconnect_after=N`` makes the N+1-th ``read()``
    raise :class:`DeviceDisconnected`, as an unplugged SpaceMouse does. ``connect_error``
    makes ``connect()`` fail like a missing device.
    """

    name = "scripted"

    def __init__(
        self,
        script: Sequence[DeviceState] | Callable[[int], DeviceState] = (),
        disconnect_after: int | None = None,
        connect_error: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if not callable(
            script
        ):  # states, or dicts from a YAML config: {twist: [...], gripper: -1, buttons: [...]}
            states: list[DeviceState] = []
            for s in script:
                if isinstance(s, DeviceState):
                    states.append(s)
                else:
                    states.extend(_state_from_dict(s) for _ in range(int(s.get("repeat", 1))))
            script = states
        self.script = script
        self.disconnect_after = disconnect_after
        self.connect_error = connect_error
        self.clock = clock
        self.reads = 0

    def connect(self) -> ScriptedDevice:
        if self.connect_error:
            raise DeviceError(f"scripted: {self.connect_error}")
        self.connected = True
        return self

    def read(self) -> DeviceState:
        self._require_connected()
        if self.disconnect_after is not None and self.reads >= self.disconnect_after:
            self.connected = False
            raise DeviceDisconnected(f"scripted device disconnected after {self.reads} reads")
        i = self.reads
        self.reads += 1
        if callable(self.script):
            state = self.script(i)
        elif i < len(self.script):
            state = self.script[i]
        else:
            state = DeviceState()
        state.timestamp = self.clock()
        return state


def _state_from_dict(d: dict) -> DeviceState:
    return DeviceState(
        twist=d.get("twist", np.zeros(6)), gripper=d.get("gripper"), buttons=frozenset(d.get("buttons", ()))
    )
