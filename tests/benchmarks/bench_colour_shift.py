"""Benchmark: is a policy's failure in another renderer explained by its global colour statistics?

ManiSkill episodes (``train`` split, the seeds of ``bench_sim_twin_gap.py``) played twice by the
same bundle: with the frames as rendered, and with a global colour transform applied to every
camera frame before the policy sees it (saturation factor, then per-channel gains). The default
transform is the twin's measured shift against ManiSkill on matched frames (saturation about 1.7x,
blue 0.85x; ``docs/experiments/2026-12-03_domain_randomization.md``). If the policy keeps its
ManiSkill success under the transform, the colour statistics are not what breaks it in the twin.

    .venv/bin/python tests/benchmarks/bench_colour_shift.py --bundle runs/export/<bundle> \
        [--episodes 20] [--seed 20000] [--saturation 1.7] [--gains 1.0 0.95 0.85]

Prints JSON and writes tests/benchmarks/results/colour_shift_<bundle name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

RESULTS = Path(__file__).parent / "results"


def colour_shift(img: np.ndarray, saturation: float, gains: np.ndarray) -> np.ndarray:
    """``img`` (H, W, 3) uint8 with its saturation scaled, then each channel multiplied by its gain."""
    x = img.astype(np.float32) / 255.0
    grey = 0.299 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]
    x = ((x - grey) * saturation + grey) * gains
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


class ShiftedPolicy:
    """The policy, seeing colour-shifted frames (everything else passes through)."""

    def __init__(self, policy, saturation: float, gains: np.ndarray):
        self.policy, self.saturation, self.gains = policy, saturation, gains

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def predict(self, obs, *args, **kwargs):
        images = {k: colour_shift(v, self.saturation, self.gains) for k, v in obs.images.items()}
        return self.policy.predict(dataclasses.replace(obs, images=images), *args, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=20000)
    p.add_argument("--saturation", type=float, default=1.7)
    p.add_argument("--gains", type=float, nargs=3, default=[1.0, 0.95, 0.85])
    args = p.parse_args()

    from simbridge.training.envs import make_env
    from simbridge.training.evaluation import load_policy_source, run_episode

    source = load_policy_source(args.bundle)
    cams = source.contract.observation.cameras
    env = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="rgb", camera_size=(cams[0].height, cams[0].width),
                   wrist_camera=any(c.name == "wrist" for c in cams))  # fmt: skip
    policy = source.make(env)
    gains = np.asarray(args.gains, np.float32)
    seeds = list(range(args.seed, args.seed + args.episodes))
    success = {"as_rendered": [], "colour_shifted": []}
    for seed in tqdm(seeds, desc="episodes (both ways)"):
        success["as_rendered"].append(bool(run_episode(env, policy, seed)["success"]))
        success["colour_shifted"].append(bool(run_episode(env, ShiftedPolicy(policy, args.saturation, gains), seed)["success"]))
    env.close()
    out = {
        "benchmark": "colour_shift", "bundle": args.bundle, "split": "train", "seeds": [seeds[0], seeds[-1]],
        "transform": {"saturation": args.saturation, "gains_rgb": args.gains},
        **{k: f"{sum(v)}/{len(v)}" for k, v in success.items()}, "per_seed": success,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"colour_shift_{Path(args.bundle).name}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "per_seed"}, indent=1), f"\n-> {path}")


if __name__ == "__main__":
    main()
