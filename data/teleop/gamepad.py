"""Gamepad teleop over pygame / SDL2 (``pip install pygame``), Xbox-style layout.

    left stick    x / y  (push up = away from the base, left = +y)
    right stick   z (up/down) and yaw (left/right)
    d-pad         roll (left/right) and pitch (up/down)
    A             toggle the gripper          B      take over / hand back
    Y             success                     X      failure
    Back          discard                     Start  quit
    LB / RB       slower / faster

Unplugging the pad (SDL's JOYDEVICEREMOVED) raises DeviceDisconnected from ``read()``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from simbridge.data.spec import GRIPPER_CLOSED, GRIPPER_OPEN
from simbridge.data.teleop.devices import (
    DeviceDisconnected,
    DeviceError,
    DeviceState,
    TeleopDevice,
    rising_edges,
)

#: SDL2 GameController-style indices for an Xbox pad under pygame's joystick API.
AXES = {"lx": 0, "ly": 1, "rx": 3, "ry": 4}
BUTTON_MAP = {
    0: "gripper",
    1: "intervene",
    2: "failure",
    3: "success",
    4: "speed_down",
    5: "speed_up",
    6: "discard",
    7: "quit",
}


class GamepadDevice(TeleopDevice):
    name = "gamepad"

    def __init__(self, index: int = 0, button_map: dict[int, str] | None = None, pygame_module=None) -> None:
        super().__init__()
        self.index = index
        self.button_map = dict(BUTTON_MAP if button_map is None else button_map)
        self._pygame = pygame_module  # tests pass a stand-in with pygame's joystick API
        self._js = None
        self._instance_id = None
        self._held: set[int] = set()
        self._gripper = GRIPPER_OPEN

    def connect(self) -> GamepadDevice:
        pg = self._pygame
        if pg is None:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window needed
            try:
                import pygame as pg
            except ImportError as exc:
                raise DeviceError(f"gamepad: pygame is not installed ({exc}); pip install pygame") from exc
            self._pygame = pg
        pg.init()
        pg.joystick.init()
        if pg.joystick.get_count() <= self.index:
            raise DeviceError(
                f"gamepad: no gamepad #{self.index} found ({pg.joystick.get_count()} connected); plug one in"
            )
        self._js = pg.joystick.Joystick(self.index)
        self._js.init()
        self._instance_id = self._js.get_instance_id()
        self.connected = True
        return self

    def disconnect(self) -> None:
        if self._js is not None:
            self._js.quit()
            self._js = None
        self.connected = False

    def read(self) -> DeviceState:
        self._require_connected()
        pg = self._pygame
        for event in pg.event.get():
            if event.type == pg.JOYDEVICEREMOVED and getattr(event, "instance_id", None) == self._instance_id:
                self._js = None
                self.connected = False
                raise DeviceDisconnected(f"gamepad #{self.index} was unplugged")
        js = self._js
        lx, ly = js.get_axis(AXES["lx"]), js.get_axis(AXES["ly"])
        rx, ry = js.get_axis(AXES["rx"]), js.get_axis(AXES["ry"])
        hat_x, hat_y = js.get_hat(0) if js.get_numhats() else (0, 0)
        # SDL: stick y is +1 when pulled toward the operator; x is +1 to the right.
        twist = np.array([-ly, -lx, -ry, hat_x, hat_y, -rx], np.float32)
        held = {i for i in range(js.get_numbuttons()) if js.get_button(i)}
        pressed = rising_edges(held, self._held)
        self._held = held
        semantic = {self.button_map[i] for i in pressed if i in self.button_map}
        gripper = None
        if "gripper" in semantic:
            self._gripper = GRIPPER_CLOSED if self._gripper == GRIPPER_OPEN else GRIPPER_OPEN
            gripper = self._gripper
        return DeviceState(
            twist=twist,
            gripper=gripper,
            buttons=frozenset(semantic - {"gripper"}),
            timestamp=time.monotonic(),
        )
