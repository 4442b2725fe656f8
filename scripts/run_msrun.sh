#!/usr/bin/env bash
# Data-parallel training with msrun: one worker process per device, on one node or several.
#
#   scripts/run_msrun.sh WORKER_NUM [scripts/train.py flags ...]
#
#   # one node, 8 devices
#   scripts/run_msrun.sh 8 --config configs/dvt_deit_small.yaml --data_dir /data/imagenet --device_target Ascend
#   # two nodes of 8 devices: run on both, node 0 is the master
#   MASTER_ADDR=10.0.0.1 NODE_RANK=0 LOCAL_WORKER_NUM=8 scripts/run_msrun.sh 16 --config ...   # on 10.0.0.1
#   MASTER_ADDR=10.0.0.1 NODE_RANK=1 LOCAL_WORKER_NUM=8 scripts/run_msrun.sh 16 --config ...   # on the other
#
# Environment (defaults): MASTER_ADDR (127.0.0.1), MASTER_PORT (8118), LOCAL_WORKER_NUM (WORKER_NUM),
# NODE_RANK (0), LOG_DIR (outputs/msrun_logs: scheduler.log and worker_<rank>.log), CLUSTER_TIME_OUT (600 s).
# The global batch is batch_size x WORKER_NUM; lr is scaled to it (see the config's lr_batch_size).
# msrun starts the workers with the `python` found first on PATH, so the project's environment is put first.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 WORKER_NUM [train.py flags ...]   (WORKER_NUM: total workers over all nodes)" >&2
    exit 2
fi
WORKER_NUM=$1
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
PYTHON_DIR="$(dirname "$PYTHON")"
MSRUN="${MSRUN:-$PYTHON_DIR/msrun}"
[[ -x "$MSRUN" ]] || MSRUN="$(command -v msrun || true)"
if [[ -z "$MSRUN" ]]; then
    echo "error: msrun not found (it comes with MindSpore: pip install -e $ROOT)" >&2
    exit 2
fi
LOCAL_WORKER_NUM="${LOCAL_WORKER_NUM:-$WORKER_NUM}"
if (( LOCAL_WORKER_NUM > WORKER_NUM )); then
    echo "error: LOCAL_WORKER_NUM ($LOCAL_WORKER_NUM) exceeds WORKER_NUM ($WORKER_NUM)" >&2
    exit 2
fi
export PATH="$PYTHON_DIR:$PATH"

exec "$MSRUN" --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER_NUM" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-8118}" \
    --node_rank="${NODE_RANK:-0}" --log_dir="${LOG_DIR:-outputs/msrun_logs}" --join=True \
    --cluster_time_out="${CLUSTER_TIME_OUT:-600}" \
    "$ROOT/scripts/train.py" --distributed true "$@"
