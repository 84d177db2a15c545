#!/usr/bin/env bash
# One node, N processes: one per GPU (or N CPU processes on a machine without GPUs, with gloo), started by torchrun
# or by the DeepSpeed launcher. The global batch stays what the config says; accumulation adapts to N.
#
# Usage: [NPROC=8] [LAUNCHER=torchrun|deepspeed] [MASTER_PORT=29500] launch/multi_gpu.sh STAGE CONFIG [key.sub=value ...]
#   NPROC        processes (default: the number of GPUs nvidia-smi lists, else 2)
#   LAUNCHER     torchrun (default) or deepspeed
#   MASTER_PORT  rendezvous port (default: torchrun --standalone picks a free one; deepspeed uses 29500)
#   e.g.  NPROC=8 launch/multi_gpu.sh ppo configs/tiny/ppo.yaml deepspeed.zero_stage=3
# Environment: PYTHON (default python3).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
STAGE=$1
CONFIG=$2
shift 2
PY=${PYTHON:-python3}
if [ -z "${NPROC:-}" ]; then
  NPROC=0
  if command -v nvidia-smi > /dev/null 2>&1; then
    NPROC=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
  fi
  [ "$NPROC" -gt 0 ] || NPROC=2
fi
case "${LAUNCHER:-torchrun}" in
  torchrun)
    if [ -n "${MASTER_PORT:-}" ]; then
      rdzv=(--master_addr 127.0.0.1 --master_port "$MASTER_PORT")
    else
      rdzv=(--standalone)
    fi
    exec "$PY" -m torch.distributed.run --nproc_per_node "$NPROC" "${rdzv[@]}" -m rlhf.cli "$STAGE" "$CONFIG" "$@"
    ;;
  deepspeed)
    # --no_local_rank: rlhf reads LOCAL_RANK from the environment, not from a --local_rank argument
    exec deepspeed --num_gpus "$NPROC" --master_port "${MASTER_PORT:-29500}" --no_local_rank \
      --module rlhf.cli "$STAGE" "$CONFIG" "$@"
    ;;
  *)
    echo "LAUNCHER must be torchrun or deepspeed, got '${LAUNCHER}'" >&2
    exit 2
    ;;
esac
