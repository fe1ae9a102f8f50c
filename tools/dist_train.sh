#!/usr/bin/env bash
# Usage: [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_train.sh CONFIG N_GPUS [train.py options]
# (the environment variables: tools/dist_launch.sh)
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
