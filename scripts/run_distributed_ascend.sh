#!/usr/bin/env bash
# Data-parallel training on Ascend with a rank table file (HCCL): one process per device of this node.
#
#   scripts/run_distributed_ascend.sh RANK_TABLE_FILE DEVICE_NUM [train.py flags ...]
#
#   scripts/run_distributed_ascend.sh /path/hccl_8p.json 8 --config configs/dvt_deit_small.yaml \
#       --data_dir /data/imagenet
#
# Several nodes: run it on every node with the same rank table; RANK_SIZE (default DEVICE_NUM) is the total
# number of devices and RANK_START (default 0) the rank of this node's first device, e.g. on the second of
# two 8-device nodes: RANK_SIZE=16 RANK_START=8 scripts/run_distributed_ascend.sh hccl_16p.json 8 ...
# Each process runs in LOG_DIR/rank_<id>/ (default outputs/ascend_logs) with its log in train.log, so
# MindSpore's kernel files do not collide; existing paths among the flags are made absolute, and
# --output_dir is required (it is created relative to the current folder if it does not exist yet).
set -euo pipefail

if [[ $# -lt 2 || ! "$2" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 RANK_TABLE_FILE DEVICE_NUM [train.py flags ...]" >&2
    exit 2
fi
RANK_TABLE_FILE="$(realpath "$1")"
DEVICE_NUM=$2
shift 2
if [[ ! -f "$RANK_TABLE_FILE" ]]; then
    echo "error: rank table file $RANK_TABLE_FILE not found" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
RANK_SIZE="${RANK_SIZE:-$DEVICE_NUM}"
RANK_START="${RANK_START:-0}"
LOG_DIR="$(realpath -m "${LOG_DIR:-outputs/ascend_logs}")"

# make relative paths (config, data, output) absolute: the workers run in their own folders
ARGS=()
HAS_OUTPUT=0
PREV=""
for arg in "$@"; do
    if [[ "$PREV" == "--output_dir" ]]; then
        HAS_OUTPUT=1
        ARGS+=("$(realpath -m "$arg")")
    elif [[ "$arg" != -* && -e "$arg" ]]; then
        ARGS+=("$(realpath "$arg")")
    else
        ARGS+=("$arg")
    fi
    PREV="$arg"
done
if (( HAS_OUTPUT == 0 )); then
    echo "error: pass --output_dir DIR: every rank must see the same checkpoint folder (rank 0 writes it)" >&2
    exit 2
fi

export RANK_TABLE_FILE RANK_SIZE
PIDS=()
for (( i = 0; i < DEVICE_NUM; i++ )); do
    RANK_ID=$(( RANK_START + i ))
    mkdir -p "$LOG_DIR/rank_$RANK_ID"
    (
        cd "$LOG_DIR/rank_$RANK_ID"
        DEVICE_ID=$i RANK_ID=$RANK_ID exec "$PYTHON" "$ROOT/scripts/train.py" --distributed true \
            --device_target Ascend "${ARGS[@]}" > train.log 2>&1
    ) &
    PIDS+=($!)
    echo "rank $RANK_ID on device $i: pid ${PIDS[-1]}, log $LOG_DIR/rank_$RANK_ID/train.log"
done
STATUS=0
for pid in "${PIDS[@]}"; do
    wait "$pid" || STATUS=$?
done
exit $STATUS
