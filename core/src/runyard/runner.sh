#!/usr/bin/env bash
# The in-job runner for Script tasks, for hosts where no Python start is wanted:
#   bash runner.sh TASK_DIR ATTEMPT PROGRAM [ARGS...]
# It follows the same protocol as runner.py (see its docstring, and docs/plugins.md) and
# writes the same files into TASK_DIR/attempt-ATTEMPT:
#   claim.json   first, exclusively (noclobber), in one write: a second runner of the
#                attempt exits 75 and touches nothing
#   stdout.log, stderr.log   byte-exact copies (one `tee` per stream)
#   journal.log  "<unix time> <o|e> <text>" per line, read back from the two logs (bash
#                reads a file fast, a pipe a byte at a time): lines are stamped when the
#                runner sees them (within 0.1 s), what is left when a stream has ended is
#                stamped by `nl` in one go; a line longer than 1 MiB is journalled in
#                pieces; bash may lose what follows a NUL byte in a line (the text view)
#   heartbeat    every RUNYARD_HEARTBEAT_INTERVAL seconds (default 5, 0: none)
#   result.json  last, atomically, into space reserved at the start (padded with blanks)
# The program runs in its own process group (set -m) in the runner's session. TERM, INT
# and HUP sent to the runner are passed on to that group, then SIGKILL after
# RUNYARD_CANCEL_GRACE seconds (default 5); USR1 and USR2 are passed on. When the
# program's main process has ended, whatever it left in its group is SIGKILLed, the
# output drained (for at most 2 s), and the result written: a signal N is exit code
# 128+N. A log that cannot be written (disk full) ends the program the same way, with
# "disk full: ..." as the error.
# The program sees RUNYARD_ATTEMPT_DIR (RUNYARD_TASK_DIR/attempt-N, else this runner's
# folder) and this folder's _shim/ at the end of PYTHONPATH (`import runyard.job` where
# runyard is not installed). RUNYARD_PREEMPT_SIGNAL (a signal's name: USR1): on that
# signal the runner first creates $RUNYARD_ATTEMPT_DIR/preempting, then passes it on.
# Needs bash >= 5 ($EPOCHREALTIME) and coreutils (tee, mv, nl; mkdir when the attempt
# folder does not exist yet). Every fork and exec here is paid once per task: keep them
# few (the local executor's 1000-task benchmark is mostly this script).
# The whole script is one { ...; } block: bash reads it all before running any of it, so a
# runner.sh replaced on disk (an upgrade of runyard) never breaks a task that is running.
{
a=$1/attempt-$2
t=${1%/} n=$2
t=${t##*/}
shift 2
[[ -d $a ]] || mkdir -p -- "$a" || exit 70

js() {  # REPLY: $1 as a JSON string; null when empty
  local s=$1
  [[ -n $s ]] || { REPLY=null; return; }
  s=${s//\\/\\\\} s=${s//\"/\\\"}
  REPLY=\"${s//[$'\001'-$'\037']/ }\"
}
now() { REPLY=${EPOCHREALTIME/[!0-9]/.}; }  # unix time, whatever the locale's decimal point
pipe() {  # pipe R W: a new pipe, read end in $R, write end in $W
  local -n r=$1 w=$2
  exec {r}<<<''  # bash >= 5.1 writes a short here-string into a pipe: no fork
  if [[ -p /dev/fd/$r ]]; then
    exec {w}<>"/dev/fd/$r"
    read -r -u "$r"
  else  # bash 5.0: a temporary file
    exec {r}<&- {w}<> <(:)
    exec {r}<"/dev/fd/$w"
  fi
}
usec() {  # REPLY: $1 seconds (5, 0.5, 2.25) in microseconds, or $2 when $1 is no number
  [[ $1 =~ ^([0-9]*)(\.([0-9]*))?$ && $1 != ?(.) ]] || { REPLY=$2; return; }
  local f=${BASH_REMATCH[3]}000000
  REPLY=$((10#${BASH_REMATCH[1]:-0} * 1000000 + 10#${f:0:6}))
}

# --- the claim: first, exclusive --------------------------------------------------------
IFS=' ' read -r -a l 2>/dev/null </proc/$$/stat && [[ ${l[1]} == *')' ]] || l=()  # (bash): no blank
js "$RUNYARD_LAUNCH_ID"
c="{\"launch\": $REPLY, \"pid\": $$, \"starttime\": ${l[21]:-null}"
js "$HOSTNAME"
c+=", \"host\": $REPLY"
now
c+=", \"time\": $REPLY"
js "$SLURM_JOB_ID"
c+=", \"slurm_job_id\": $REPLY"
js "$SLURM_ARRAY_JOB_ID"
c+=", \"slurm_array_job_id\": $REPLY"
js "$SLURM_ARRAY_TASK_ID"
c+=", \"slurm_array_task_id\": $REPLY}"
set -C
if ! { printf '%s\n' "$c" >"$a/claim.json"; } 2>/dev/null; then
  if [[ -e $a/claim.json ]]; then
    IFS= read -r -d '' l <"$a/claim.json"
    printf 'runyard runner: attempt %s of task %s was claimed already (%s); not running it twice\n' \
      "$n" "$t" "${l%$'\n'}" >&2
    exit 75
  fi
  printf 'runyard runner: cannot create %s\n' "$a/claim.json" >&2
  exit 73
fi
set +C
# --- space for the result: overwritten in place at the end, so a full disk cannot stop it
r=$a/.result.json.tmp
printf '%511s\n' '' >"$r" || exit 74

# --- output: task -> pipe -> tee -> log; tee's errors (disk full) come back on pipe $nr
pipe nr nw
exec {o}> >(LC_ALL=C exec tee -a -- "$a/stdout.log" >/dev/null 2>&$nw {nr}<&-)
to=$!
exec {e}> >(LC_ALL=C exec tee -a -- "$a/stderr.log" >/dev/null 2>&$nw {nr}<&- {o}>&-)
te=$!
exec {nw}>&-

p= pending= kill_at=0 cancelled=
usec "$RUNYARD_CANCEL_GRACE" 5000000
grace=$REPLY
w=${RUNYARD_PREEMPT_SIGNAL^^} w=${w#SIG}  # the preemption warning (USR1): a marker file first
RUNYARD_ATTEMPT_DIR=${RUNYARD_TASK_DIR:+$RUNYARD_TASK_DIR/attempt-$n}  # the task's (runyard/job.py)
export RUNYARD_ATTEMPT_DIR=${RUNYARD_ATTEMPT_DIR:-$a}
l=${BASH_SOURCE[0]%/*}
[[ $BASH_SOURCE == */* ]] || l=.
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$l/_shim  # `import runyard.job` without runyard
fwd() {  # a signal to the runner: to the task's group; TERM, INT, HUP: SIGKILL after the grace
  [[ $1 == "$w" ]] && printf '%s\n' "$EPOCHREALTIME" 2>/dev/null >>"$RUNYARD_ATTEMPT_DIR/preempting"
  [[ -n $p ]] || { pending+=" $1"; return; }
  kill -s "$1" -- "-$p" 2>/dev/null
  [[ $1 == @(TERM|INT|HUP) ]] && (( ! kill_at )) && kill_at=$((${EPOCHREALTIME/[!0-9]/} + grace)) cancelled=1
}
leftovers() {  # SIGKILL every other process of the session this runner leads (a cancelled
  # task's other process groups: `set -m` jobs); nothing where it leads none (a batch job)
  local f l pid IFS=' '
  IFS=' ' read -r -a l </proc/$$/stat || return
  [[ ${l[5]} == "$$" ]] || return  # field 6: the session (no blank in "(bash)")
  for f in /proc/[0-9]*/stat; do
    IFS= read -r l <"$f" 2>/dev/null || continue
    l=${l##*) }
    set -f
    set -- $l
    set +f
    pid=${f//[!0-9]/}
    [[ $4 == "$$" && $pid != @("$$"|"$to"|"$te") ]] && kill -KILL "$pid" 2>/dev/null  # not the tees
  done
}
for s in TERM INT HUP USR1 USR2 $w; do trap "fwd $s" "$s" 2>/dev/null; done

now
start=$REPLY
set -m
"$@" >&$o 2>&$e {o}>&- {e}>&- {nr}<&- &
p=$!
set +m
exec {o}>&- {e}>&-
for s in $pending; do fwd "$s"; done
LC_ALL=C IFS=  # the task has its environment: from here on, byte-wise and fast
exec 6>>"$a/journal.log" {ro}<>"$a/stdout.log" {re}<>"$a/stderr.log"
pipe er ew  # why a journal write failed

sigs=(0 HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP
  TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH POLL PWR SYS)
po=() pe=() lo=0 le=0 error= jdead=
usec "${RUNYARD_HEARTBEAT_INTERVAL:-5}" 5000000
beat=$REPLY

fail() {  # fail MESSAGE: the attempt fails with it (the first one); the task is stopped
  [[ -n $error ]] && return
  error=$1
  [[ -n $ended ]] || fwd TERM
}
journal() {  # journal CODE FD PARTS LEN: journal the new lines of the log open on FD
  local -n parts=$3 len=$4
  local lines k
  mapfile -n 10000 -u "$2" lines
  k=${#lines[@]}
  (( k )) || return 0
  got=1 full=
  (( k == 10000 )) && full=1  # so more is waiting, maybe
  if (( ${#parts[@]} )) && [[ k -gt 1 || ${lines[0]} == *$'\n' ]]; then  # the open line ends here
    lines[0]=${parts[*]}${lines[0]} parts=() len=0
  fi
  if [[ ${lines[k-1]} != *$'\n' ]]; then  # a last line still open: kept for later
    parts+=("${lines[k-1]}")
    (( len += ${#lines[k-1]} ))
    unset 'lines[k-1]'
    if (( ! --k )); then
      (( len >= 1048576 )) || return 0
      lines=("${parts[*]}"$'\n') parts=() len=0  # a very long line: journalled in pieces
    fi
  fi
  [[ -n $jdead ]] && return 0
  printf '%s' "${lines[*]/#/$EPOCHREALTIME $1 }" 2>&$ew >&6 || jfail
}
jfail() {  # the journal cannot be written: "runner.sh: line N: printf: write error: REASON"
  local l
  IFS= read -r -t 1 -u "$er" l
  jdead=1
  fail "disk full: cannot write journal.log (${l##*: })"
}
finish() {  # finish CODE FD PARTS LEN: journal the rest of a stream that has ended
  local -n parts=$3
  local got full t
  journal "$@"
  if [[ -n $full && -z $jdead ]]; then  # a backlog: nl stamps it all at once, far faster
    t=$EPOCHREALTIME  # (every line numbered with the same number: the time)
    nl -b a -d $'\x1f\x1e' -i 0 -v "${t%.*}" -w 1 -n ln -s ".${t#*.} $1 " <&"$2" 2>&$ew >&6 || jfail
    return
  fi
  (( ${#parts[@]} )) && [[ -z $jdead ]] && { printf '%s %s %s\n' "$EPOCHREALTIME" "$1" "${parts[*]}" 2>&$ew >&6 || jfail; }
}

gone() {  # whether the task's main process has ended. Where there is /proc, by its state:
  # `kill -0` says yes to a zombie, and bash 5.2 under load may leave its child unreaped for
  # good while it runs only builtins (seen: 5 runners of 1000 waited forever on a dead task)
  local s
  (( proc )) || { ! kill -0 "$p" 2>/dev/null; return; }
  { IFS= read -r s <"/proc/$p/stat"; } 2>/dev/null || return 0
  s=${s##*) }
  [[ $s == [ZX]* ]]
}
[[ -r /proc/$$/stat ]] && proc=1 || proc=0

run() {  # until the task has ended and its output is in: then $rc is its exit status
  local got full now next=0 ended= drain=0 io=1 never= msg= line st
  while :; do
    got=
    journal o "$ro" po lo
    journal e "$re" pe le
    now=${EPOCHREALTIME/./}
    if (( beat && now >= next )); then
      printf '%s\n' "$EPOCHREALTIME" 2>/dev/null >"$a/heartbeat"
      next=$((now + beat))
    fi
    if [[ -z $ended ]] && gone; then  # its main process has ended:
      kill -KILL -- "-$p" 2>/dev/null  # so does whatever it left behind
      [[ -n $cancelled ]] && leftovers
      ended=1 kill_at=0 drain=$((now + 2000000)) end=$EPOCHREALTIME
    fi
    if (( kill_at && now >= kill_at )); then
      kill -KILL -- "-$p" 2>/dev/null
      kill_at=0
    fi
    if [[ -n $ended ]]; then
      (( io )) || break
      if (( now >= drain )); then  # something that escaped the group holds the output pipes
        (( now >= drain + 1000000 )) && break
        kill "$to" "$te" 2>/dev/null
      fi
    fi
    if [[ -n $got ]]; then  # more output may wait: on with it, unless the tees have news
      (( io )) && read -t 0 -u "$nr" || continue
    fi
    if (( ! io )); then  # the task closed its output but runs on
      [[ -n $never ]] || exec {never}<> <(:)
      read -r -t 0.1 -u "$never"
      continue
    fi
    IFS= read -r -t 0.1 -u "$nr" line
    st=$?
    (( st > 128 )) && { msg+=$line; continue; }
    line=$msg$line msg=
    if [[ -n $line ]]; then  # tee could not write a log: "tee: PATH: REASON"
      st=${line%: *}
      fail "disk full: cannot write ${st##*/} (${line##*: })"
    elif (( st )); then  # both tees have ended: the output is complete
      io=0
      exec {nr}<&-
    fi
  done
  finish o "$ro" po lo
  finish e "$re" pe le
  wait "$p" 2>/dev/null
  rc=$?
}
run
sig=null
if (( rc > 128 )); then
  sig=$((rc - 128))
  if [[ -z $error ]]; then
    if (( sig == 15 )); then
      error="terminated (SIGTERM)"
    else
      error="killed by signal $sig${sigs[sig]:+ (SIG${sigs[sig]})}"
    fi
  fi
fi
js "$error"
printf '{"exit_code": %d, "start": %s, "end": %s, "error": %s, "signal": %s}' \
  "$rc" "$start" "$end" "$REPLY" "$sig" 1<>"$r"
mv -f -- "$r" "$a/result.json"
exit "$rc"
}
