#!/usr/bin/env bash
# Stop the local SLURM started by start.sh (its slurmd, slurmctld and munged), by their pid files.
set -uo pipefail
STATE=/var/spool/slurm-local
[ "$(id -u)" = 0 ] || { echo "slurm/local/stop.sh: needs root" >&2; exit 1; }
stop() {  # pidfile
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "pid $pid ($1) still running" >&2
}
stop "$STATE/slurmd.pid"
stop "$STATE/slurmctld.pid"
stop /var/run/munge/munged.pid
echo "local SLURM stopped"
