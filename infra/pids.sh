# pids.sh - PID-file helpers shared by start-services.sh and stop-services.sh (sourced, not run)

# pid_alive PIDFILE EXE_BASENAME: the PID file's process exists, is no zombie, and runs that executable
# (a PID file from an earlier boot may name a reused PID)
pid_alive() {
  local pid exe
  [[ -s $1 ]] || return 1
  pid=$(pid_of "$1"); [[ -n $pid && -d /proc/$pid ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $(basename "${exe% (deleted)}") == "$2"* ]]
}
pid_of() { tr -dc '0-9' 2>/dev/null <"$1"; }
# pid_gone PID: the process has exited (it may stay a zombie until its parent reaps it). An exiting process
# loses /proc/PID/exe before it is gone, so pid_alive turning false does not mean that its port is free yet.
pid_gone() { [[ ! -d /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# stop_pidfile PIDFILE EXE_BASENAME TIMEOUT_S [LOG_FUNCTION]: SIGTERM, SIGKILL after TIMEOUT_S, then wait until the
# process is gone and remove the PID file; status 1 when it did not exit. Only a live EXE_BASENAME is signalled.
stop_pidfile() {
  local pidfile=$1 exe=$2 timeout=$3 say=${4:-:} pid i
  if ! pid_alive "$pidfile" "$exe"; then
    if [[ -e $pidfile ]]; then "$say" "$exe: not running (stale PID file removed)"; rm -f "$pidfile"; fi
    return 0
  fi
  pid=$(pid_of "$pidfile")
  "$say" "$exe: SIGTERM to pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do pid_gone "$pid" && break; sleep 0.1; done
  if ! pid_gone "$pid" && pid_alive "$pidfile" "$exe"; then
    "$say" "$exe: still alive after ${timeout}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do pid_gone "$pid" && break; sleep 0.1; done
  fi
  pid_gone "$pid" || { "$say" "$exe: pid $pid did not exit"; return 1; }
  rm -f "$pidfile"
}
