"""Benchmark: is the SFT policy competent? Demonstrations -> SFT -> success on held-out seeds.

    .venv/bin/python tests/benchmarks/bench_sft_competence.py --name keypoints --demos 200 \
        --sft model.keypoint_stem=32 optim.steps=3000
    .venv/bin/python tests/benchmarks/bench_sft_competence.py --name baseline --demos-store <demos.zarr> ...

Runs the user's own commands, timed: ``simbridge demos`` (scripted expert on the ``train`` split,
scene + wrist camera; skipped with ``--demos-store``), ``simbridge train sft --config
launch/configs/sft_tiny.yaml`` with the given ``--sft`` overrides (its own end-of-run evaluation off),
then ``simbridge eval`` of the final checkpoint on ``--episodes`` held-out ``train`` seeds from
``--seed`` (10000: never demonstrated). Reports minutes per stage, success with its Wilson 95%
interval, grasp rate and the failure breakdown (``simbridge eval``'s failure analysis), plus the
SFT's validation metrics. JSON into tests/benchmarks/results/sft_competence_<name>.json.

Target (issue #21): >= 50% held-out success with <= 60 min of SFT on a 2-core CPU, demonstrations
collected separately in <= 45 min. Run on a quiet machine: minutes are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIMBRIDGE = str(Path(sys.executable).with_name("simbridge"))


def run(cmd: list[str], log: Path) -> float:
    """Run one CLI command (output to ``log``), return its wall-clock minutes; raise on failure."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    minutes = (time.time() - t0) / 60.0
    if rc != 0:
        raise SystemExit(f"command failed (exit {rc}); see {log}")
    return minutes


def newest_run(root: Path) -> Path:
    runs = sorted(p for p in root.glob("*") if p.is_dir())
    if not runs:
        raise SystemExit(f"no SFT run under {root}")
    return runs[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="variant name (output file, run directory)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench_sft_competence")
    p.add_argument("--demos", type=int, default=200, help="expert demonstrations to record")
    p.add_argument("--demos-seed", type=int, default=0)
    p.add_argument("--demos-store", type=Path, default=None, help="reuse these demonstrations")
    p.add_argument("--demos-set", nargs="*", default=[], help="key=value options of simbridge demos")
    p.add_argument("--sft", nargs="*", default=[], help="key=value overrides of the SFT config")
    p.add_argument("--config", default="launch/configs/sft_tiny.yaml")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000)
    args = p.parse_args()

    work = args.work / args.name
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "sft_competence", "name": args.name, "command": " ".join(sys.argv),
                    "machine": f"{platform.machine()}, python {platform.python_version()}"}  # fmt: skip
    store = args.demos_store
    if store is None:
        store = work / "demos.zarr"
        result["demos_minutes"] = round(run([SIMBRIDGE, "demos", "--out", str(store), "--episodes", str(args.demos),
                                             "--seed", str(args.demos_seed), "--wrist-camera", "--no-progress",
                                             *args.demos_set], work / "demos.log"), 2)  # fmt: skip
    result["demos"] = {"store": str(store), "episodes": args.demos if args.demos_store is None else None}

    sft_root = work / "sft"
    result["sft_minutes"] = round(run([SIMBRIDGE, "train", "sft", "--config", args.config, f"data.store={store}",
                                       f"root={sft_root}", f"name={args.name}", "eval.enabled=false",
                                       "progress=false", *args.sft], work / "sft.log"), 2)  # fmt: skip
    run_dir = newest_run(sft_root / args.name)
    summary_file = run_dir / "sft_summary.json"
    result["sft"] = {"run_dir": str(run_dir), "overrides": args.sft,
                     "summary": json.loads(summary_file.read_text()) if summary_file.exists() else None}  # fmt: skip

    eval_dir = work / "eval"
    result["eval_minutes"] = round(run([SIMBRIDGE, "eval", "--policy", str(run_dir), "--suite", "train",
                                        "--episodes", str(args.episodes), "--seed", str(args.seed),
                                        "--out", str(eval_dir), "--no-progress"], work / "eval.log"), 2)  # fmt: skip
    summary = json.loads((eval_dir / "summary.json").read_text())
    result["held_out"] = {"seeds": f"{args.seed}..{args.seed + args.episodes - 1}", "summary": summary}
    out = REPO / "tests" / "benchmarks" / "results" / f"sft_competence_{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "held_out"}, indent=1))
    print((eval_dir / "summary.json").read_text()[:3000])
    print(f"-> {out}")


if __name__ == "__main__":
    main()
