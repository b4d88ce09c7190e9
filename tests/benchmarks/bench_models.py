"""Benchmark of the VLA policies: parameters, act() latency at batch 1 / 32, one SFT step.

    .venv/bin/python tests/benchmarks/bench_models.py [--presets tiny small] [--threads 2] [--repeats 5]

Prints JSON and writes tests/benchmarks/results/models.json. Timings are medians over
``--repeats`` after one warm-up; the machine is shared, so compare figures from one run
(e.g. the ``small / tiny`` ratios it reports) rather than across runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from simbridge.data.spec import PolicyContract
from simbridge.training.models import build_policy
from simbridge.training.sft import sft_loss

RESULTS = Path(__file__).parent / "results" / "models.json"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _batch(policy, b: int):
    s = policy.config.image_size
    ids, mask = policy.prepare_text(["put the red cube on the plate"] * b)
    return {
        "pixel_values": torch.rand(b, policy.config.num_cameras, 3, s, s),
        "input_ids": ids,
        "attention_mask": mask,
        "proprio": torch.zeros(b, 8),
    }


def bench(family: str, preset: str, chunk: int, repeats: int, train_batch: int) -> dict:
    policy = build_policy(family, preset, contract=PolicyContract(chunk_size=chunk))
    n_params = sum(p.numel() for p in policy.parameters())
    row = {"family": family, "preset": preset, "chunk_size": chunk, "parameters": n_params,
           "parameters_millions": round(n_params / 1e6, 2)}  # fmt: skip
    with torch.no_grad():
        for b in (1, 32):
            batch = _batch(policy, b)
            row[f"act_ms_batch{b}"] = round(
                1e3 * _median_time(lambda batch=batch: policy.act(batch), repeats), 2
            )
    policy.train()
    optim = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    batch = _batch(policy, train_batch)
    target = torch.rand(train_batch, policy.num_action_tokens) * 2 - 1

    def step():
        loss, _ = sft_loss(policy, batch, target)
        optim.zero_grad()
        loss.backward()
        optim.step()

    row["train_batch"] = train_batch
    row["train_step_s"] = round(_median_time(step, max(2, repeats // 2)), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    rows = []
    for preset in args.presets:
        for family, chunk in (("openvla-oft", 4), ("openvla", 1)):
            rows.append(bench(family, preset, chunk, args.repeats, args.train_batch))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "models",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    by = {(r["family"], r["preset"]): r for r in rows}
    for fam in ("openvla-oft", "openvla"):
        if (fam, "tiny") in by and (fam, "small") in by:
            result[f"{fam}_small_over_tiny_train_step"] = round(
                by[(fam, "small")]["train_step_s"] / by[(fam, "tiny")]["train_step_s"], 2
            )
    if ("openvla", "tiny") in by and ("openvla-oft", "tiny") in by:
        result["tiny_openvla_over_oft_act_batch1"] = round(
            by[("openvla", "tiny")]["act_ms_batch1"] / by[("openvla-oft", "tiny")]["act_ms_batch1"], 2
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
