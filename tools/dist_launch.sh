#!/usr/bin/env bash
# The launcher behind dist_train.sh, dist_test.sh and dist_build_index.sh:
#   [PYTHON=...] [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. PORT=..] bash tools/dist_launch.sh TOOL N_PROCS [TOOL's arguments]
# runs tools/TOOL in N_PROCS processes per node through torch.distributed.run, with
# --launcher pytorch, the arguments passed on as given.
TOOL=$1
PROCS=$2
shift 2
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
TOOLS=$(dirname "$0")

PYTHONPATH="$TOOLS/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$PROCS" --master_port="$PORT" \
    "$TOOLS/$TOOL" --launcher pytorch "$@"
