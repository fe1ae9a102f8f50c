#!/usr/bin/env bash
# Usage: [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_train.sh CONFIG N_GPUS [train.py options]
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# The Python the project is installed in (e.g. PYTHON=/path/to/venv/bin/python).
PYTHON=${PYTHON:-python}
# One machine: gloo talks over the loopback interface. Left to itself, gloo uses the address the
# host name resolves to, and where that address is not reachable (some containers) its processes
# wait for each other until the 30-minute timeout.
if [ "$NNODES" = 1 ]; then
    export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
fi

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS --master_port=$PORT \
    $(dirname "$0")/train.py $CONFIG --launcher pytorch ${@:3}
