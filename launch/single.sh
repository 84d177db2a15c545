#!/usr/bin/env bash
# One process on this machine (a CPU, or one GPU), no launcher: rlhf sets RANK, WORLD_SIZE and MASTER_* itself.
# Scaling comes from the config's deepspeed: section (ZeRO stage, offload, precision, batch sizes), as at every scale.
#
# Usage: launch/single.sh STAGE CONFIG [key.sub=value ...]      (run from the repository root)
#   STAGE   pretrain | sft | rm | ppo | eval
#   e.g.    launch/single.sh sft configs/tiny/sft.yaml train.learning_rate=5e-4
# Environment: PYTHON (default python3).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
STAGE=$1
CONFIG=$2
shift 2
exec "${PYTHON:-python3}" -m rlhf.cli "$STAGE" "$CONFIG" "$@"
