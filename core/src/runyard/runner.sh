#!/usr/bin/env bash
# The in-job runner for Script tasks, for hosts where no Python start is wanted:
#   bash runner.sh TASK_DIR ATTEMPT PROGRAM [ARGS...]
# Writes the same files as runner.py into TASK_DIR/attempt-ATTEMPT: stdout.log, stderr.log,
# journal.log ("<unix time> <o|e> <text>" per line), heartbeat, and result.json last, atomically.
# Needs bash >= 5 ($EPOCHREALTIME); no other program but mv (and mkdir when the
# attempt folder does not exist yet). Every fork and exec here is paid once per task: keep
# them few (the local executor's 1000-task benchmark is mostly this script).
a=$1/attempt-$2
shift 2
[[ -d $a ]] || mkdir -p -- "$a" || exit 70
shopt -s lastpipe  # a pipeline's last part runs in this shell, not in a forked one
interval=${RUNYARD_HEARTBEAT_INTERVAL:-5}
stamp() {  # stamp CODE [BEAT]: copy stdin to fd 5 (raw) and, timestamped, to fd 6 (journal);
  # with BEAT, also write the heartbeat file every $interval seconds, from this same loop
  # (read -t wakes it when the task is quiet): no process of its own
  local l part= beat=${2:-} next=0 st
  [[ $interval == 0 ]] && beat=
  while :; do
    if [[ -n $beat ]]; then
      if (( EPOCHSECONDS >= next )); then
        printf '%s\n' "$EPOCHREALTIME" > "$beat"
        next=$((EPOCHSECONDS + interval))
      fi
      IFS= read -r -t "$interval" l; st=$?
      if (( st > 128 )); then part+=$l; continue; fi  # timed out: keep the partial line
    else
      IFS= read -r l; st=$?
    fi
    l=$part$l part=
    (( st == 0 )) || break
    printf '%s\n' "$l" >&5
    printf '%s %s %s\n' "$EPOCHREALTIME" "$1" "$l" >&6
  done
  if [[ -n $l ]]; then  # a last line with no newline: keep the raw log byte-exact
    printf '%s' "$l" >&5
    printf '%s %s %s\n' "$EPOCHREALTIME" "$1" "$l" >&6
  fi
}
exec 6>>"$a/journal.log"
start=$EPOCHREALTIME
# stdout and stderr each through their stamp; the exit code comes back as the subshell's
{ "$@" 2>&1 1>&3 3>&- 6>&- | stamp e 5>>"$a/stderr.log"; exit "${PIPESTATUS[0]}"; } 3>&1 | stamp o "$a/heartbeat" 5>>"$a/stdout.log"
rc=${PIPESTATUS[0]}
end=$EPOCHREALTIME
exec 6>&-
error=null
(( rc > 128 )) && error="\"killed by signal $((rc - 128))\""
printf '{"exit_code": %d, "start": %s, "end": %s, "error": %s}\n' "$rc" "$start" "$end" "$error" > "$a/.result.json.tmp"
mv -f -- "$a/.result.json.tmp" "$a/result.json"
exit "$rc"
