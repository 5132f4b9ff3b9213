#!/usr/bin/env bash
# Start a real single-node SLURM on this machine (munge + slurmctld + slurmd), for the tests
# and for trying launch/submit.py without a cluster. Idempotent: a running local cluster is
# left as it is. Needs root (it installs Debian packages if missing and writes /etc/slurm).
# Stop it with slurm/local/stop.sh.
set -euo pipefail
MARK="# written by neumeta-dist slurm/local/start.sh"
CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local

die() { echo "slurm/local/start.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons); run it with sudo"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; } \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

# munge: a key, then the daemon as user munge
mkdir -p /etc/munge /var/run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  head -c 1024 /dev/urandom > /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /var/run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
fi

# slurm.conf: ours, or refuse to overwrite somebody else's
host=$(hostname -s)
mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script; not touching it"
fi
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
cat > "$CONF.new" <<CONF
$MARK
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
# pending jobs are looked at every 2 s (default 60): a requeued job starts soon after its BeginTime
SchedulerParameters=sched_interval=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$CONF.new" "$CONF" 2>/dev/null; then mv "$CONF.new" "$CONF"; changed=1; else rm "$CONF.new"; changed=0; fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # pidfile
  running "$1" || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
if [ "$changed" = 1 ]; then  # some settings (cred_expire) are read only at start-up
  stop "$STATE/slurmd.pid"; stop "$STATE/slurmctld.pid"
fi
running "$STATE/slurmctld.pid" || slurmctld
running "$STATE/slurmd.pid" || slurmd

# wait until the node takes jobs
for _ in $(seq 100); do
  state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null || true)
  case "$state" in idle*|mix*|alloc*) echo "local SLURM up: node $host ($state), partition local"; exit 0;; esac
  sleep 0.3
done
die "node $host did not become idle (state '${state:-none}'); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
