#!/usr/bin/env bash
# PPO fine-tuning in simulation on Ray.
#   launch/train_ppo.sh <config.yaml> [key=value ...]      e.g. launch/configs/ppo_maniskill.yaml
# On an existing Ray cluster add cluster.address=auto (see launch/train.sh).
exec "$(dirname "${BASH_SOURCE[0]}")/train.sh" ppo "$@"
