#!/usr/bin/env bash
# One node (or more, see the accelerate file), N processes started by `accelerate launch` with a DeepSpeed
# accelerate config: configs/accelerate/zero2.yaml or zero3.yaml. The accelerate file only starts the processes;
# the stage's deepspeed: section holds every DeepSpeed setting, and this script passes deepspeed.zero_stage=$ZERO
# so the two agree (rlhf stops with an error if they do not).
#
# Usage: [ZERO=3] [NPROC=8] [MASTER_PORT=29500] launch/accelerate.sh STAGE CONFIG [key.sub=value ...]
#   ZERO         2 or 3 (default 3): picks configs/accelerate/zero$ZERO.yaml
#   NPROC        processes (default: num_processes in that file)
#   MASTER_PORT  rendezvous port (default: accelerate's, 29500)
#   e.g.  ZERO=2 NPROC=4 launch/accelerate.sh sft configs/tiny/sft.yaml
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
STAGE=$1
CONFIG=$2
shift 2
ZERO=${ZERO:-3}
ACC_CONFIG="$(cd "$(dirname "$0")/.." && pwd)/configs/accelerate/zero${ZERO}.yaml"
if [ ! -f "$ACC_CONFIG" ]; then
  echo "ZERO must be 2 or 3: no $ACC_CONFIG" >&2
  exit 2
fi
args=(--config_file "$ACC_CONFIG")
[ -n "${NPROC:-}" ] && args+=(--num_processes "$NPROC")
[ -n "${MASTER_PORT:-}" ] && args+=(--main_process_port "$MASTER_PORT")
exec accelerate launch "${args[@]}" -m rlhf.cli "$STAGE" "$CONFIG" "$@" "deepspeed.zero_stage=$ZERO"
