#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-process training with torchrun. On machines without GPUs the processes
# use the gloo backend (set automatically when CUDA is unavailable).
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# the repository's .venv (make install) unless PYTHON says otherwise
VENV_PY="$(dirname "$0")/../.venv/bin/python"
if [ -z "${PYTHON:-}" ] && [ -x "$VENV_PY" ]; then PYTHON="$VENV_PY"; fi
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    $(dirname "$0")/train.py \
    $CONFIG \
    --launcher pytorch ${@:3}
