#!/usr/bin/env bash
# Distributed training with torchrun, as mmdet's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
# NNODES, NODE_RANK, MASTER_ADDR and PORT (the master port) as mmdet's; PYTHON picks the
# interpreter (default: python). GPUS processes per node; on a machine without CUDA they train
# on the CPU over gloo. On many nodes, run it once on each with the same NNODES, MASTER_ADDR (the
# address of node 0, reachable from the others) and PORT, and NODE_RANK 0 to NNODES-1:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on node 1
# Ranks are NODE_RANK * GPUS + LOCAL_RANK. The work dir must be one directory for all nodes (a
# shared file system): rank 0 writes the checkpoints, and a resumed run reads them on every rank.

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

# `python -m torch.distributed.run` is torchrun, run by the chosen interpreter.
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
$PYTHON -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")"/train.py \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
