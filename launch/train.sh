#!/usr/bin/env bash
# Shared body of the training launch scripts (train_sft.sh, train_ppo.sh, train_grpo.sh).
#   launch/train.sh <sft|ppo|grpo> <config.yaml> [key=value ...]
# Local: RL starts a private Ray instance with cluster.num_cpus cores.
# Existing Ray cluster: `ray start --head --port=6379` on the head node, `ray start --address=<head>:6379`
# on the others, then add cluster.address=auto.
set -euo pipefail
trainer="${1:-}"
if [[ $# -lt 2 || "${2:-}" == -h || "${2:-}" == --help ]]; then
  echo "usage: $(basename "$0") <config.yaml> [key=value ...]   (configs: launch/configs/${trainer:-ppo}_*.yaml)" >&2
  exit 2
fi
config="$2"; shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${SIMBRIDGE_PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py=python3
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
exec "$py" -m simbridge.data.cli train "$trainer" --config "$config" "$@"
