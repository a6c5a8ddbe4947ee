#!/usr/bin/env bash
# stop-services.sh - stop what infra/start-services.sh started, and nothing else.
# Only processes named by PID files inside the state dir are signalled, and only when /proc/PID/exe is the
# expected daemon (guards against PID reuse).  A Docker engine this script did not start is never touched.
#   --purge         also delete the state dir (keys, Slurm state, accounting DB, logs)
#   --remove-image  also remove the test image (only if it carries the label start-services.sh sets)
set -Euo pipefail
S=${RUNYARD_INFRA_DIR:-/tmp/runyard-infra}
DOCKER_IMAGE=${RUNYARD_INFRA_DOCKER_IMAGE:-runyard-test/python:3.11}
PURGE=0 REMOVE_IMAGE=0
for a in "$@"; do
  case $a in
    --purge) PURGE=1 ;;
    --remove-image) REMOVE_IMAGE=1 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[services-stop %s] %s\n' "$(date +%T)" "$*"; }
[[ -d $S ]] || { log "no state dir $S: nothing to stop"; exit 0; }
[[ -e $S/.runyard-infra ]] || { echo "$S has no .runyard-infra marker; refusing to touch it" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 1; }
export SLURM_CONF=$S/slurm/slurm.conf DOCKER_HOST=unix:///var/run/docker.sock
cd /
exec 9>"$S/.lock"
flock -w 120 9 || { echo "start-services.sh still holds $S/.lock" >&2; exit 1; }
rm -f "$S/env.sh"   # the facts are stale from now on
T0=$(date +%s.%N)
rc=0

pid_of() {  # PIDFILE EXE_BASENAME -> prints the PID if it is alive (no zombie) and runs that executable
  local pid exe
  [[ -s $1 ]] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null <"$1"); [[ -n $pid && -d /proc/$pid ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $(basename "${exe% (deleted)}") == "$2"* ]] || return 1
  echo "$pid"
}

stop_one() {  # NAME PIDFILE EXE_BASENAME TIMEOUT_S
  local name=$1 pidfile=$2 exe=$3 timeout=$4 pid i
  if ! pid=$(pid_of "$pidfile" "$exe"); then
    if [[ -e $pidfile ]]; then log "$name: not running (stale PID file removed)"; rm -f "$pidfile"; fi
    return 0
  fi
  log "$name: SIGTERM to pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do pid_of "$pidfile" "$exe" >/dev/null || break; sleep 0.1; done
  if pid_of "$pidfile" "$exe" >/dev/null; then
    log "$name: still alive after ${timeout}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5
  fi
  if [[ -d /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
    log "$name: pid $pid did not exit"; rc=1
  else
    rm -f "$pidfile"
  fi
}

# 1. Slurm: cancel this cluster's jobs first so no slurmstepd is left behind, then the daemons
if pid_of "$S/slurm/slurmctld.pid" slurmctld >/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "slurm: cancelling jobs $jobs"
    # shellcheck disable=SC2086  # a list of job ids
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.1; done
  fi
fi
stop_one slurmd "$S/slurm/slurmd.pid" slurmd 20
stop_one slurmctld "$S/slurm/slurmctld.pid" slurmctld 20
stop_one slurmdbd "$S/slurm/slurmdbd.pid" slurmdbd 20
stop_one mariadbd "$S/mysql/mysqld.pid" mariadbd 60
stop_one munged "$S/munge/munged.pid" munged 10
if [[ -f $S/slurm/etc-link-created && -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$S/slurm/slurm.conf" ]]; then
  rm -f /etc/slurm/slurm.conf "$S/slurm/etc-link-created"; log "removed the /etc/slurm/slurm.conf symlink"
fi

# 2. our sshd (a system sshd has another PID file and is never touched)
stop_one sshd "$S/ssh/sshd.pid" sshd 10

# 3. Docker: the image on request, then dockerd only if start-services.sh started it
if [[ $REMOVE_IMAGE == 1 ]] && timeout 10 docker info >/dev/null 2>&1; then
  if [[ -n $(docker image inspect -f '{{index .Config.Labels "org.runyard.test-image-recipe"}}' "$DOCKER_IMAGE" 2>/dev/null) ]]; then
    docker rmi "$DOCKER_IMAGE" >/dev/null && log "removed image $DOCKER_IMAGE"
  fi
fi
stop_one dockerd "$S/docker/dockerd.pid" dockerd 60

if [[ $PURGE == 1 ]]; then
  if ((rc == 0)); then rm -rf -- "$S" && log "purged $S"; else log "not purging $S: something did not stop"; fi
fi
log "done in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (rc=$rc)"
exit $rc
