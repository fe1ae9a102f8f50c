#!/usr/bin/env bash
# Usage: [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_test.sh CONFIG CHECKPOINT N_GPUS [test.py options]
# (the environment variables: tools/dist_launch.sh)
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
