"""Environment throughput: SimBridge's contract wrapper vs raw ManiSkill, state and rgb.

    .venv/bin/python tests/benchmarks/bench_envs.py [--state-steps 300] [--rgb-steps 60]
    .venv/bin/python tests/benchmarks/bench_envs.py --batched [--num-envs 1 4 16] [--sim-backend physx_cuda]

Both sides step the *same* ManiSkill ``PutOnTarget-v1`` instance (the wrapper's ``ms_env``), so
the ratio isolates the wrapper's cost: action mapping (target pose bookkeeping), building the
contract Observation (tensor -> numpy, TCP pose in the base frame, image copies) and info.
Raw and wrapped blocks are interleaved to cancel drifts in machine load, and the overhead is
computed from the process's CPU time (all threads, llvmpipe's render threads included), which
other processes on a shared machine disturb far less than wall time; wall-clock steps/s are
reported too. Prints JSON and writes ``tests/benchmarks/results/envs.json``; target: overhead < 10%.

``--batched`` measures what an RL env worker's stage does (:class:`~simbridge.training.rl.
env_stage.EnvStage`, the same wrapper code): ``N`` envs stepping 4-action chunks together (only
the chunk's last step rendered), for each ``N`` of ``--num-envs``: env steps per second (all envs
together), CPU ms per env step and the process's memory per env. On the CPU backend ManiSkill
allows one env per scene, so ``N`` envs are ``N`` scenes stepped in turn; with ``--sim-backend
physx_cuda`` (a GPU machine) they are one batched scene. Writes ``results/envs_batched.json``.

``chunked_rgb`` measures what skipping the renders nobody reads buys (``step(observe=False)``):
scene + wrist cameras, every step observed vs only the last step of each 4-action chunk (what
the RL env workers and open-loop evaluation do), interleaved blocks, as a ratio of CPU time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from simbridge.training.envs import make_env


def bench(obs_mode: str, steps: int, block: int) -> dict:
    t0 = time.perf_counter()
    env = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode=obs_mode, camera_size=(128, 128))
    make_s = time.perf_counter() - t0
    env.reset(seed=0)
    hold = np.zeros(7, np.float32)
    hold[6] = 1.0
    raw_env = env.ms_env
    raw_action = env._controller_action(hold)  # holds the current pose: same physics work both ways
    wall = {"raw": 0.0, "wrapped": 0.0}
    cpu = {"raw": 0.0, "wrapped": 0.0}
    done = {"raw": 0, "wrapped": 0}
    while done["raw"] < steps:
        for kind in ("raw", "wrapped"):
            env.reset(seed=0)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(block):
                if kind == "raw":
                    raw_env.step(raw_action)
                else:
                    env.step(hold)
            wall[kind] += time.perf_counter() - t
            cpu[kind] += time.process_time() - c
            done[kind] += block
    t = time.perf_counter()
    for i in range(10):
        env.reset(seed=i)
    reset_s = (time.perf_counter() - t) / 10
    env.close()
    n = done["raw"]
    return {
        "obs_mode": obs_mode,
        "steps_each": n,
        "raw_steps_per_s_wall": round(n / wall["raw"], 2),
        "wrapped_steps_per_s_wall": round(n / wall["wrapped"], 2),
        "raw_cpu_ms_per_step": round(1000 * cpu["raw"] / n, 2),
        "wrapped_cpu_ms_per_step": round(1000 * cpu["wrapped"] / n, 2),
        "overhead_ratio": round(cpu["wrapped"] / cpu["raw"] - 1.0, 4),  # CPU time
        "overhead_ratio_wall": round(wall["wrapped"] / wall["raw"] - 1.0, 4),
        "make_env_s": round(make_s, 2),
        "reset_s": round(reset_s, 4),
    }


def bench_chunked(steps: int, chunk: int = 4) -> dict:
    env = make_env("PutOnTarget-v1", split="train", seed=0, obs_mode="rgb", camera_size=(128, 128),
                   wrist_camera=True, max_episode_steps=10_000)  # fmt: skip
    hold = np.zeros(7, np.float32)
    hold[6] = 1.0
    wall = {"every_step": 0.0, "chunk_end": 0.0}
    cpu = {"every_step": 0.0, "chunk_end": 0.0}
    done = 0
    env.reset(seed=0)
    while done < steps:
        for kind in wall:
            t, c = time.perf_counter(), time.process_time()
            for i in range(2 * chunk):
                env.step(hold, observe=kind == "every_step" or i % chunk == chunk - 1)
            wall[kind] += time.perf_counter() - t
            cpu[kind] += time.process_time() - c
        done += 2 * chunk
    env.close()
    return {
        "cameras": ["scene", "wrist"],
        "chunk_size": chunk,
        "steps_each": done,
        "every_step_cpu_ms_per_step": round(1000 * cpu["every_step"] / done, 2),
        "chunk_end_cpu_ms_per_step": round(1000 * cpu["chunk_end"] / done, 2),
        "every_step_steps_per_s_wall": round(done / wall["every_step"], 2),
        "chunk_end_steps_per_s_wall": round(done / wall["chunk_end"], 2),
        "speedup_cpu": round(cpu["every_step"] / cpu["chunk_end"], 3),
        "speedup_wall": round(wall["every_step"] / wall["chunk_end"], 3),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def bench_batched(num_envs: int, obs_mode: str, sim_backend: str, chunks: int, chunk: int = 4) -> dict:
    from simbridge.data.config import load_config
    from simbridge.training.rl.config import EnvConfig
    from simbridge.training.rl.env_stage import make_stage

    cfg = load_config(EnvConfig, data={
        "envs_per_worker": num_envs, "pipeline_stage_num": 1, "scene_batching": "batched",
        "spec": {"obs_mode": obs_mode, "camera_size": [128, 128], "max_episode_steps": 10_000},
        "kwargs": {"sim_backend": sim_backend}})  # fmt: skip
    rss0, t0 = _rss_mb(), time.perf_counter()
    stage = make_stage(cfg, list(range(num_envs)), make_single=lambda i: None)
    make_s = time.perf_counter() - t0
    rows = list(range(num_envs))
    t0 = time.perf_counter()
    stage.reset(rows, [1000 + i for i in rows])
    reset_s = time.perf_counter() - t0
    hold = np.zeros((num_envs, chunk, 7), np.float32)
    hold[..., 6] = 1.0
    active = np.ones(num_envs, bool)
    stage.step_chunk(hold, active, lambda r, d: r)  # warm-up (first render, lazy buffers)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(chunks):
        stage.step_chunk(hold, active, lambda r, d: r)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    rss = _rss_mb()
    stage.close()
    steps = num_envs * chunks * chunk
    return {
        "num_envs": num_envs,
        "obs_mode": obs_mode,
        "sim_backend": sim_backend,
        "scenes": len(stage.blocks),
        "env_steps": steps,
        "env_steps_per_s_wall": round(steps / wall, 2),
        "cpu_ms_per_env_step": round(1000 * cpu / steps, 2),
        "make_s": round(make_s, 2),
        "reset_all_s": round(reset_s, 3),
        "rss_mb_per_env": round((rss - rss0) / num_envs, 1),
    }


def main_batched(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    runs = [(n, mode) for mode in ("state", "rgb") for n in args.num_envs]
    results = {"chunk_size": 4, "runs": []}
    for n, mode in tqdm(runs, desc="batched envs"):
        results["runs"].append(bench_batched(n, mode, args.sim_backend, chunks=max(1, args.batched_steps // 4)))
    for mode in ("state", "rgb"):  # throughput relative to one env, same run
        one = next((r for r in results["runs"] if r["obs_mode"] == mode and r["num_envs"] == 1), None)
        for r in results["runs"]:
            if one and r["obs_mode"] == mode:
                r["speedup_vs_1"] = round(r["env_steps_per_s_wall"] / one["env_steps_per_s_wall"], 3)
    out = Path(__file__).parent / "results" / "envs_batched.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-steps", type=int, default=300)
    p.add_argument("--rgb-steps", type=int, default=60)
    p.add_argument("--batched", action="store_true", help="env steps/s of an RL worker stage of N envs")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--sim-backend", default="physx_cpu", help="physx_cuda on a GPU machine (e.g. --num-envs 64 256 512)")
    p.add_argument("--batched-steps", type=int, default=40, help="steps per env in --batched mode")
    args = p.parse_args()
    if args.batched:
        return main_batched(args)
    results = {
        "state": bench("state", args.state_steps, block=25),
        "rgb": bench("rgb", args.rgb_steps, block=5),
        "chunked_rgb": bench_chunked(args.rgb_steps),
        "target_overhead_ratio": 0.10,
    }
    results["meets_target"] = all(results[m]["overhead_ratio"] < 0.10 for m in ("state", "rgb"))
    out = Path(__file__).parent / "results" / "envs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
