"""Paths a multi-node RL run shares: made absolute on the driver, checked by every worker at start.

A Ray worker on another node runs in its own working directory, so a relative ``runner.root``
or ``policy.init_checkpoint`` would name another place there (or nothing). The driver resolves
them once, before any worker starts (:func:`absolute_paths`); each worker then writes and reads
back a probe file in the run directory (:func:`check_run_dir`) and fails at start with
:class:`RunDirUnreachable`, naming the host, the directory and the fix, instead of failing at the
first checkpoint an hour later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from pathlib import Path

from simbridge.training.rl.config import RLConfig


class RunDirUnreachable(RuntimeError):
    """A worker cannot write and read back a file in the run directory."""


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().absolute()) if path else path


def absolute_paths(cfg: RLConfig) -> RLConfig:
    """``runner.root``, ``runner.resume`` and ``policy.init_checkpoint`` as absolute paths (driver side)."""
    runner = dataclasses.replace(cfg.runner, root=_absolute(cfg.runner.root), resume=_absolute(cfg.runner.resume))
    policy = dataclasses.replace(cfg.policy, init_checkpoint=_absolute(cfg.policy.init_checkpoint))
    return dataclasses.replace(cfg, runner=runner, policy=policy)


def check_run_dir(run_dir: str | Path, who: str) -> None:
    """Write, read back and remove a probe file in ``run_dir``; raise :class:`RunDirUnreachable` if any fails."""
    path = Path(run_dir)
    host = socket.gethostname()
    probe = path / f".probe-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    token = f"{who} {host} {os.getpid()}"
    why = ""
    if not path.is_absolute():
        why = "it is a relative path (each node resolves it against its own working directory)"
    else:
        try:
            probe.write_text(token)
            if probe.read_text() != token:
                why = "the probe file read back differs from what was written"
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
    if why:
        raise RunDirUnreachable(
            f"{who} on host {host} (cwd {os.getcwd()}) cannot write and read the run directory {path}: {why}. "
            "runner.root must be an absolute path on storage every node sees (a shared filesystem), "
            "or run the whole job on one node"
        )
