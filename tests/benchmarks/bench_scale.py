"""Benchmark of the real-scale paths (issue #24): planned vs measured memory of one SFT step, and
weight-sync bytes / seconds, full state_dict vs trainable-only with LoRA.

    nice -n 19 .venv/bin/python tests/benchmarks/bench_scale.py [--presets tiny small] [--batch 8]

Memory: each configuration runs in a fresh subprocess (so peaks do not mix). Measured are
(a) the bytes autograd keeps for the backward pass (``torch.autograd.graph.saved_tensors_hooks``
summing every saved tensor: the activations, compared with the planner's activation estimate
for the CPU, i.e. with unfused attention) and (b) the process's peak RSS growth over the step
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the step minus the RSS before it: gradients,
Adam state, activations, transients and allocator overhead), compared with the planner's
gradients + optimizer + activations. Sync: the payload pickled as Ray would ship it (bytes) and
the seconds of make + pickle + unpickle + apply, median of 5. Writes
tests/benchmarks/results/scale.json. The machine is shared: seconds are indicative.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "scale.json"
MB = 1024**2


def _rss_now_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def measure_step(preset: str, batch: int, checkpointing: bool, precision: str) -> dict:
    """One SFT step in this process: saved-tensor bytes and the peak RSS growth, with the plan."""
    import numpy as np

    from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
    from simbridge.training.memory_plan import activation_bytes, train_group
    from simbridge.training.models import build_policy
    from simbridge.training.models.precision import configure_training, trainable_adamw
    from simbridge.training.sft import sft_loss

    torch.set_num_threads(2)
    contract = PolicyContract(observation=ObservationSpec(cameras=(CameraSpec("scene", 128, 128),)), chunk_size=4)
    policy = build_policy("openvla-oft", preset, contract=contract, use_proprio=False).train()
    configure_training(policy, precision, checkpointing)
    optim = trainable_adamw(policy, 1e-4, 0.0)
    s = policy.config.image_size
    rng = np.random.default_rng(0)
    ids, mask = policy.prepare_text(["put the red cube on the plate"] * batch)
    inputs = {"pixel_values": torch.as_tensor(rng.random((batch, 1, 3, s, s), np.float32)), "input_ids": ids,
              "attention_mask": mask}  # fmt: skip
    target = torch.as_tensor(rng.uniform(-1, 1, (batch, policy.num_action_tokens)), dtype=torch.float32)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    before_kb = _rss_now_kb()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = sft_loss(policy, inputs, target)
    loss.backward()
    optim.step()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    plan = train_group("trainer", policy, batch, precision, checkpointing, fused=False)
    plain, ckpt = activation_bytes(policy, batch, precision, fused_attention=False)
    planned_step = plan.grads + plan.optimizer + plan.activations + plan.autocast_copies
    return {
        "preset": preset, "batch": batch, "gradient_checkpointing": checkpointing, "precision": precision,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "planned_params_mb": plan.params / MB, "planned_activations_mb": (ckpt if checkpointing else plain) / MB,
        "measured_saved_tensors_mb": saved[0] / MB,
        "planned_step_mb": planned_step / MB,
        "measured_peak_rss_growth_mb": max(0, peak_kb - before_kb) / 1024,
    }  # fmt: skip


def _median(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_sync(preset: str, rank: int) -> dict:
    """Full state_dict vs trainable-only payload (LoRA on a loaded model: adapters + value head)."""
    from simbridge.data.spec import PolicyContract
    from simbridge.training.models import build_policy
    from simbridge.training.models.adapters import LoRAOptions, apply_lora
    from simbridge.training.rl.weight_sync import apply_payload, make_payload

    torch.set_num_threads(2)
    actor = build_policy("openvla-oft", preset, contract=PolicyContract(chunk_size=4), seed=0)
    apply_lora(actor, LoRAOptions(rank=rank, trainable=("value_head",)))
    rollout = copy.deepcopy(actor)

    def full() -> int:
        blob = pickle.dumps((1, {k: v.detach().clone() for k, v in actor.state_dict().items()}))
        rollout.load_state_dict(pickle.loads(blob)[1])
        return len(blob)

    def trainable() -> int:
        blob = pickle.dumps(make_payload(actor, 1))
        apply_payload(rollout, pickle.loads(blob), 0)
        return len(blob)

    full_bytes, lora_bytes = full(), trainable()
    return {
        "preset": preset, "lora_rank": rank,
        "full_bytes": full_bytes, "full_seconds": _median(full),
        "trainable_bytes": lora_bytes, "trainable_seconds": _median(trainable),
        "bytes_ratio": full_bytes / lora_bytes,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one step config as JSON (subprocess)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_step(**json.loads(args.one))))
        return
    steps = []
    for preset in args.presets:
        for ckpt in (False, True):
            spec = {"preset": preset, "batch": args.batch, "checkpointing": ckpt, "precision": "fp32"}
            out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                 text=True, check=True)  # fmt: skip
            steps.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(steps[-1]), flush=True)
    syncs = [measure_sync(p, args.lora_rank) for p in args.presets]
    for s in syncs:
        print(json.dumps(s), flush=True)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
        "note": "shared 2-core machine, run under nice -n 19 while other jobs ran: seconds are indicative",
        "memory_measure": "activations: bytes of tensors saved for backward (saved_tensors_hooks); step: "
                          "peak RSS growth over one step (getrusage ru_maxrss - VmRSS before)",
        "sft_step": steps, "sync": syncs,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
