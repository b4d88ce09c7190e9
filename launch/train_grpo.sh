#!/usr/bin/env bash
# GRPO fine-tuning in simulation on Ray.
#   launch/train_grpo.sh <config.yaml> [key=value ...]
# Local: starts a private Ray instance with cluster.num_cpus cores.
# Existing cluster: `ray start --head --port=6379` on the head node, `ray start --address=<head>:6379`
# on the others, then: launch/train_grpo.sh <config.yaml> cluster.address=auto
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: $0 <config.yaml> [key=value ...]   (e.g. launch/configs/grpo_maniskill.yaml)" >&2
  exit 2
fi
config="$1"; shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${SIMBRIDGE_PYTHON:-$here/.venv/bin/python}"
[[ -x "$py" ]] || py=python3
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
exec "$py" -m simbridge.data.cli train grpo --config "$config" "$@"
