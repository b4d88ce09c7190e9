#!/usr/bin/env bash
# GRPO fine-tuning in simulation on Ray.
#   launch/train_grpo.sh <config.yaml> [key=value ...]      e.g. launch/configs/grpo_maniskill.yaml
# On an existing Ray cluster add cluster.address=auto (see launch/train.sh).
exec "$(dirname "${BASH_SOURCE[0]}")/train.sh" grpo "$@"
