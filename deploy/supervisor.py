"""Run a planned node graph as one process per node, the way ``ros2 launch`` does, without launch.

``simbridge deploy --processes`` uses this: every node of the :class:`~simbridge.deploy.node_graph.Plan`
starts as its own process with the command line launch_ros would give it (base parameter file,
then the launch arguments under the node's name), its output prefixed with ``[name]``. Every node
is required, as in the launch files: when one exits (the franka node cannot reach the arm, the
orchestrator finished) the others are stopped with SIGINT (then SIGTERM, then SIGKILL) and the
reason is printed. Separate processes also give franky-sim's 1 kHz loop an interpreter of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simbridge.deploy.node_graph import Plan, PlannedNode, write_overrides


def node_command(node: PlannedNode, params_file: Path, overrides_file: Path) -> list[str]:
    """``python -m simbridge_ros.<node>`` with launch_ros's ROS arguments (the installed executable
    is the same module's ``main``)."""
    return [sys.executable, "-m", f"simbridge_ros.{node.executable}", *node.ros_arguments(params_file, overrides_file)]


@dataclass
class Outcome:
    """How the graph ended: the first node that exited, its exit code, and why it matters."""

    node: str
    returncode: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.node == "orchestrator" and self.returncode == 0


class NodeProcesses:
    """The planned nodes as child processes; :meth:`wait` returns when the first one exits."""

    def __init__(self, planned: Plan, workdir: Path, extra: Mapping[str, Mapping[str, Any]] | None = None,
                 env: Mapping[str, str] | None = None, ros_package_src: Path | None = None,
                 echo: Callable[[str], None] = print) -> None:
        # ``--set`` overrides go into the same node sections, after the launch arguments.
        self.nodes = [replace(n, overrides={**n.overrides, **(extra or {}).get(n.name, {})}) for n in planned.nodes]
        self.params_file = planned.params_file
        self.overrides_file = write_overrides(self.nodes, workdir / "overrides.yaml")
        self.env = dict(os.environ if env is None else env)
        if ros_package_src is not None:  # the source tree, when simbridge_ros is not installed
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ros_package_src), self.env.get("PYTHONPATH")]))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.echo = echo
        self.procs: dict[str, subprocess.Popen] = {}
        self._pumps: list[threading.Thread] = []

    def start(self) -> None:
        for node in self.nodes:
            cmd = node_command(node, self.params_file, self.overrides_file)
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=None if node.tty else subprocess.DEVNULL, text=True, bufsize=1)
            self.procs[node.name] = proc
            pump = threading.Thread(target=self._pump, args=(node.name, proc), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.echo(f"[{name}] {line.rstrip()}")

    def wait(self, timeout_s: float | None = None) -> Outcome | None:
        """Block until a node exits (its Outcome) or ``timeout_s`` passes (None)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None:
                    if name == "orchestrator" and code == 0:
                        return Outcome(name, code, "the evaluation protocol finished")
                    return Outcome(name, code, f"required node {name!r} exited with code {code}; the evaluation "
                                               "cannot go on without it (its log above says why)")
            time.sleep(0.1)
        return None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGINT every running node (each stops the arm / commits its episode), escalate if it hangs.
        Reverse start order: the arm stops before the twin it talks to goes away."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs.values():
                with_timeout = max(0.1, deadline - time.monotonic())
                try:
                    proc.wait(timeout=with_timeout)
                except subprocess.TimeoutExpired:
                    proc.send_signal(sig)
            deadline = time.monotonic() + 5.0
        for pump in self._pumps:
            pump.join(timeout=2.0)

    def __enter__(self) -> NodeProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
