"""``simbridge deploy``: the nodes in one process from the parameter files (pip-only users)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def simbridge(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simbridge.data.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_deploy_sim_starts_the_twin_and_nodes_and_exits_cleanly(tmp_path: Path) -> None:
    out = simbridge("deploy", "--sim", "--duration", "2", "--log-dir", str(tmp_path), "--set", "twin.seed=3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "running twin, franka, policy, logger" in out.stdout
    assert "twin running at 127.0.0." in out.stderr and "franka ready" in out.stderr
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr


def test_deploy_reports_bad_parameter_files_and_overrides(tmp_path: Path) -> None:
    out = simbridge("deploy", "--sim", "--params", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "missing.yaml does not exist" in out.stderr
    out = simbridge("deploy", "--sim", "--set", "chunk_mode=ensemble")
    assert out.returncode == 2 and "name the node" in out.stderr
