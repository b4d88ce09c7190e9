"""Fault drills at the franky boundary, for what franky-sim cannot produce (reflexes, lost links).

Not a mock of franky: :class:`FaultInjector` wraps the *real* franky ``Robot`` / ``Gripper``
objects (against the twin or a real arm) and raises the real franky exception types on demand.
Tests use it; it is also handy for drilling an operator's recovery procedure. The driver sees
only the franky API (plus :class:`~simbridge.deploy.franky_connection.ConnectionHolder` on disconnect).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from simbridge.deploy.franky_connection import import_franky


class FaultInjector:
    """Raises real franky exceptions at the franky boundary, for faults franky-sim cannot produce.

    Wrap the real objects through the driver's factories::

        faults = FaultInjector()
        robot = FrankyRobot(cfg, robot_factory=faults.robot_factory(), gripper_factory=faults.gripper_factory())
        faults.inject("move", franky.ControlException("motion aborted by reflex! ['cartesian_reflex']"))

    ``inject(method, exc, times=1)`` makes the next ``times`` calls of ``method`` (a method or
    property of ``franky.Robot`` / ``franky.Gripper``) raise ``exc``. Like a real Franka after a
    reflex, the wrapped robot then reports ``has_errors`` and refuses motions until
    ``recover_from_errors()``. Every call is recorded in ``calls``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[BaseException]] = {}
        self.errored = False
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def inject(self, method: str, exc: BaseException, times: int = 1, robot_error: bool = True) -> None:
        """``robot_error=False`` for failures that leave the robot fine (franky's planner refusing a
        motion before it starts): ``has_errors`` stays False."""
        with self._lock:
            self._pending.setdefault(method, []).extend([(exc, robot_error)] * times)

    def _check(self, name: str) -> None:
        with self._lock:
            self.calls.append(name)
            queue = self._pending.get(name)
            exc, robot_error = queue.pop(0) if queue else (None, False)
        if exc is not None:
            self.errored = self.errored or robot_error
            raise exc
        if self.errored and name == "move":
            franky = import_franky()
            raise franky.ControlException(
                "libfranka: Move command rejected: robot is in reflex mode; recover first"
            )

    def robot_factory(self, base: Callable[..., Any] | None = None) -> Callable[..., Any]:
        def make(host: str, **kwargs: Any) -> _FaultyProxy:
            return _FaultyProxy((base or import_franky().Robot)(host, **kwargs), self, is_robot=True)

        return make

    def gripper_factory(self, base: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
        def make(host: str) -> _FaultyProxy:
            return _FaultyProxy((base or import_franky().Gripper)(host), self, is_robot=False)

        return make


class _FaultyProxy:
    """Forwards to a real franky object; :class:`FaultInjector` decides which calls raise."""

    def __init__(self, real: Any, injector: FaultInjector, is_robot: bool) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_inj", injector)
        object.__setattr__(self, "_is_robot", is_robot)

    def __getattr__(self, name: str) -> Any:
        inj: FaultInjector = self._inj
        if self._is_robot and name == "has_errors":
            return inj.errored or self._real.has_errors
        if self._is_robot and name == "recover_from_errors":

            def recover() -> bool:
                inj._check(name)
                inj.errored = False
                return self._real.recover_from_errors()

            return recover
        if not callable(getattr(self._real, name)):  # a property such as `state`: fault on read
            inj._check(name)
            return getattr(self._real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            inj._check(name)
            return getattr(self._real, name)(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)

    def release_connection(self) -> None:
        """Drop the real franky object (closing its connection) even if exceptions still refer to us
        (the driver calls this on disconnect: :class:`~simbridge.deploy.franky_connection.ConnectionHolder`)."""
        object.__setattr__(self, "_real", None)
