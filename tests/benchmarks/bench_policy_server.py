"""Policy server round trip on loopback vs the same policy called in-process.

    .venv/bin/python tests/benchmarks/bench_policy_server.py [--requests 200] [--rounds 4] [--threads 0]

The tiny openvla-oft preset (build_policy("openvla-oft", "tiny")) with the contract of two 128x128
cameras, saved as a checkpoint and served by ``simbridge serve`` (CPU, fp32) in a subprocess on a
free loopback port. Measures, in interleaved rounds (the machine may be shared):

* ``remote``: :class:`RemotePolicy.predict` wall time (encode, send, server decode + validation +
  inference, reply, decode, chunk check), p50 / p99;
* ``server_inference``: the part of it the server spent in the model (``inference_s``);
* ``in_process``: :class:`ServedPolicy.predict` (the very code the server runs) in this process;
* ``overhead``: remote minus server inference per request (transport + (de)serialization);
* payload sizes in bytes: hello, one request (two uint8 128x128x3 images + proprio + instruction),
  one reply (the chunk).

Prints JSON and writes tests/benchmarks/results/policy_server.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from simbridge.data.spec import CameraSpec, ObservationSpec, PolicyContract
from simbridge.deploy.export import synthetic_observations
from simbridge.deploy.remote_policy import RemotePolicy
from simbridge.deploy.serving_protocol import ActionChunk, InferRequest, encode
from simbridge.training.checkpoint import save_checkpoint
from simbridge.training.models import build_policy
from simbridge.training.serving import ServedPolicy

CONTRACT = PolicyContract(
    observation=ObservationSpec(cameras=(CameraSpec("scene", 128, 128), CameraSpec("wrist", 128, 128))),
    chunk_size=8,
)


def start_server(checkpoint: Path, threads: int) -> tuple[subprocess.Popen, str]:
    env_threads = [] if not threads else ["env", f"OMP_NUM_THREADS={threads}"]
    cmd = [*env_threads, sys.executable, "-m", "simbridge.data.cli", "serve", "--policy", str(checkpoint),
           "--port", "0", "--device", "cpu", "--dtype", "fp32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("simbridge serve: ") and " on ws://" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.rsplit(" on ", 1)[1].strip()
    raise SystemExit(f"simbridge serve did not start (exit {proc.wait()})")


def stats_ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3), "n": len(a)}  # fmt: skip


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent)  # fmt: skip
    return out.stdout.strip() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=200, help="requests per method in all")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        policy = build_policy("openvla-oft", "tiny", contract=CONTRACT, seed=0)
        params = sum(t.numel() for t in policy.parameters())
        checkpoint = save_checkpoint(policy, Path(tmp) / "run", 1)
        local = ServedPolicy(checkpoint, device="cpu", dtype="fp32")
        proc, url = start_server(checkpoint, args.threads)
        try:
            remote = RemotePolicy(url, contract=CONTRACT, timeout_s=60)
            observations = synthetic_observations(CONTRACT, 16, seed=1)
            for obs in observations[:5]:  # warm both sides
                np.testing.assert_array_equal(remote.predict(obs), local.predict(obs))
            rtt, server, inproc = [], [], []
            per_round = max(1, args.requests // args.rounds)
            for r in range(args.rounds):
                for i in range(per_round):
                    obs = observations[(r * per_round + i) % len(observations)]
                    t0 = time.perf_counter()
                    remote.predict(obs)
                    rtt.append(time.perf_counter() - t0)
                    server.append(remote.last_inference_s)
                for i in range(per_round):
                    obs = observations[(r * per_round + i) % len(observations)]
                    t0 = time.perf_counter()
                    local.predict(obs)
                    inproc.append(time.perf_counter() - t0)
            remote.close()
        finally:
            proc.kill()
            proc.wait()
    obs = observations[0]
    request = encode(InferRequest.from_observation(obs, 1))
    reply = encode(ActionChunk(request_id=1, stamp=0.0, actions=local.predict(obs), inference_s=0.0))
    overhead = [a - b for a, b in zip(rtt, server, strict=True)]
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
        "policy": {"family": "openvla-oft", "preset": "tiny", "parameters": params,
                   "cameras": "scene + wrist, 128x128 uint8", "chunk_size": CONTRACT.chunk_size,
                   "device": "cpu", "dtype": "fp32"},
        "transport": "websocket on 127.0.0.1, msgpack frames, no compression",
        "latency_ms": {"remote_round_trip": stats_ms(rtt), "server_inference": stats_ms(server),
                       "in_process": stats_ms(inproc), "overhead_round_trip_minus_inference": stats_ms(overhead)},
        "payload_bytes": {"hello": len(encode(remote.hello)), "request": len(request), "reply": len(reply),
                          "images_raw": int(sum(v.nbytes for v in obs.images.values()))},
    }  # fmt: skip
    out = Path(__file__).parent / "results" / "policy_server.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
