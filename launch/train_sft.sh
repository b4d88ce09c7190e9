#!/usr/bin/env bash
# SFT (behaviour cloning) of a VLA policy on episodes of the zarr store.
#   launch/train_sft.sh <config.yaml> [key=value ...]      e.g. launch/configs/sft_tiny.yaml data.store=<demos.zarr>
exec "$(dirname "${BASH_SOURCE[0]}")/train.sh" sft "$@"
