"""Teleoperation: devices behind one interface, the device -> action mapping, the collection loop.

from simbridge.data.teleop import make_device, Collector
with make_device("spacemouse") as dev, EpisodeWriter(path, env.contract.observation) as w:
    Collector(env, dev, w, mode="intervene", policy=policy).run(episodes=10)
"""

from simbridge.data.teleop.collect import Collector, EpisodeResult
from simbridge.data.teleop.devices import (
    BUTTONS,
    DEVICES,
    DeviceDisconnected,
    DeviceError,
    DeviceState,
    ScriptedDevice,
    TeleopDevice,
    device_class,
    make_device,
    register_device,
)
from simbridge.data.teleop.mapping import ActionMapper, TeleopMapping, apply_deadzone

__all__ = [
    "BUTTONS",
    "DEVICES",
    "ActionMapper",
    "Collector",
    "DeviceDisconnected",
    "DeviceError",
    "DeviceState",
    "EpisodeResult",
    "ScriptedDevice",
    "TeleopDevice",
    "TeleopMapping",
    "apply_deadzone",
    "device_class",
    "make_device",
    "register_device",
]
