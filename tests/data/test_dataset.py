"""Torch training view: windows, padded action chunks with masks, filters, DataLoader workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simbridge.data.dataset import EpisodeDataset, collate_windows
from simbridge.data.store import EpisodeStore, StoreError

sys.path.insert(0, str(Path(__file__).parent))
from episode_factory import make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    # lengths 6, 9, 4, 7; success T, F, T, None; ep 1 has operator steps 1, 2; ep 2 is in split "val"
    return make_store(tmp_path_factory.mktemp("ds") / "a.zarr")


def test_windows_pad_the_chunk_with_the_last_action_and_mask_it(store_path):
    store = EpisodeStore(store_path)
    ds = EpisodeDataset(store_path, chunk_size=4)
    assert len(ds) == 26 and ds.num_episodes == 4
    item = ds[6 + 7]  # episode 1, step 7 of 9
    assert item["episode"] == 1 and item["step"] == 7
    ep = store.episode(1)
    expected = ep["action"][[7, 8, 8, 8]]
    np.testing.assert_array_equal(item["actions"].numpy(), expected)
    assert item["action_mask"].tolist() == [True, True, False, False]
    obs = item["observation"]
    np.testing.assert_array_equal(obs.images["wrist"], ep["image_wrist"][7])
    np.testing.assert_array_equal(item["images"]["scene"].numpy(), ep["image_scene"][7])
    np.testing.assert_array_equal(obs.ee_pose, ep["ee_pose"][7])
    assert obs.instruction == "task 1" and obs.timestamp == pytest.approx(100.7)
    assert item["proprio"].shape == (8,) and item["proprio"][7] == pytest.approx(ep["gripper_width"][7])
    first = ds[0]
    assert first["action_mask"].all() and first["actions"][:, 1].tolist() == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        ds[26]


def test_filters_select_episodes_and_operator_steps(store_path):
    ok = EpisodeDataset(store_path, successful_only=True)
    assert [e.index for e in ok.episodes] == [0, 2] and len(ok) == 10
    val = EpisodeDataset(store_path, splits=["val"])
    assert [e.index for e in val.episodes] == [2]
    hil = EpisodeDataset(store_path, chunk_size=3, interventions_only=True)
    assert len(hil) == 2 and all(hil[i]["intervention"] for i in range(2))
    assert [hil[i]["step"] for i in range(2)] == [1, 2] and hil[0]["episode"] == 1
    custom = EpisodeDataset(store_path, episode_filter=lambda m: m.seed == 3)
    assert [e.index for e in custom.episodes] == [3]
    assert len(EpisodeDataset(store_path, splits=["test"])) == 0
    assert len(ok.actions()) == 10 and ok.proprio().shape == (10, 8)


def test_dataloader_with_workers_and_image_cache_agree(store_path):
    ds = EpisodeDataset(store_path, chunk_size=2, cameras=["scene"])
    cached = EpisodeDataset(store_path, chunk_size=2, cameras=["scene"], cache_images=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=1, collate_fn=collate_windows)
    batches = list(loader)
    assert sum(len(b["observations"]) for b in batches) == 26
    b = batches[0]
    assert b["actions"].shape == (8, 2, 7) and b["action_mask"].shape == (8, 2)
    assert b["images"]["scene"].shape == (8, 64, 64, 3) and b["images"]["scene"].dtype == torch.uint8
    assert "wrist" not in b["observations"][0].images
    for i in (0, 13, 25):
        torch.testing.assert_close(cached[i]["images"]["scene"], ds[i]["images"]["scene"])


def test_bad_arguments_are_named(store_path):
    with pytest.raises(StoreError, match="cameras \\['top'\\]"):
        EpisodeDataset(store_path, cameras=["top"])
    with pytest.raises(ValueError, match="chunk_size"):
        EpisodeDataset(store_path, chunk_size=0)


def test_the_store_module_does_not_import_torch():
    code = "import sys, simbridge.data.store, simbridge.data.lerobot; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
