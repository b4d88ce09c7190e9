#!/usr/bin/env bash
# The mini study: RL4VLA's SFT vs PPO vs GRPO comparison at small scale, in simulation.
#
#   launch/reproduce_mini.sh [out-dir]          # default runs/mini_study/<stamp>
#   DEMOS=200 SFT_STEPS=4000 EPISODES=20 launch/reproduce_mini.sh runs/mini_study/big
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
# GRPO_ITERS [10], EPISODES per split [5], EVAL_SEED [10000], SUITE [all], WRIST [1: scene + wrist camera].
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
    "STUDY_COMMIT=$commit" > "$out/study.env"
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

[[ -e "$out/.stages/demos.done" ]] || rm -rf "$out/demos.zarr"  # a partial store of an interrupted run
stage demos sb demos --episodes "$DEMOS" --split train --seed "$SEED" --out "$out/demos.zarr" "${wrist_demo[@]}"
stage sft sb train sft --config launch/configs/sft_tiny.yaml "data.store=$out/demos.zarr" \
  "root=$out" name=sft "seed=$SEED" "optim.steps=$SFT_STEPS" eval.enabled=false
sft_run="$(latest_run sft)"
stage ppo sb train ppo --config launch/configs/ppo_maniskill.yaml "policy.init_checkpoint=$sft_run" \
  "runner.root=$out" runner.name=ppo "runner.seed=$SEED" "runner.iterations=$PPO_ITERS" \
  "runner.checkpoint_every=$PPO_ITERS" "${wrist_env[@]}"
stage grpo sb train grpo --config launch/configs/grpo_maniskill.yaml "policy.init_checkpoint=$sft_run" \
  "runner.root=$out" runner.name=grpo "runner.seed=$SEED" "runner.iterations=$GRPO_ITERS" \
  "runner.checkpoint_every=$GRPO_ITERS" "${wrist_env[@]}"
for algo in sft ppo grpo; do
  stage "eval $algo" sb eval --policy "$(latest_run $algo)" --suite "$SUITE" --episodes "$EPISODES" \
    --seed "$EVAL_SEED" --out "$out/eval/$algo"
done
stage report sb report "SFT=$out/eval/sft" "PPO=$out/eval/ppo" "GRPO=$out/eval/grpo" --baseline SFT \
  -o "$out/report"

"$py" - "$out" "$DEMOS" "$SFT_STEPS" "$PPO_ITERS" "$GRPO_ITERS" "$EPISODES" "$EVAL_SEED" "$SUITE" "$WRIST" \
  "$STUDY_COMMIT" <<'PY'
import json, os, platform, sys
from pathlib import Path

out, demos, sft_steps, ppo_iters, grpo_iters, episodes, eval_seed, suite, wrist, commit = sys.argv[1:]
minutes = {}
for line in Path(out, "timings.txt").read_text().splitlines():
    name, _, seconds = line.rpartition(" ")
    minutes[name] = round(int(seconds) / 60, 1)
study = {
    "command": f"DEMOS={demos} SFT_STEPS={sft_steps} PPO_ITERS={ppo_iters} GRPO_ITERS={grpo_iters} "
               f"EPISODES={episodes} EVAL_SEED={eval_seed} SUITE={suite} WRIST={wrist} launch/reproduce_mini.sh {out}",
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
