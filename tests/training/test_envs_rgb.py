"""Rendered observations of PutOnTarget-v1 (scene + wrist cameras) and the vision splits' effect.

One rgb environment for the module: the first rgb ``gym.make`` costs 10-15 s on this CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from simbridge.training.envs import make_env
from simbridge.training.envs.splits import COLOURS


@pytest.fixture(scope="module")
def env():
    e = make_env(
        "PutOnTarget-v1", split="train", seed=0, obs_mode="rgb", camera_size=(96, 96), wrist_camera=True
    )
    yield e
    e.close()


def cloth_region(img: np.ndarray) -> np.ndarray:
    """A strip along the left image edge: tablecloth only (training positions stay inside)."""
    h, w = img.shape[:2]
    return img[int(0.45 * h) :, : int(0.08 * w)].reshape(-1, 3)


def test_images_match_the_contract_and_show_the_scene(env):
    obs, _ = env.reset(seed=0, options={"split": "train"})
    obs.validate(env.contract.observation)
    assert env.contract.observation.camera_names == ("scene", "wrist")
    for img in obs.images.values():
        assert img.dtype == np.uint8 and img.shape == (96, 96, 3) and img.std() > 10


def pixels_of(img: np.ndarray, colour: str) -> int:
    """Saturated pixels with the hue of ``colour`` (shading changes brightness, not hue)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(int)
    ref = cv2.cvtColor((np.array(COLOURS[colour]) * 255).astype(np.uint8)[None, None], cv2.COLOR_RGB2HSV)
    dh = np.abs(hsv[..., 0] - int(ref[0, 0, 0]))
    dh = np.minimum(dh, 180 - dh)
    return int(((dh < 5) & (hsv[..., 1] > 110) & (hsv[..., 2] > 60)).sum())


def test_objects_are_painted_in_their_colours(env):
    seen = set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed, options={"split": "train"})
        present = {c for _, c in env.layout.objects}
        for colour in ("green", "blue", "yellow"):  # hues that the wooden table edge does not have
            n = pixels_of(obs.images["scene"], colour)
            if colour in present:
                assert n >= 6, (seed, colour, n)
                seen.add(colour)
            else:
                assert n <= 1, (seed, colour, n)
    assert len(seen) >= 2


def test_tablecloth_colour_follows_the_layout(env):
    means = {}
    for seed in range(6):
        obs, _ = env.reset(seed=seed, options={"split": "vision_table"})
        means[env.layout.tablecloth[0]] = cloth_region(obs.images["scene"]).reshape(-1, 3).mean(0)
    assert len(means) >= 2
    for name, mean in means.items():
        rgb = np.array(COLOURS[name]) * 255
        others = [np.linalg.norm(mean - np.array(COLOURS[o]) * 255) for o in means if o != name]
        assert np.linalg.norm(mean - rgb) < min(others), (name, mean)


def test_dynamic_texture_changes_every_step_and_train_does_not(env):
    def cloth_change(split: str) -> float:
        env.reset(seed=1, options={"split": split})
        a, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
        b, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
        return float(
            np.abs(cloth_region(a.images["scene"]).astype(float) - cloth_region(b.images["scene"])).mean()
        )

    assert cloth_change("train") < 1.0
    assert cloth_change("vision_dynamic") > 5.0


def test_noise_and_texture_splits_add_high_frequencies(env):
    def roughness(split: str, seed: int) -> float:
        obs, _ = env.reset(seed=seed, options={"split": split})
        img = obs.images["scene"].astype(float)
        return float(np.abs(np.diff(img, axis=1)).mean())

    clean = np.mean([roughness("train", s) for s in range(2)])
    assert np.mean([roughness("vision_noise", s) for s in range(2)]) > 3 * clean

    def cloth_contrast(split: str, seed: int) -> float:
        obs, _ = env.reset(seed=seed, options={"split": split})
        return float(cloth_region(obs.images["scene"]).std(0).mean())

    assert max(cloth_contrast("train", s) for s in range(2)) < 1.0  # plain cloth
    assert min(cloth_contrast("vision_texture", s) for s in range(2)) > 4.0  # two-colour pattern


def test_evaluation_writes_videos(env, tmp_path):
    from simbridge.training.evaluation import evaluate, load_policy_source

    summary = evaluate(
        load_policy_source("expert"),
        splits=["train"],
        episodes=1,
        seed=0,
        env=env,
        run_dir=tmp_path,
        video=True,
        video_episodes=1,
        progress=False,
    )
    assert summary["splits"]["train"]["successes"] == 1
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1
    cap = cv2.VideoCapture(str(videos[0]))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (96, 192, 3)  # scene and wrist side by side
    assert frames == summary["splits"]["train"]["mean_steps"] + 1
