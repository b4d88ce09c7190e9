"""``simbridge deploy``: the nodes in one process from the parameter files (pip-only users)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simbridge.data.store import EpisodeStore

pytestmark = [pytest.mark.ros, pytest.mark.robot, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def simbridge(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simbridge.data.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_deploy_sim_runs_a_twin_protocol_end_to_end(tmp_path: Path, bundle_dir: Path) -> None:
    """The pip-only path of the main job: twin + franka + policy + logger + orchestrator in one process,
    running a blinded, randomized protocol whose success labels come from the twin's object poses."""
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(
        f"name: cli_test\npolicies: {{sft: '{bundle_dir}', rl: missing/bundle}}\n"
        "episodes_per_condition: 1\nepisode_time_s: 8.0\nlabel: twin\n"
        "conditions:\n  - {name: distractors, category: semantics, twin: {num_distractors: 1}}\n"
    )
    limits = tmp_path / "limits.yaml"  # see loaded_machine_limits in conftest.py
    limits.write_text("max_command_age_s: 1.0\n")
    out = simbridge("deploy", "--sim", "--protocol", str(protocol), "--log-dir", str(tmp_path / "eval"),
                    "--set", f"franka.safety_limits_file={limits}",
                    # On a loaded machine one twin render can take ~0.6 s: accept older frames here
                    # (freshness itself is tested in test_policy_node.py).
                    "--set", "policy.max_observation_age_s=2.0",
                    "--protocol-set", f"policies.rl={bundle_dir / 'latest'}", timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "running twin, franka, policy, logger, orchestrator" in out.stdout
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr
    assert "state=finished" in out.stderr
    assert "twin scene for distractors: {'num_distractors': 1}" in out.stderr  # the condition reached the twin
    # Results: blinded ids only for the operator, revealed in the files; every episode in the store.
    ev = tmp_path / "eval"
    rows = [json.loads(line) for line in (ev / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["policy"] for r in rows) == ["rl", "sft"]
    assert all(r["steps"] > 0 for r in rows), f"{rows}\n{out.stderr[-4000:]}"
    blinding = json.loads((ev / "blinding.json").read_text())
    assert sorted(blinding) == ["A", "B"] and all(blinding[r["blind_id"]] == r["policy"] for r in rows)
    assert not any(f"policy={name}" in out.stderr for name in ("sft", "rl"))  # the operator's view is blinded
    summary = json.loads((ev / "summary.json").read_text())
    assert {s["policy"] for s in summary["splits"]} == {"sft", "rl"}
    episodes = EpisodeStore(ev / "episodes.zarr")
    assert len(episodes) == 2
    for i, row in enumerate(rows):
        meta = episodes.meta(i)
        assert row["store_episode"] == i and len(episodes.episode(i)["action"]) == row["steps"]
        assert meta.policy_id == row["policy"] and meta.extra["blind_id"] == row["blind_id"]
        assert meta.success == row["success"] and meta.success_labeled_by == "env"  # twin object poses
        assert meta.split == "distractors" and meta.instruction == row["instruction"]
        assert meta.instruction.startswith("put the")  # from the twin's layout


def test_deploy_reports_bad_parameter_files_and_overrides(tmp_path: Path) -> None:
    out = simbridge("deploy", "--sim", "--params", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "missing.yaml does not exist" in out.stderr
    out = simbridge("deploy", "--sim", "--set", "chunk_mode=ensemble")
    assert out.returncode == 2 and "name the node" in out.stderr
    out = simbridge("deploy", "--sim", "--set", "policy.execute_steps=two", "--duration", "1")
    assert out.returncode == 2 and "execute_steps" in out.stderr and "type" in out.stderr, out.stderr[-2000:]


def test_deploy_refuses_a_bad_bundle_in_one_line_before_any_node_starts(tmp_path: Path, bundle_dir: Path) -> None:
    import shutil

    bad = tmp_path / "tampered"
    shutil.copytree((bundle_dir / "latest").resolve(), bad)
    manifest = bad / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"chunk_size": 4', '"chunk_size": NaN'))
    for extra in ([], ["--processes"]):
        out = simbridge("deploy", "--sim", "--bundle", str(bad), *extra, timeout=60)
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stderr.strip().count("\n") == 0 and "refused bundle" in out.stderr and "manifest" in out.stderr
        assert "Traceback" not in out.stderr and "running" not in out.stdout and "starting" not in out.stdout
    # A policy server (simbridge serve) that does not answer is refused the same way, naming it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = simbridge("deploy", "--sim", "--bundle", f"ws://127.0.0.1:{port}", timeout=60)
    assert out.returncode == 1 and "refused bundle" in out.stderr and str(port) in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(f"name: x\npolicies: {{sft: '{bundle_dir}', rl: '{bad}'}}\nconditions:\n  - {{name: base}}\n")
    out = simbridge("deploy", "--sim", "--protocol", str(protocol), timeout=60)
    assert out.returncode == 1 and "refused bundle" in out.stderr and str(bad) in out.stderr, out.stderr
