"""`simbridge collect` on the real ManiSkill task: the scripted expert rolls out, a scripted device
takes over (lifts the hand), hands back; the store records who acted and what was executed."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simbridge.data.cli import main
from simbridge.data.store import EpisodeStore, validate_store

pytestmark = [pytest.mark.sim, pytest.mark.integration]


def test_collect_interventions_on_the_expert_in_maniskill(tmp_path, capsys):
    up = [0, 0, 1.0, 0, 0, 0]
    cfg = {
        "device": "scripted",
        "device_options": {"script": [{"repeat": 4}, {"twist": up, "repeat": 4}, {"repeat": 10}]},
        "env": "PutOnTarget-v1",
        "out": str(tmp_path / "hil.zarr"),
        "mode": "intervene",
        "policy": "expert",
        "takeover": "motion",
        "handback_idle_steps": 2,
        "episodes": 1,
        "max_steps": 14,
        "camera_size": [32, 32],
        "obs_mode": "state",  # no rendering: the loop, not the renderer, is under test
        "realtime": False,
        "operator": "ci",
    }
    (tmp_path / "collect.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["collect", "--config", str(tmp_path / "collect.yaml"), "--seed", "3"]) == 0
    assert "kept 1 episode(s)" in capsys.readouterr().out

    store = EpisodeStore(tmp_path / "hil.zarr")
    assert len(store) == 1 and validate_store(store.path).ok
    ep, meta = store.episode(0), store.meta(0)
    # 4 moving reads + 1 idle read of grace; the 2nd idle read hands back.
    assert ep["intervention"].tolist() == [False] * 4 + [True] * 5 + [False] * 5
    assert meta.policy_id == "expert" and meta.num_interventions == 1 and meta.task == "PutOnTarget-v1"
    assert meta.robot == "maniskill:PutOnTarget-v1" and meta.seed == 3 and meta.split == "train"
    assert np.isfinite(ep["policy_action"]).all()  # the expert's proposal is kept at every step
    policy = ~ep["intervention"]
    np.testing.assert_allclose(ep["action"][policy], np.clip(ep["policy_action"][policy], -1, 1), atol=1e-6)
    # The operator lifted the hand for 4 steps: executed +z, and the real arm went up.
    lift = ep["action"][4:8]
    assert np.all(lift[:, 2] > 0.015) and np.allclose(lift[:, :2], 0)
    assert ep["ee_pose"][8, 2] - ep["ee_pose"][4, 2] > 0.04
    assert ep["image_scene"].shape == (14, 32, 32, 3)

    # Replaying the executed actions from the recorded seed reproduces the recorded trajectory.
    assert main(["data", "replay", str(store.path), "--episode", "0"]) == 0
    out = capsys.readouterr().out
    assert "replayed 14 steps" in out and "drift max 0.000" in out
