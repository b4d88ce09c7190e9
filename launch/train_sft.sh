#!/usr/bin/env bash
# Supervised fine-tuning of a VLA policy on demonstrations.
#   launch/train_sft.sh launch/configs/sft_tiny.yaml [key=value ...]
# e.g. launch/train_sft.sh launch/configs/sft_tiny.yaml optim.steps=300 data.store=runs/demos/x.zarr
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: $0 <config.yaml> [key=value ...]   (configs in launch/configs/sft*.yaml)" >&2
  exit 2
fi
config="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
exec "$python" -m simbridge.data.cli train sft --config "$config" "$@"
