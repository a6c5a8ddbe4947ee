# shellcheck shell=bash
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

# proc_tree PID... : those processes, every process in a session of one of them (except this shell's own
# session), and every descendant of all these, one PID a line; zombies left out (they have exited). For daemons
# without PID files of their own, e.g. a Ray head's dozens of processes (infra/ray-head.sh). A session's ID
# cannot be reused while a process of it is alive, so a session reached through a live PID is that PID's.
proc_tree() {
  # /proc/PID/stat: "PID (COMM) STATE PPID PGRP SID ..."; COMM may hold spaces and ')' (cat goes on past a
  # process that has just exited, and fails then, awk would stop)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v seeds="$*" -v self=$$ '
    {
      i = length($0); while (i > 0 && substr($0, i, 1) != ")") i--
      split(substr($0, i + 2), f, " ")
      pid = $1 + 0; state[pid] = f[1]; ppid[pid] = f[2] + 0; sid[pid] = f[4] + 0
    }
    END {
      n = split(seeds, s, /[^0-9]+/)
      for (k = 1; k <= n; k++) if (s[k] != "" && ((s[k] + 0) in state)) { p = s[k] + 0; mine[p] = 1; sids[sid[p]] = 1 }
      delete sids[0]; delete sids[1]; if (self in sid) delete sids[sid[self]]
      for (p in state) if (sid[p] in sids) mine[p] = 1
      do { grew = 0; for (p in state) if (!(p in mine) && (ppid[p] in mine)) { mine[p] = 1; grew = 1 } } while (grew)
      for (p in mine) if (p + 0 > 1 && p + 0 != self && state[p] != "Z") print p
    }'
}
