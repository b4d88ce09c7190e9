"""Benchmark: the same episodes in ManiSkill and in the franky-sim twin (issue #22, sim-to-twin gap).

For each ManiSkill split and each seed, the episode layout (shapes, colours, positions, yaws, the
robot's initial joints) is drawn once (``training.envs.layout.sample_layout``) and played in both
simulators:

* ManiSkill: ``make_env`` at that seed, the scripted expert (SAPIEN physics, privileged state);
* the twin: the same layout copied into MuJoCo (``twin_layout_from_task``), the arm homed to the
  same joints, the same expert logic (``deploy.twin_expert``) acting through the whole robot stack
  (safety filter -> franky -> franky-sim) on the twin's simulated clock.

It reports per split the success in each simulator with Wilson 95% intervals and the gap in points.
Target (#22): the expert >= 90% in the twin on every split. What the twin does not model is named in
the output: image-space conditions (textures, noise, dynamic light) do not matter to the expert, and
the moved-object split is left out (its mid-episode move is the task's, not yet the twin's).

    .venv/bin/python tests/benchmarks/bench_sim_twin_gap.py [--splits train execution_position ...]
        [--episodes 20] [--seed 20000]

Prints a table and writes tests/benchmarks/results/sim_twin_gap.json (updated after every split).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPLITS = ["train", "execution_position", "execution_robot_pose", "semantic_object", "vision_table"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)


def maniskill_side(split: str, seeds: list[int], max_steps: int) -> list[dict]:
    """The expert on ManiSkill episodes ``seeds`` of ``split``: success, steps and each layout (plain data).

    Runs in its own process: SAPIEN's renderer and MuJoCo's EGL context do not load into one."""
    from simbridge.training.envs import make_env, make_expert

    env = make_env("PutOnTarget-v1", split=split, seed=0, obs_mode="state", camera_size=(64, 64))
    expert = make_expert(env)
    rows = []
    for seed in seeds:
        obs, info = env.reset(seed=seed, options={"split": split})
        expert.reset()
        steps = 0
        for steps in range(1, max_steps + 1):  # noqa: B007 (steps is reported)
            obs, _, terminated, truncated, info = env.step(expert.predict(obs)[0])
            if terminated or truncated:
                break
        lay = env.layout
        rows.append({"seed": seed, "success": bool(info.get("success")), "steps": steps, "layout": {
            "instruction": lay.instruction, "objects": [tuple(o) for o in lay.objects],
            "receptacles": [tuple(r) for r in lay.receptacles], "object_xy_yaw": [tuple(v) for v in lay.object_xy_yaw],
            "receptacle_xy": [tuple(v) for v in lay.receptacle_xy], "tablecloth": tuple(lay.tablecloth),
            "robot_qpos": [float(q) for q in lay.robot_qpos[:7]]}})  # fmt: skip
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", default=DEFAULT_SPLITS)
    parser.add_argument("--episodes", type=int, default=20, help="matched episodes per split")
    parser.add_argument("--seed", type=int, default=20000, help="first episode seed (demos use 0..)")
    parser.add_argument("--max-steps", type=int, default=80, help="the task's episode length")
    args = parser.parse_args()

    from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
    from simbridge.deploy.franky_config import FrankyRobotConfig
    from simbridge.deploy.franky_robot import FrankyRobot
    from simbridge.deploy.twin import TwinSim
    from simbridge.deploy.twin_expert import make_twin_expert, run_twin_episode
    from simbridge.deploy.twin_scene import twin_layout_from_task

    # The expert reads no images; one small camera keeps the loop's observation real and cheap.
    contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 64, 64),)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    out = {
        "benchmark": "sim_twin_gap", "date": time.strftime("%Y-%m-%d"), "commit": commit,
        "command": "python tests/benchmarks/bench_sim_twin_gap.py " + " ".join(
            ["--splits", *args.splits, "--episodes", str(args.episodes), "--seed", str(args.seed)]),
        "machine": {"cpu_cores": os.cpu_count()}, "policy": "scripted expert (funnel)",
        "target": "expert >= 90% in the twin on every split (#22)", "splits": {},
        "not_modelled": "image-space conditions do not affect the expert; execution_moved_object is left out",
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "sim_twin_gap.json"
    t_start = time.monotonic()
    with TwinSim(seed=0) as twin, FrankyRobot(FrankyRobotConfig(host=twin.hostname, sim=True), clock=twin.clock) as robot:
        expert = make_twin_expert(twin, contract)
        for split in args.splits:
            seeds = list(range(args.seed, args.seed + args.episodes))
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                sim_rows = pool.submit(maniskill_side, split, seeds, args.max_steps).result()
            rows = []
            for sim in tqdm(sim_rows, desc=f"{split} (twin)", unit="ep"):
                lay = dict(sim["layout"])
                home = tuple(lay.pop("robot_qpos"))
                ep = run_twin_episode(twin, robot, expert, contract, seed=sim["seed"],
                                      layout=twin_layout_from_task(**lay, seed=sim["seed"]), home_joints=home,
                                      max_steps=args.max_steps)  # fmt: skip
                rows.append({"seed": sim["seed"], "object": lay["objects"][0][0], "maniskill": sim["success"],
                             "maniskill_steps": sim["steps"], "twin": ep.success, "twin_steps": ep.steps,
                             "twin_wall_s": ep.wall_s, "twin_last_phase": ep.phases[-1] if ep.phases else ""})  # fmt: skip
            n = len(rows)
            k_sim, k_twin = sum(r["maniskill"] for r in rows), sum(r["twin"] for r in rows)
            out["splits"][split] = {
                "episodes": n,
                "maniskill": {"successes": k_sim, "rate": round(k_sim / n, 3), "ci95": wilson(k_sim, n)},
                "twin": {"successes": k_twin, "rate": round(k_twin / n, 3), "ci95": wilson(k_twin, n)},
                "gap_points": round(100 * (k_sim - k_twin) / n, 1),
                "twin_failures": [r for r in rows if not r["twin"]],
            }
            out["minutes"] = round((time.monotonic() - t_start) / 60, 1)
            path.write_text(json.dumps(out, indent=2))

    print(f"{'split':24s} {'ManiSkill':>16s} {'twin':>16s} {'gap (points)':>13s}")
    for split, r in out["splits"].items():
        cells = [f"{r[s]['successes']}/{r['episodes']} [{100 * r[s]['ci95'][0]:.0f}, {100 * r[s]['ci95'][1]:.0f}]"
                 for s in ("maniskill", "twin")]  # fmt: skip
        print(f"{split:24s} {cells[0]:>16s} {cells[1]:>16s} {r['gap_points']:>13.1f}")
    met = all(r["twin"]["rate"] >= 0.9 for r in out["splits"].values())
    print(f"target (expert >= 90% in the twin on every split): {'met' if met else 'NOT met'}; {out['minutes']} min")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
