#!/usr/bin/env bash
# ray-head.sh - one private Ray head on 127.0.0.1, and nothing else: start it, stop it, kill it, list it.
#   ray-head.sh start DIR PORT_BASE [VENV]  start a head (VENV: a venv with ray[default]; default DIR/venv), or reuse
#                                           the one of DIR when its Jobs API answers; waits until it does
#   ray-head.sh stop DIR [TIMEOUT_S]        SIGTERM to every process of DIR's head, SIGKILL after TIMEOUT_S (5: Ray's
#                                           GCS never ends after SIGTERM, it hangs flushing its events)
#   ray-head.sh kill DIR                    SIGKILL to every process of DIR's head at once (a crash, for tests)
#   ray-head.sh pids DIR                    the PIDs of every process of DIR's head, one a line
#   ray-head.sh status DIR                  exit 0 when DIR's head runs and its Jobs API answers
# infra/start-services.sh runs the test bed's head with it (DIR $RUNYARD_INFRA_DIR/ray), tests their own heads
# (tests/conftest.py, fixture own_ray_head). Never `ray stop`: it kills every Ray process on the machine.
#
# Everything listens on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: without it Ray swaps the node address
# 127.0.0.1 for the machine's and its GCS and raylet listen on all interfaces), on fixed ports from PORT_BASE:
#   +0 dashboard (HTTP: Jobs API)  +1 GCS  +2 Ray client server  +3 raylet (node manager)  +4 object manager
#   +5 metrics export  +6 dashboard agent (HTTP)  +7 dashboard agent (gRPC)  +8 runtime env agent
#   +9 autoscaler metrics  +10 dashboard metrics  +20..+99 workers (each worker and driver takes one)
# Ray's temp dir is DIR/temp (unix socket paths under it must stay under 108 bytes: keep DIR short); its session
# logs are in DIR/temp/session_latest/logs (a job's driver: job-driver-<submission id>.log), ray start's in
# DIR/head.log. A head's processes are found by the marker RUNYARD_RAY_HEAD=DIR/temp in their environment (Ray
# hands its environment down to every process it starts) and by their session (ray start runs in a new one):
# the session takes in the processes that overwrite their environment with their title (ray::DashboardAgent),
# descendants those in sessions of their own (a job's entrypoint).
set -Eeuo pipefail
umask 022
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/pids.sh
source "$HERE/pids.sh"
cd /   # the head's processes inherit the cwd (and so does a job's entrypoint): never pin a checkout or temp dir

RAY_VERSION=2.60.0   # named in messages only: infra/start-services.sh installs it
START_TIMEOUT=${RUNYARD_RAY_HEAD_TIMEOUT:-180}   # ray start, then its Jobs API (a loaded 2-core machine is slow)
NUM_CPUS=4          # more than this machine's 2 cores: several jobs of the tests at once
OBJECT_STORE_MB=512

say() { printf '[ray-head %s] %s\n' "$(date +%T)" "$*"; }
die() { printf '[ray-head %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }
usage() { sed -n '2,8p' "$HERE/ray-head.sh" >&2; exit 2; }

(( $# >= 2 )) || usage
CMD=$1 DIR=${2%/}
[[ $DIR == /* ]] || die "DIR must be an absolute path (got '$DIR')"
T=$DIR/temp
MARK="RUNYARD_RAY_HEAD=$T"

# every process of this head (see the header); nothing when none runs
head_pids() {
  local seeds
  seeds=$(grep -lzxF -- "$MARK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | tr '\n' ' ') || true
  [[ -n ${seeds// /} ]] || return 0
  # shellcheck disable=SC2086  # a list of PIDs
  proc_tree $seeds | sort -n
}

# http_ok PORT PATH: GET http://127.0.0.1:PORT/PATH answers 200 (bash's /dev/tcp: a fresh machine may lack curl)
http_ok() {
  local fd line
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&"$fd"
  IFS= read -r -t 10 line <&"$fd" || line=""
  exec {fd}>&-
  [[ $line == "HTTP/1."?" 200 "* ]]
}

dashboard_port() { local p; p=$(cat "$DIR/head.port" 2>/dev/null) || return 1; [[ $p =~ ^[0-9]+$ ]] && echo "$p"; }
answers() { local p; p=$(dashboard_port) && http_ok "$p" /api/jobs/ 2>/dev/null; }

# signal_all SIGNAL TIMEOUT_S: signal every process of the head once, and each that shows up meanwhile (a raylet may
# start a worker), until none is left; SIGKILL goes again to every one each round. Status 1 if some are left after
# TIMEOUT_S.
signal_all() {
  local sig=$1 timeout=$2 deadline pids p todo
  local -A sent=()
  deadline=$(( $(date +%s) + timeout ))
  while pids=$(head_pids) && [[ -n $pids ]]; do
    (( $(date +%s) < deadline )) || return 1
    todo=()
    for p in $pids; do
      if [[ $sig == KILL || -z ${sent[$p]:-} ]]; then todo+=("$p"); sent[$p]=1; fi
    done
    (( ${#todo[@]} == 0 )) || kill "-$sig" "${todo[@]}" 2>/dev/null || true
    sleep 0.2
  done
}

stop_head() {  # TIMEOUT_S: SIGTERM, then SIGKILL
  local n
  n=$(head_pids | wc -l)
  if (( n == 0 )); then rm -f "$DIR/head.pids"; return 0; fi
  say "stopping the Ray head of $DIR ($n processes): SIGTERM"
  if ! signal_all TERM "$1"; then
    say "still $(head_pids | wc -l) processes after ${1}s: SIGKILL"
    signal_all KILL 10 || die "processes of the Ray head of $DIR did not exit: $(head_pids | tr '\n' ' ')"
  fi
  rm -f "$DIR/head.pids"
}

start_head() {  # PORT_BASE VENV
  local base=$1 venv=${2:-$DIR/venv} ray conf busy t0 deadline i
  if ! [[ $base =~ ^[0-9]+$ ]] || (( base < 1024 || base + 99 > 65535 )); then die "bad PORT_BASE '$base'"; fi
  # the longest unix socket path Ray makes: DIR/temp/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store
  (( ${#T} <= 40 )) || die "DIR is too long for Ray's unix socket paths (107 bytes at most): '$T' has ${#T} characters, at most 40 fit"
  ray=$venv/bin/ray
  [[ -x $ray ]] || die "no ray in $venv (a venv with ray[default]==$RAY_VERSION; infra/start-services.sh makes one)"
  local args=(
    --head --disable-usage-stats --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --temp-dir="$T"
    --dashboard-port="$base" --port=$((base + 1)) --ray-client-server-port=$((base + 2))
    --node-manager-port=$((base + 3)) --object-manager-port=$((base + 4)) --metrics-export-port=$((base + 5))
    --dashboard-agent-listen-port=$((base + 6)) --dashboard-agent-grpc-port=$((base + 7))
    --runtime-env-agent-port=$((base + 8)) --min-worker-port=$((base + 20)) --max-worker-port=$((base + 99))
    --num-cpus="$NUM_CPUS" --num-gpus=0 --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024))
  )
  # ports without a flag of ray start (their defaults, 44217 and 44227, would collide between two heads)
  local envs=(AUTOSCALER_METRIC_PORT=$((base + 9)) DASHBOARD_METRIC_PORT=$((base + 10)))
  conf=$(printf '%s\n' "$venv" "${envs[@]}" "${args[@]}")
  mkdir -p "$DIR" "$T"
  if [[ -n $(head_pids) ]]; then
    if [[ $(cat "$DIR/head.conf" 2>/dev/null) == "$conf" ]] && answers; then
      head_pids >"$DIR/head.pids"
      say "Ray head already running ($(wc -l <"$DIR/head.pids") processes); Jobs API at http://127.0.0.1:$base"
      return 0
    fi
    if [[ $(cat "$DIR/head.conf" 2>/dev/null) == "$conf" ]]; then
      say "the Ray head of $DIR runs but its Jobs API does not answer: restarting it"
    else
      say "the Ray head of $DIR runs with other settings: restarting it"
    fi
    stop_head 5
  fi
  # one ss for every port of the head (a worker port held by another program would fail a job much later)
  busy=$(ss -Hltn 2>/dev/null | awk -v lo="$base" -v hi=$((base + 99)) '{
      n = split($4, a, ":"); p = a[n] + 0
      if (p >= lo && p <= hi && (p <= lo + 10 || p >= lo + 20)) print p }' | sort -nu | tr '\n' ' ')
  [[ -z $busy ]] || die "ports $busy(of the Ray head on $base..$((base + 99))) are held by processes this script did not start: $(ss -Hltnp | awk -v lo="$base" -v hi=$((base + 99)) '{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) print $4, $6 }' | tr '\n' ' '). Stop them, or pick another port base"
  # old sessions (logs, sockets) of heads that are gone: keep the last two
  find "$T" -maxdepth 1 -name 'session_2*' -type d -printf '%T@ %p\n' 2>/dev/null | sort -rn | tail -n +3 \
    | cut -d' ' -f2- | while IFS= read -r old; do rm -rf -- "$old"; done
  printf '%s\n' "$conf" >"$DIR/head.conf"
  echo "$base" >"$DIR/head.port"
  t0=$(date +%s)
  {
    echo "---- $(date -Is) ray start ${args[*]}"
  } >>"$DIR/head.log"
  # env -u: a RAY_ADDRESS or the like of the caller's must not turn this head into a worker of another cluster.
  # PATH: a job's entrypoint gets the head's PATH; the venv's bin first makes its `python3` the venv's (>= 3.10,
  # with ray, as on a real cluster). setsid: a session of the head's own (see the header); ray start leaves its
  # daemons running and exits.
  local unset_ray=() v
  for v in $(compgen -e | grep '^RAY_' || true); do unset_ray+=(-u "$v"); done
  if ! setsid -w env "${unset_ray[@]}" PATH="$venv/bin:$PATH" "$MARK" RAY_USAGE_STATS_ENABLED=0 \
      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "${envs[@]}" \
      timeout "$START_TIMEOUT" "$ray" start "${args[@]}" </dev/null >>"$DIR/head.log" 2>&1; then
    tail -n 25 "$DIR/head.log" >&2
    stop_head 5 || true
    die "ray start failed (log: $DIR/head.log; the head's own logs: $T/session_latest/logs)"
  fi
  deadline=$(( t0 + START_TIMEOUT ))
  until http_ok "$base" /api/jobs/ 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      for i in dashboard.log dashboard_JobHead.log; do
        [[ -f $T/session_latest/logs/$i ]] && { echo "---- last lines of $T/session_latest/logs/$i ----" >&2; tail -n 15 "$T/session_latest/logs/$i" >&2; }
      done
      stop_head 5 || true
      die "the Ray head's Jobs API (http://127.0.0.1:$base/api/jobs/) does not answer ${START_TIMEOUT}s after ray start (logs: $DIR/head.log, $T/session_latest/logs)"
    fi
    sleep 0.2
  done
  head_pids >"$DIR/head.pids"
  say "started a Ray head ($(wc -l <"$DIR/head.pids") processes) in $(( $(date +%s) - t0 )) s; Jobs API at http://127.0.0.1:$base"
}

case $CMD in
  start)
    (( $# >= 3 )) || usage
    start_head "$3" "${4:-}" ;;
  stop)
    stop_head "${3:-5}" ;;
  kill)
    n=$(head_pids | wc -l)
    signal_all KILL 10 || die "processes of the Ray head of $DIR did not exit: $(head_pids | tr '\n' ' ')"
    rm -f "$DIR/head.pids"
    say "killed the Ray head of $DIR ($n processes)" ;;
  pids)
    head_pids ;;
  status)
    [[ -n $(head_pids) ]] && answers ;;
  *)
    usage ;;
esac
