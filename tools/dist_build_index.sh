#!/usr/bin/env bash
# Usage: [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_build_index.sh CONFIG CHECKPOINT N_PROCS --gallery DIR --out INDEX_DIR [build_index.py options]
CONFIG=$1
CHECKPOINT=$2
PROCS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
# One machine: gloo talks over the loopback interface (see tools/dist_test.sh).
if [ "$NNODES" = 1 ]; then
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
fi

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$PROCS --master_port=$PORT \
    $(dirname "$0")/build_index.py $CONFIG $CHECKPOINT --launcher pytorch ${@:4}
