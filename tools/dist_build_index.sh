#!/usr/bin/env bash
# Usage: [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_build_index.sh CONFIG CHECKPOINT N_PROCS --gallery DIR --out INDEX_DIR [build_index.py options]
# (the environment variables: tools/dist_launch.sh)
exec bash "$(dirname "$0")/dist_launch.sh" build_index.py "$3" "$1" "$2" "${@:4}"
