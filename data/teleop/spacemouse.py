"""3Dconnexion SpaceMouse over hidapi (``pip install hidapi``): 6-D twist + two buttons.

HID reports (all 3Dconnexion models): report 1 = translation x, y, z as little-endian int16
(newer models put all six axes in report 1), report 2 = rotation rx, ry, rz, report 3 = the
button bitmask. Raw values span about +-350. HID axes: x right, y toward the operator, z down.
The default mapping assumes the operator stands behind the robot, facing along its x axis:
pushing the cap away moves the hand away (+x), left is +y, lifting is +z (``axis_signs`` in
the teleop mapping flips any of them). Left button closes the gripper, right button opens it
(HIL-SERL's convention); ``button_map`` remaps them (e.g. to ``success`` on a SpaceMouse Pro).

On Linux the device needs read access: a udev rule such as
``SUBSYSTEM=="hidraw", ATTRS{idVendor}=="256f", MODE="0666"`` (and 046d for older models).
"""

from __future__ import annotations

import struct
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

#: 3Dconnexion's USB vendor ids: Logitech-era devices (046d) and 3Dconnexion's own (256f).
VENDOR_IDS = (0x046D, 0x256F)
FULL_SCALE = 350.0
DEFAULT_BUTTON_MAP = {0: "gripper_close", 1: "gripper_open"}


def parse_report(data: bytes | list[int], axes: np.ndarray) -> int | None:
    """Update ``axes`` (raw x y z rx ry rz) in place from one HID report; return the button mask if any."""
    data = bytes(data)
    if not data:
        return None
    rid = data[0]
    if rid == 1 and len(data) >= 13:
        axes[:] = struct.unpack("<6h", data[1:13])
    elif rid == 1 and len(data) >= 7:
        axes[:3] = struct.unpack("<3h", data[1:7])
    elif rid == 2 and len(data) >= 7:
        axes[3:] = struct.unpack("<3h", data[1:7])
    elif rid == 3 and len(data) >= 2:
        return int.from_bytes(data[1:], "little")
    return None


def raw_to_twist(axes: np.ndarray) -> np.ndarray:
    """Raw HID axes -> base-frame twist in [-1, 1] (see the module docstring for the convention)."""
    x, y, z, rx, ry, rz = np.asarray(axes, np.float32) / FULL_SCALE
    return np.clip(np.array([-y, -x, -z, -ry, -rx, -rz], np.float32), -1, 1)


class SpaceMouseDevice(TeleopDevice):
    name = "spacemouse"

    def __init__(
        self,
        path: bytes | None = None,
        button_map: dict[int, str] | None = None,
        hid_module=None,
    ) -> None:
        super().__init__()
        self.path = path
        self.button_map = dict(DEFAULT_BUTTON_MAP if button_map is None else button_map)
        self._hid_module = hid_module  # tests pass a stand-in with hidapi's API
        self._dev = None
        self._axes = np.zeros(6, np.float32)
        self._buttons = 0
        self.product = ""

    def connect(self) -> SpaceMouseDevice:
        hid = self._hid_module
        if hid is None:
            try:
                import hid
            except ImportError as exc:
                raise DeviceError(f"spacemouse: hidapi is not installed ({exc}); pip install hidapi") from exc
        found = [d for d in hid.enumerate() if d.get("vendor_id") in VENDOR_IDS]
        found = [d for d in found if self.path is None or d.get("path") == self.path]
        if not found:
            raise DeviceError(
                "spacemouse: no 3Dconnexion device found (vendor 046d/256f); plug it in, check `lsusb`, and "
                "allow hidraw access with a udev rule (see simbridge.data.teleop.spacemouse)"
            )
        info = found[0]
        dev = hid.device()
        try:
            dev.open_path(info["path"])
        except OSError as exc:
            raise DeviceError(
                f"spacemouse: cannot open {info.get('product_string', 'device')} ({exc}); usually a permission "
                "problem: add the udev rule from simbridge.data.teleop.spacemouse and replug"
            ) from exc
        dev.set_nonblocking(1)
        self._dev, self.product = dev, str(info.get("product_string", ""))
        self.connected = True
        return self

    def disconnect(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            finally:
                self._dev = None
        self.connected = False

    def read(self) -> DeviceState:
        self._require_connected()
        before = self._buttons
        for _ in range(64):  # drain queued reports; the device sends them at ~60-125 Hz
            try:
                data = self._dev.read(64)
            except (OSError, ValueError) as exc:  # hidapi: OSError("read error") once unplugged
                self.disconnect()
                raise DeviceDisconnected(f"spacemouse: {exc}") from exc
            if not data:
                break
            mask = parse_report(data, self._axes)
            if mask is not None:
                self._buttons = mask
        pressed_bits = rising_edges(_bits(self._buttons), _bits(before))
        semantic = {self.button_map[b] for b in pressed_bits if b in self.button_map}
        gripper = None
        if "gripper_close" in semantic:
            gripper = GRIPPER_CLOSED
        elif "gripper_open" in semantic:
            gripper = GRIPPER_OPEN
        buttons = frozenset(semantic - {"gripper_close", "gripper_open"})
        return DeviceState(
            twist=raw_to_twist(self._axes), gripper=gripper, buttons=buttons, timestamp=time.monotonic()
        )


def _bits(mask: int) -> set[int]:
    return {i for i in range(mask.bit_length()) if mask >> i & 1}
