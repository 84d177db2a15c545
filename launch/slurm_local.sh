#!/usr/bin/env bash
# A SLURM cluster of two nodes on this one machine, for trying launch/slurm.sbatch without a cluster (the tests do):
# munge, slurmctld and two slurmd daemons ("node0", "node1", both on 127.0.0.1, CPUs only), configured under
# STATE (default /tmp/rlhf-slurm). Needs root and Debian's slurm-wlm and munge packages (installed here with apt if
# missing). Prints the SLURM_CONF to export; `launch/slurm_local.sh stop` stops the daemons.
#
# Usage: sudo launch/slurm_local.sh [start|stop]      then:  export SLURM_CONF=/tmp/rlhf-slurm/slurm.conf
#   e.g.  GPUS_PER_NODE=1 sbatch --nodes 2 --gpus-per-node=0 --cpus-per-task=1 --chdir "$PWD" \
#           launch/slurm.sbatch pretrain configs/tiny/pretrain.yaml
set -euo pipefail
STATE=${STATE:-/tmp/rlhf-slurm}
CONF=$STATE/slurm.conf
if [ "${1:-start}" = stop ]; then
  pkill -f "slurmd -f $CONF" 2>/dev/null || true
  pkill -f "slurmctld -f $CONF" 2>/dev/null || true
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: launch/slurm_local.sh starts system daemons and needs root" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null
fi
mkdir -p "$STATE"/{spool,ctld,log}
chmod 755 "$STATE"   # the daemons run as the slurm user
chown -R slurm:slurm "$STATE"/spool "$STATE"/ctld "$STATE"/log
CPUS=$(nproc)
cat > "$CONF" <<CONF
ClusterName=rlhf-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=node0 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs=$CPUS State=UNKNOWN
NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs=$CPUS State=UNKNOWN
PartitionName=local Nodes=node0,node1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
export SLURM_CONF=$CONF
if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || /usr/sbin/mungekey --create
  runuser -u munge -- /usr/sbin/munged
fi
pgrep -f "slurmctld -f $CONF" >/dev/null || slurmctld -f "$CONF"
for n in node0 node1; do
  pgrep -f "slurmd -f $CONF -N $n" >/dev/null || slurmd -f "$CONF" -N "$n"
done
for _ in $(seq 30); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
    if [ "$(sinfo -h -N -o '%T' | grep -c idle)" = 2 ]; then
      echo "SLURM up: two nodes on this machine. export SLURM_CONF=$CONF"
      exit 0
    fi
  fi
  sleep 1
done
echo "error: the local SLURM cluster did not come up; logs in $STATE/log" >&2
sinfo -N >&2 || true
exit 1
