#!/usr/bin/env bash
# The mini study: RL4VLA's SFT vs PPO vs GRPO comparison at small scale, in simulation.
#
#   launch/reproduce_mini.sh [out-dir]          # default runs/mini_study/<stamp>
#   DEMOS=200 SFT_STEPS=4000 EPISODES=20 launch/reproduce_mini.sh runs/mini_study/big
#   SFT_CHECKPOINT=runs/sft/<stamp>/checkpoints/iter_003000 PPO_MINUTES=60 GRPO_MINUTES=60 \
#     PARALLEL=1 EPISODES=20 launch/reproduce_mini.sh runs/mini_study/from_sft
#
# Stages, all with fixed seeds; a stage that finished is skipped, so re-running with the same
# out-dir continues an interrupted study:
#   1. expert demonstrations on the train split (seeds 0, 1, ...)       -> demos.zarr
#   2. SFT of the tiny OpenVLA-OFT policy on them                        -> sft/<stamp>/
#   3. PPO warm-started from the SFT checkpoint                          -> ppo/<stamp>/
#   4. GRPO warm-started from the same SFT checkpoint                    -> grpo/<stamp>/
#   5. each of the three checkpoints on every split (train + vision / semantics / execution),
#      EPISODES held-out seeds per split starting at EVAL_SEED           -> eval/{sft,ppo,grpo}/
#   6. the comparison (Wilson 95% intervals, Fisher exact p vs SFT)      -> report/report.{md,png,json}
#      and the partial progress (episodes that grasped the object)       -> report/progress.md
# and study.json: the sizes, the commit, the machine and the minutes of every stage.
# Sizes (environment variables, defaults in brackets): DEMOS [100], SFT_STEPS [2000], PPO_ITERS [20],
# GRPO_ITERS [10], EPISODES per split [5], EVAL_SEED [10000], SUITE [all], WRIST [1: scene + wrist camera],
# SFT_CHECKPOINT [unset: stages 1-2 run; set: that checkpoint is the SFT policy and stages 1-2 are skipped],
# PPO_MINUTES / GRPO_MINUTES [unset: no limit; set: the run stops, checkpointed, after that many minutes],
# PARALLEL [0; 1: PPO and GRPO side by side (each its own Ray instance), then the three evaluations side
# by side with one torch thread each: on a small machine the cores stay busy].
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
py="${SIMBRIDGE_PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py=python3
sb() { "$py" -m simbridge.data.cli "$@"; }
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"

out="${1:-runs/mini_study/$(date +%Y%m%d-%H%M%S)}"
DEMOS="${DEMOS:-100}"
SFT_STEPS="${SFT_STEPS:-2000}"
PPO_ITERS="${PPO_ITERS:-20}"
GRPO_ITERS="${GRPO_ITERS:-10}"
EPISODES="${EPISODES:-5}"
EVAL_SEED="${EVAL_SEED:-10000}"   # demos use seeds 0..; evaluation never sees a demo layout
SUITE="${SUITE:-all}"
SEED="${SEED:-0}"
WRIST="${WRIST:-1}"               # 1: scene + wrist camera (grasping needs the close view), 0: scene only
SFT_CHECKPOINT="${SFT_CHECKPOINT:-}"
PPO_MINUTES="${PPO_MINUTES:-null}"
GRPO_MINUTES="${GRPO_MINUTES:-null}"
PARALLEL="${PARALLEL:-0}"
mkdir -p "$out"
# A study keeps the sizes (and the commit) it started with: continuing it never mixes two settings.
if [[ -f "$out/study.env" ]]; then
  # shellcheck disable=SC1091
  source "$out/study.env"
  echo "[mini] continuing $out with its recorded sizes ($out/study.env)"
else
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || commit="$commit+dirty"
  printf '%s\n' "DEMOS=$DEMOS" "SFT_STEPS=$SFT_STEPS" "PPO_ITERS=$PPO_ITERS" "GRPO_ITERS=$GRPO_ITERS" \
    "EPISODES=$EPISODES" "EVAL_SEED=$EVAL_SEED" "SUITE=$SUITE" "SEED=$SEED" "WRIST=$WRIST" \
    "SFT_CHECKPOINT=$SFT_CHECKPOINT" "PPO_MINUTES=$PPO_MINUTES" "GRPO_MINUTES=$GRPO_MINUTES" \
    "PARALLEL=$PARALLEL" "STUDY_COMMIT=$commit" > "$out/study.env"
  STUDY_COMMIT="$commit"
fi
wrist_demo=(); wrist_env=()
if [[ "$WRIST" == 1 ]]; then wrist_demo=(--wrist-camera); wrist_env=(env.spec.wrist_camera=true); fi
echo "mini study -> $out (DEMOS=$DEMOS SFT_STEPS=$SFT_STEPS PPO_ITERS=$PPO_ITERS GRPO_ITERS=$GRPO_ITERS" \
     "EPISODES=$EPISODES per split, suite $SUITE, WRIST=$WRIST)"

timings="$out/timings.txt"
mkdir -p "$out/.stages"; touch "$timings"
stage() {  # stage <name> <command...>: run unless it finished before (marker), and time it
  local name="$1"; shift
  local marker="$out/.stages/${name// /_}.done"
  if [[ -e "$marker" ]]; then echo "[mini] $name: done already"; return; fi
  echo; echo "[mini] $name"
  local t0=$SECONDS
  "$@"
  echo "$name $((SECONDS - t0))" >> "$timings"
  touch "$marker"
}
latest_run() { ls -d "$out/$1"/*/ 2>/dev/null | tail -n 1; }

if [[ -n "$SFT_CHECKPOINT" ]]; then
  [[ -d "$SFT_CHECKPOINT" ]] || { echo "SFT_CHECKPOINT=$SFT_CHECKPOINT: no such checkpoint directory" >&2; exit 2; }
  sft_run="$SFT_CHECKPOINT"
  echo "[mini] SFT policy: $sft_run (stages demos and sft skipped)"
else
  [[ -e "$out/.stages/demos.done" ]] || rm -rf "$out/demos.zarr"  # a partial store of an interrupted run
  stage demos sb demos --episodes "$DEMOS" --split train --seed "$SEED" --out "$out/demos.zarr" "${wrist_demo[@]}"
  stage sft sb train sft --config launch/configs/sft_tiny.yaml "data.store=$out/demos.zarr" \
    "root=$out" name=sft "seed=$SEED" "optim.steps=$SFT_STEPS" eval.enabled=false
  sft_run="$(latest_run sft)"
fi
# RL checkpoints every quarter of the run, so a time budget that stops it early still leaves its last one.
rl() {  # rl <ppo|grpo> <iterations> <minutes>
  stage "$1" sb train "$1" --config "launch/configs/$1_maniskill.yaml" "policy.init_checkpoint=$sft_run" \
    "runner.root=$out" "runner.name=$1" "runner.seed=$SEED" "runner.iterations=$2" \
    "runner.checkpoint_every=$(( $2 / 4 > 0 ? $2 / 4 : 1 ))" "runner.time_budget_min=$3" "${wrist_env[@]}"
}
if [[ "$PARALLEL" == 1 ]]; then
  rl ppo "$PPO_ITERS" "$PPO_MINUTES" > "$out/ppo.log" 2>&1 & ppo_pid=$!
  rl grpo "$GRPO_ITERS" "$GRPO_MINUTES" > "$out/grpo.log" 2>&1 & grpo_pid=$!
  echo "[mini] PPO and GRPO side by side: logs $out/ppo.log, $out/grpo.log"
  wait "$ppo_pid" || { echo "[mini] PPO failed: $out/ppo.log" >&2; exit 1; }
  wait "$grpo_pid" || { echo "[mini] GRPO failed: $out/grpo.log" >&2; exit 1; }
else
  rl ppo "$PPO_ITERS" "$PPO_MINUTES"
  rl grpo "$GRPO_ITERS" "$GRPO_MINUTES"
fi
policy_of() { if [[ "$1" == sft ]]; then echo "$sft_run"; else latest_run "$1"; fi; }
evaluate() {  # evaluate <sft|ppo|grpo>
  stage "eval $1" sb eval --policy "$(policy_of "$1")" --suite "$SUITE" --episodes "$EPISODES" \
    --seed "$EVAL_SEED" --out "$out/eval/$1"
}
if [[ "$PARALLEL" == 1 ]]; then
  pids=()
  for algo in sft ppo grpo; do
    OMP_NUM_THREADS=1 evaluate "$algo" > "$out/eval_$algo.log" 2>&1 & pids+=($!)
  done
  echo "[mini] three evaluations side by side: logs $out/eval_{sft,ppo,grpo}.log"
  for pid in "${pids[@]}"; do wait "$pid" || { echo "[mini] an evaluation failed: $out/eval_*.log" >&2; exit 1; }; done
else
  for algo in sft ppo grpo; do evaluate "$algo"; done
fi
stage report sb report "SFT=$out/eval/sft" "PPO=$out/eval/ppo" "GRPO=$out/eval/grpo" --baseline SFT \
  -o "$out/report"

"$py" - "$out" "$DEMOS" "$SFT_STEPS" "$PPO_ITERS" "$GRPO_ITERS" "$EPISODES" "$EVAL_SEED" "$SUITE" "$WRIST" \
  "$STUDY_COMMIT" "$SFT_CHECKPOINT" "$PPO_MINUTES" "$GRPO_MINUTES" "$PARALLEL" <<'PY'
import json, os, platform, sys
from pathlib import Path

(out, demos, sft_steps, ppo_iters, grpo_iters, episodes, eval_seed, suite, wrist, commit, sft_checkpoint,
 ppo_minutes, grpo_minutes, parallel) = sys.argv[1:]
minutes = {}
for line in Path(out, "timings.txt").read_text().splitlines():
    name, _, seconds = line.rpartition(" ")
    minutes[name] = round(int(seconds) / 60, 1)
study = {
    "command": (f"SFT_CHECKPOINT={sft_checkpoint} " if sft_checkpoint else f"DEMOS={demos} SFT_STEPS={sft_steps} ")
               + f"PPO_ITERS={ppo_iters} PPO_MINUTES={ppo_minutes} GRPO_ITERS={grpo_iters} GRPO_MINUTES={grpo_minutes} "
               f"PARALLEL={parallel} EPISODES={episodes} EVAL_SEED={eval_seed} SUITE={suite} WRIST={wrist} "
               f"launch/reproduce_mini.sh {out}",
    "sft_checkpoint": sft_checkpoint or None,
    "commit": commit,
    "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                "processor": platform.processor() or platform.machine()},
    "minutes": minutes,
    "report": str(Path(out, "report", "report.md")),
}
# Partial progress next to success: how often each policy got the object into its gripper.
table = ["| split | category | " + " | ".join(f"{p} success | {p} grasped" for p in ("SFT", "PPO", "GRPO")) + " |",
         "|---|---|" + "---|---|" * 3]
summaries = {p: json.loads(Path(out, "eval", p.lower(), "summary.json").read_text()) for p in ("SFT", "PPO", "GRPO")}
for split, row in summaries["SFT"]["splits"].items():
    cells = []
    for p in ("SFT", "PPO", "GRPO"):
        r = summaries[p]["splits"][split]
        g = r.get("grasp_rate")
        cells += [f"{r['successes']}/{r['episodes']}", "n/a" if g is None else f"{round(g * r['episodes'])}/{r['episodes']}"]
    table.append(f"| {split} | {row['category']} | " + " | ".join(cells) + " |")
Path(out, "report", "progress.md").write_text("\n".join(table) + "\n")
study["progress_table"] = str(Path(out, "report", "progress.md"))
Path(out, "study.json").write_text(json.dumps(study, indent=2))
print(json.dumps(study, indent=2))
PY
echo "[mini] report: $out/report/report.md and report.png; study: $out/study.json"
