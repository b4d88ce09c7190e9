"""Keyboard teleop: a terminal (works over SSH, no display) or pynput (real key-up events, needs X).

Keys (both backends)::

    w / s   +x / -x  (away from / toward the robot base)    u / o   roll  + / -
    a / d   +y / -y  (left / right)                         i / k   pitch + / -
    r / f   +z / -z  (up / down)                            j / l   yaw   + / -
    space   toggle the gripper (open <-> close)             t       take over / hand back
    y       success (ends the episode)                      n       failure (ends the episode)
    x       discard the episode                             q / Esc quit
    + / -   faster / slower

A terminal reports key presses only (auto-repeat while held), so a motion key stays active
for ``hold_s`` after its last repeat; pynput sees real releases.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from typing import Literal

import numpy as np

from simbridge.data.spec import GRIPPER_CLOSED, GRIPPER_OPEN
from simbridge.data.teleop.devices import DeviceDisconnected, DeviceError, DeviceState, TeleopDevice

#: key -> (twist axis, sign)
MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
}  # fmt: skip
BUTTON_KEYS = {
    "t": "intervene", "y": "success", "n": "failure", "x": "discard", "q": "quit", "\x1b": "quit",
    "+": "speed_up", "=": "speed_up", "-": "speed_down",
}  # fmt: skip
GRIPPER_KEY = " "


def keys_to_twist(held: set[str]) -> np.ndarray:
    twist = np.zeros(6, np.float32)
    for key in held:
        if key in MOTION_KEYS:
            axis, sign = MOTION_KEYS[key]
            twist[axis] += sign
    return np.clip(twist, -1, 1)


class KeyboardDevice(TeleopDevice):
    """Keys -> full-deflection twists (speed comes from the mapping's step sizes and speed scale)."""

    name = "keyboard"

    def __init__(
        self, backend: Literal["terminal", "pynput"] = "terminal", fd: int | None = None, hold_s: float = 0.15
    ):
        super().__init__()
        if backend not in ("terminal", "pynput"):
            raise DeviceError(f"keyboard backend: 'terminal' or 'pynput', got {backend!r}")
        self.backend = backend
        self.fd = fd
        self.hold_s = hold_s
        self._gripper = GRIPPER_OPEN
        self._last_seen: dict[str, float] = {}  # terminal: key -> time of its last press
        self._held: set[str] = set()  # pynput: keys currently down
        self._presses: list[str] = []
        self._lock = threading.Lock()
        self._saved_tty = None
        self._listener = None

    def connect(self) -> KeyboardDevice:
        if self.backend == "terminal":
            import termios
            import tty

            if self.fd is None:
                self.fd = sys.stdin.fileno()
            if not os.isatty(self.fd):
                raise DeviceError(
                    "keyboard: stdin is not a terminal; run in a terminal or use --device spacemouse|gamepad"
                )
            self._saved_tty = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)  # keys arrive one by one, without Enter and without echo
        else:
            try:
                from pynput import keyboard
            except ImportError as exc:
                raise DeviceError(
                    f"keyboard: pynput is unavailable ({exc}); it needs `pip install pynput` and an X/Wayland "
                    "display: use backend='terminal' over SSH"
                ) from exc
            self._listener = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
            self._listener.start()
        self.connected = True
        return self

    def disconnect(self) -> None:
        if self._saved_tty is not None:
            import termios

            with contextlib.suppress(OSError, termios.error):  # the terminal may already be gone
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.connected = False

    # pynput callbacks (listener thread)
    @staticmethod
    def _key_name(key) -> str:
        char = getattr(key, "char", None)
        if char:
            return char.lower()
        return {"space": " ", "esc": "\x1b"}.get(getattr(key, "name", ""), "")

    def _on_press(self, key) -> None:
        name = self._key_name(key)
        with self._lock:
            if name not in self._held:
                self._presses.append(name)
            self._held.add(name)

    def _on_release(self, key) -> None:
        with self._lock:
            self._held.discard(self._key_name(key))

    def _read_terminal(self, now: float) -> list[str]:
        presses = []
        for _ in range(256):  # bounded drain of what has been typed
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                break
            try:
                data = os.read(self.fd, 64)
            except OSError as exc:
                raise DeviceDisconnected(f"keyboard: terminal read failed ({exc})") from exc
            if not data:
                raise DeviceDisconnected("keyboard: the terminal closed (end of input)")
            for ch in data.decode(errors="ignore").lower():
                presses.append(ch)
                self._last_seen[ch] = now
        return presses

    def read(self) -> DeviceState:
        self._require_connected()
        now = time.monotonic()
        if self.backend == "terminal":
            presses = self._read_terminal(now)
            held = {
                k for k, seen in self._last_seen.items() if k in MOTION_KEYS and now - seen <= self.hold_s
            }
        else:
            if self._listener is not None and not self._listener.running:
                self.connected = False
                raise DeviceDisconnected("keyboard: the pynput listener stopped (display connection lost?)")
            with self._lock:
                presses, self._presses = self._presses, []
                held = set(self._held)
        buttons = {BUTTON_KEYS[k] for k in presses if k in BUTTON_KEYS}
        gripper = None
        if presses.count(GRIPPER_KEY) % 2:
            self._gripper = GRIPPER_CLOSED if self._gripper == GRIPPER_OPEN else GRIPPER_OPEN
            gripper = self._gripper
        return DeviceState(
            twist=keys_to_twist(held), gripper=gripper, buttons=frozenset(buttons), timestamp=now
        )
