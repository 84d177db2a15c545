#!/usr/bin/env bash
# Several nodes with the DeepSpeed launcher and a hostfile (pdsh/ssh to every host). Every node needs the same
# code and Python environment at the same path, and run.output_dir on a filesystem they all share: each rank
# writes its ZeRO shard of a checkpoint there, and rank 0 the consolidated model.
#
# Usage: [MASTER_ADDR=host] [MASTER_PORT=29500] launch/multi_node.sh HOSTFILE STAGE CONFIG [key.sub=value ...]
#   HOSTFILE     one line per node, "hostname slots=GPUS", e.g.
#                  node01 slots=8
#                  node02 slots=8
#   MASTER_ADDR  rendezvous host (default: the first host of HOSTFILE)
#   e.g.  launch/multi_node.sh hostfile ppo configs/tiny/ppo.yaml deepspeed.zero_stage=3
#   NODE_RANK    without ssh: start this script on every node yourself, with NODE_RANK=0 .. N-1 (the line of
#                this node in HOSTFILE) and the same MASTER_ADDR; the DeepSpeed launcher's --no_ssh mode
#                (how the tests run two nodes on one machine over 127.0.0.1)
# Variables listed in ~/.deepspeed_env (e.g. NCCL_SOCKET_IFNAME=eth0) are exported on every node (with ssh).
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
HOSTFILE=$1
STAGE=$2
CONFIG=$3
shift 3
if [ ! -f "$HOSTFILE" ]; then
  echo "no hostfile at $HOSTFILE" >&2
  exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}
NO_SSH=()
if [ -n "${NODE_RANK:-}" ]; then
  NO_SSH=(--no_ssh --node_rank "$NODE_RANK")
fi
exec deepspeed --hostfile "$HOSTFILE" "${NO_SSH[@]}" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
  --no_local_rank --module rlhf.cli "$STAGE" "$CONFIG" "$@"
