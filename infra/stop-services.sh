#!/usr/bin/env bash
# stop-services.sh - stop what infra/start-services.sh started, and nothing else.
# Only processes named by PID files inside the state dir are signalled, and only when /proc/PID/exe is the
# expected daemon (guards against PID reuse).  A Docker engine this script did not start is never touched.
# The Ray head has dozens of processes and no PID files: infra/ray-head.sh stops exactly those of the bed's head
# (found by a marker in their environment and their session); never `ray stop`, which kills every Ray process.
#   --purge         also delete the state dir (keys, Slurm state, accounting DB, logs)
#   --remove-image  also remove the test image (only if it carries the label start-services.sh sets)
set -Euo pipefail
INFRA=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/pids.sh
source "$INFRA/pids.sh"
S=${RUNYARD_INFRA_DIR:-/tmp/runyard-infra}
DOCKER_IMAGE=${RUNYARD_INFRA_DOCKER_IMAGE:-runyard-test/python:3.11}
PURGE=0 REMOVE_IMAGE=0
for a in "$@"; do
  case $a in
    --purge) PURGE=1 ;;
    --remove-image) REMOVE_IMAGE=1 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
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

stop_one() { stop_pidfile "$@" log || rc=1; }  # PIDFILE EXE_BASENAME TIMEOUT_S

# 0. the Ray head (its jobs' processes too)
if [[ -d $S/ray ]]; then bash "$INFRA/ray-head.sh" stop "$S/ray" || rc=1; fi

# 1. Slurm: cancel this cluster's jobs first so no slurmstepd is left behind, then the daemons
if pid_alive "$S/slurm/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "slurm: cancelling jobs $jobs"
    # shellcheck disable=SC2086  # a list of job ids
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.1; done
  fi
fi
# one slurmd per node (slurmd-<node>.pid), and slurmd.pid of the one-node bed before issue 10
for f in "$S"/slurm/slurmd-*.pid "$S/slurm/slurmd.pid"; do [[ -e $f ]] && stop_one "$f" slurmd 20; done
stop_one "$S/slurm/slurmctld.pid" slurmctld 20
stop_one "$S/slurm/slurmdbd.pid" slurmdbd 20
stop_one "$S/mysql/mysqld.pid" mariadbd 60
stop_one "$S/munge/munged.pid" munged 10
if [[ -f $S/slurm/etc-link-created && -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$S/slurm/slurm.conf" ]]; then
  rm -f /etc/slurm/slurm.conf "$S/slurm/etc-link-created"; log "removed the /etc/slurm/slurm.conf symlink"
fi

# 2. the bastion and the cluster behind it (their socat listeners; the network namespace of the cluster behind it goes
# with its listener and its last session), then our sshd (a system sshd has another PID file and is never touched)
stop_one "$S/bastion/bastion.pid" socat 10
stop_one "$S/bastion/cluster.pid" socat 10
stop_one "$S/ssh/sshd.pid" sshd 10

# 3. Docker: the image on request, then dockerd only if start-services.sh started it
if [[ $REMOVE_IMAGE == 1 ]] && timeout 10 docker info >/dev/null 2>&1; then
  if [[ -n $(docker image inspect -f '{{index .Config.Labels "org.runyard.test-image-recipe"}}' "$DOCKER_IMAGE" 2>/dev/null) ]]; then
    docker rmi "$DOCKER_IMAGE" >/dev/null && log "removed image $DOCKER_IMAGE"
  fi
fi
stop_one "$S/docker/dockerd.pid" dockerd 60

if [[ $PURGE == 1 ]]; then
  if ((rc == 0)); then rm -rf -- "$S" && log "purged $S"; else log "not purging $S: something did not stop"; fi
fi
log "done in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (rc=$rc)"
exit $rc
