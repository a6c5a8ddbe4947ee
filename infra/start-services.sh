#!/usr/bin/env bash
# start-services.sh - start the REAL services runyard's tests use, on a Debian bookworm machine (as root):
#   ssh     sshd on 127.0.0.1:2222, key-only, its own config and host key, a generated known_hosts
#   bastion a jump host on 127.0.0.1:2223, and "the cluster behind it", a login node on 127.0.0.2:2224 that only the
#           bastion reaches: it listens in a network namespace of its own (unshare --net), where the bastion's sshd runs
#           too, so from this machine's network nothing answers there. Each is a socat that starts one sshd in inetd
#           mode (-i) per connection (the bastion's inside that namespace, the cluster's back in this one, where its
#           sessions reach Slurm); own host keys (in the ssh component's known_hosts), the ssh component's client key;
#           an OpenSSH client config naming them: ssh -F $STATE/bastion/ssh_config runyard-behind
#   slurm   a two-node Slurm 22.05 cluster on this machine: munged, mariadbd + slurmdbd (so sacct works),
#           slurmctld, and one slurmd per node (slurmd -N node1, slurmd -N node2, each on its own port);
#           partitions cpu (default) and gpu (2 fake GPUs as GRES) on node1, multi on both nodes, and the
#           preemption pair low (PriorityTier=1, PreemptMode=REQUEUE) / high (PriorityTier=10) on node2;
#           only low's jobs can be preempted; every daemon on 127.0.0.1
#   docker  the running Docker engine, or a dockerd started here; a Python image built locally (no registry)
#   torch   a venv of its own under the state dir with PyTorch (CPU build) and numpy, installed with pip
#           (pip takes the CPU wheel that lies on this machine's disk; uv would download a CUDA build).
#           Only tests use it (python= of a task); it is never one of runyard's dependencies.
#   chromium  Debian's chromium (headless; installed without recommends): the report tests render runyard's
#           HTML report in it. Nothing runs in the background: each test starts its own browser. Also zsh and
#           fish, whose completion scripts the CLI tests run.
#   ray     one Ray head (Ray 2.60.0 from a venv of its own under the state dir, ray[default] installed with pip,
#           never one of runyard's dependencies) for tests that run Ray Jobs: its Jobs API at
#           http://127.0.0.1:28265, every port fixed (infra/ray-head.sh: port base +0..+10, workers +20..+99),
#           all on 127.0.0.1, 4 CPUs, no GPU, usage stats off; a job's entrypoint finds the venv's python3 first
#           on its PATH. Started and stopped by infra/ray-head.sh, by its processes' PIDs: never `ray stop`.
# Idempotent: installs only missing packages, starts only what is not running, rewrites a config only when
# its content changes (and then restarts that daemon).  On success it writes shell-sourceable facts to
# $STATE/env.sh; on failure it exits non-zero with a message and removes env.sh.
# Stop with infra/stop-services.sh (it stops only daemons whose PID files live in the state dir).
#
# Settings (environment, all optional):
#   RUNYARD_INFRA_DIR         /tmp/runyard-infra    state dir: configs, keys, logs, PID files, Slurm state, DB
#   RUNYARD_INFRA_COMPONENTS  "ssh bastion slurm docker torch chromium ray"   what to start; "" starts nothing
#   RUNYARD_INFRA_SSH_PORT    2222
#   RUNYARD_INFRA_BASTION_PORT  2223                the bastion, on 127.0.0.1
#   RUNYARD_INFRA_BASTION_TARGET_PORT  2224         the cluster behind it, on 127.0.0.2 in its own network namespace
#   RUNYARD_INFRA_SLURMCTLD_PORT / _SLURMD_PORT / _SLURMDBD_PORT / _MYSQL_PORT    6817 / 6818 / 6819 / 3307
#   RUNYARD_INFRA_SLURMD2_PORT  6820                slurmd of node2 (node1's is _SLURMD_PORT)
#   RUNYARD_INFRA_TORCH_PYTHON  python3             the Python the torch venv is made from (3.11: the wheel on disk)
#   RUNYARD_INFRA_DOCKER_IMAGE  runyard-test/python:3.11
#   RUNYARD_INFRA_RAY_PYTHON    python3             the Python the ray venv is made from (3.10 or later)
#   RUNYARD_INFRA_RAY_PORT_BASE 28265               the Ray head's dashboard (Jobs API); its other ports follow it
#   RUNYARD_INFRA_VERIFY      1                     end with smoke tests (sbatch over ssh; docker run; a Ray job)
#   RUNYARD_INFRA_DEBIAN_MIRROR  first URIs: of /etc/apt/sources.list.d/debian.sources, else deb.debian.org
set -Eeuo pipefail
umask 022
INFRA=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/pids.sh
source "$INFRA/pids.sh"
cd /   # daemons inherit the cwd: never pin a checkout or a temp dir

S=${RUNYARD_INFRA_DIR:-/tmp/runyard-infra}
COMPONENTS=${RUNYARD_INFRA_COMPONENTS-ssh bastion slurm docker torch chromium ray}
SSH_HOST=127.0.0.1
SSH_PORT=${RUNYARD_INFRA_SSH_PORT:-2222}
SSH_USER=root
BASTION_HOST=127.0.0.1
BASTION_PORT=${RUNYARD_INFRA_BASTION_PORT:-2223}
BEHIND_HOST=127.0.0.2   # the cluster behind the bastion, in a network namespace of its own
BEHIND_PORT=${RUNYARD_INFRA_BASTION_TARGET_PORT:-2224}
SLURM_CLUSTER=runyard-test
SLURM_NODES=(node1 node2)   # two slurmd daemons on this machine (Debian's Slurm is built with MULTIPLE_SLURMD)
SLURM_NODE=${SLURM_NODES[0]}  # the node of the one-node partitions cpu and gpu (and of the fake GPUs)
SLURM_MULTI_PARTITION=multi   # both nodes: jobs with --nodes=2
SLURM_LOW_PARTITION=low       # node2; its jobs are requeued when a job of the high partition needs their CPUs
SLURM_HIGH_PARTITION=high     # node2
FAKE_GPUS=2
SLURMCTLD_PORT=${RUNYARD_INFRA_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${RUNYARD_INFRA_SLURMD_PORT:-6818}
SLURMD2_PORT=${RUNYARD_INFRA_SLURMD2_PORT:-6820}
SLURMD_PORTS=("$SLURMD_PORT" "$SLURMD2_PORT")
TORCH_PYTHON_BASE=${RUNYARD_INFRA_TORCH_PYTHON:-python3}
TORCH_REQUIREMENTS=(torch==2.13.0 numpy)
RAY_PYTHON_BASE=${RUNYARD_INFRA_RAY_PYTHON:-python3}
RAY_VERSION=2.60.0
RAY_REQUIREMENTS=("ray[default]==$RAY_VERSION")
RAY_PORT_BASE=${RUNYARD_INFRA_RAY_PORT_BASE:-28265}
SLURMDBD_PORT=${RUNYARD_INFRA_SLURMDBD_PORT:-6819}
MYSQL_PORT=${RUNYARD_INFRA_MYSQL_PORT:-3307}
DOCKER_SOCK=/var/run/docker.sock
DOCKER_IMAGE=${RUNYARD_INFRA_DOCKER_IMAGE:-runyard-test/python:3.11}
VERIFY=${RUNYARD_INFRA_VERIFY:-1}
DEBIAN_MIRROR=${RUNYARD_INFRA_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l
export DOCKER_HOST="unix://$DOCKER_SOCK"
export SLURM_CONF="$S/slurm/slurm.conf"
unset SLURM_JOB_ID SLURM_JOBID   # never let an enclosing allocation leak into the commands below

# ------------------------------------------------------------------------------------------------- helpers
log()  { printf '[services %s] %s\n' "$(date +%T)" "$*"; }
warn() { printf '[services %s] WARNING: %s\n' "$(date +%T)" "$*" >&2; }
die()  { printf '[services %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }
trap 'printf "[services] ERROR: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
has() { [[ " $COMPONENTS " == *" $1 "* ]]; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
timing() { TIMINGS+=("$(printf '  %-8s %6s s  %s' "$1" "$(elapsed "$2")" "${3:-}")"); }

# wait_for TIMEOUT_S WHAT LOGFILE CMD... : poll CMD until it succeeds, else show the log and fail
wait_for() {
  local timeout=$1 what=$2 logf=$3; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      [[ -f $logf ]] && { echo "---- last lines of $logf ----" >&2; tail -n 25 "$logf" >&2; }
      die "$what is not ready after ${timeout}s (log: $logf)"
    fi
    sleep 0.2
  done
}

require_free_port() {  # PORT WHAT
  if [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then
    die "port $1 (for $2) is held by a process this script did not start: $(ss -Hltnp "sport = :$1" | tr -s ' '). Stop it, or pick another port (see the settings at the top of $0)"
  fi
}

# start_bg LOGFILE CMD... : start a foreground daemon detached from this shell (own session, no tty).
# 9>&- : the daemon must not inherit the lock fd, or the next run would wait for the lock forever.
start_bg() {
  local logf=$1; shift
  setsid "$@" </dev/null >>"$logf" 2>&1 9>&- &
}

# install_file DEST MODE < content : (re)write DEST only when the content differs; status 0 = it changed
install_file() {
  local dst=$1 mode=$2 tmp
  tmp=$(mktemp "$dst.XXXXXX")
  cat >"$tmp"; chmod "$mode" "$tmp"
  if [[ -f $dst ]] && cmp -s "$tmp" "$dst"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$dst"
}

# ----------------------------------------------------------------------------------------------------- apt
POLICY_RC_CREATED=0
cleanup_policy_rc() { if (( POLICY_RC_CREATED )); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi; }
on_exit() {
  local rc=$?
  cleanup_policy_rc
  if (( rc != 0 )); then rm -f "$S/env.sh"; echo "[services] FAILED (exit $rc); no env.sh written" >&2; fi
}
trap on_exit EXIT

apt_install() {  # PKG... : install the missing ones, without recommends, without starting any service
  local missing=() p t0 need_update=0 installed
  # dpkg-query exits 1 when it has never heard of one of the packages (a fresh machine): that is an answer, not a
  # failure, so its status must not reach set -e / pipefail
  installed=" $({ dpkg-query -W -f='${Package}:${Status} ' "$@" 2>/dev/null || true; } | sed 's/:install ok installed / /g') "
  for p in "$@"; do [[ $installed == *" $p "* ]] || missing+=("$p"); done
  (( ${#missing[@]} )) || return 0
  t0=$(now)
  # Postinst scripts would start system daemons (sshd on 0.0.0.0:22, munge, mariadb) unless policy-rc.d says no.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; POLICY_RC_CREATED=1
  fi
  [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit 2>/dev/null) ]] || need_update=1
  for p in "${missing[@]}"; do
    [[ $(apt-cache policy "$p" 2>/dev/null) == *"Candidate: "[0-9]* ]] || need_update=1
  done
  # --no-upgrade: a package named here that is installed after all (a stale answer) is left as it is
  local opts=(-y -q --no-install-recommends --no-upgrade -o DPkg::Lock::Timeout=300)
  if (( need_update )); then
    log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$S/logs/apt.log" 2>&1 || die "apt-get update failed, see $S/logs/apt.log"
  fi
  log "apt-get install ${missing[*]}"
  if ! apt-get install "${opts[@]}" "${missing[@]}" >>"$S/logs/apt.log" 2>&1; then
    log "install failed; refreshing the package lists and retrying once"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$S/logs/apt.log" 2>&1 || true
    apt-get install "${opts[@]}" "${missing[@]}" >>"$S/logs/apt.log" 2>&1 \
      || { tail -n 20 "$S/logs/apt.log" >&2; die "apt-get install ${missing[*]} failed, see $S/logs/apt.log"; }
  fi
  cleanup_policy_rc
  log "installed ${missing[*]} in $(elapsed "$t0") s"
}

# ------------------------------------------------------------------------------------------------ preflight
for c in $COMPONENTS; do
  [[ $c == ssh || $c == bastion || $c == slurm || $c == docker || $c == torch || $c == chromium || $c == ray ]] \
    || die "unknown component '$c' in RUNYARD_INFRA_COMPONENTS (known: ssh bastion slurm docker torch chromium ray)"
done
[[ $S == /* ]] || die "RUNYARD_INFRA_DIR must be an absolute path (got '$S')"
if has bastion; then
  has ssh || die "the bastion component needs the ssh component (its client key and authorized_keys): RUNYARD_INFRA_COMPONENTS=\"ssh bastion ...\""
  # its paths go into socat addresses and sshd and ssh configs as they are
  [[ $S =~ ^[A-Za-z0-9._/+-]+$ ]] || die "for the bastion component, RUNYARD_INFRA_DIR may hold only letters, digits and . _ / + - (got '$S')"
fi
if [[ -n ${COMPONENTS// /} ]]; then
  [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons); to run the tests without these services: RUNYARD_INFRA_COMPONENTS= ./dev.sh test"
fi
mkdir -p "$S/logs"
[[ -e $S/.runyard-infra ]] || echo "state dir of runyard's infra/start-services.sh; delete it only after stop-services.sh" >"$S/.runyard-infra"
exec 9>"$S/.lock"
flock -w 600 9 || die "another start-services.sh holds $S/.lock"
T_ALL=$(now)
HOST_SHORT=$(hostname -s)
# Slurm's daemons bind to the address the host name resolves to (NoCtldInAddrAny, NoInAddrAny): check it before
# anything is installed or started
check_loopback_hostname() {
  local ip
  ip=$(getent ahostsv4 "$HOST_SHORT" | awk 'NR==1 {print $1}') || true
  [[ -n $ip ]] || die "host name '$HOST_SHORT' does not resolve; add '127.0.1.1 $HOST_SHORT' to /etc/hosts"
  [[ $ip == 127.* ]] || die "host name '$HOST_SHORT' resolves to $ip, so Slurm would listen there, not on loopback; add '127.0.1.1 $HOST_SHORT' to /etc/hosts"
}
has slurm && check_loopback_hostname
log "state dir $S; components: ${COMPONENTS:-none}"
[[ -n ${COMPONENTS// /} ]] && apt_install iproute2   # ss; part of most base images

# ============================================================================================== 1. sshd
sshd_basics() {  # USE_PAM: the keys-only login every sshd of the test bed has
  # (StrictModes no: the keys live under /tmp, mode 1777, which StrictModes rejects)
  cat <<EOF
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM $1
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
EOF
}

start_ssh() {
  local t0 d=$S/ssh changed=0 use_pam=no note="already running"
  t0=$(now)
  apt_install openssh-server openssh-client
  mkdir -p "$d" /run/sshd; chmod 700 "$d"; chmod 755 /run/sshd   # /run/sshd: privilege separation dir
  [[ -f $d/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C runyard-test-host -f "$d/ssh_host_ed25519_key"
  [[ -f $d/client_key ]] || ssh-keygen -q -t ed25519 -N '' -C runyard-test-client -f "$d/client_key"
  install_file "$d/authorized_keys" 600 <"$d/client_key.pub" || true
  write_known_hosts
  # With UsePAM no, OpenSSH refuses accounts whose password field starts with '!' (locked); PAM does not.
  [[ $(getent shadow "$SSH_USER" | cut -d: -f2) == '!'* ]] && use_pam=yes
  # SetEnv SLURM_CONF: remote sbatch/squeue/sacct find this cluster without /etc/slurm/slurm.conf.
  if install_file "$d/sshd_config" 600 <<EOF
# generated by runyard infra/start-services.sh
Port $SSH_PORT
ListenAddress $SSH_HOST
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
$(sshd_basics "$use_pam")
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
SetEnv SLURM_CONF=$S/slurm/slurm.conf
LogLevel VERBOSE
EOF
  then changed=1; fi
  /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd rejects its config $d/sshd_config"
  if pid_alive "$d/sshd.pid" sshd && (( changed )); then
    log "sshd config changed: restarting sshd"
    stop_pidfile "$d/sshd.pid" sshd 10 log || die "sshd did not stop"
  fi
  if pid_alive "$d/sshd.pid" sshd; then
    log "sshd already running (pid $(pid_of "$d/sshd.pid")) on $SSH_HOST:$SSH_PORT"
  else
    require_free_port "$SSH_PORT" sshd
    # an absolute -f path: sshd re-execs itself from / (on SIGHUP and per connection)
    start_bg "$d/sshd.log" /usr/sbin/sshd -D -e -f "$d/sshd_config"
    log "started sshd on $SSH_HOST:$SSH_PORT"; note="started"
  fi
  # one login proves sshd, the key and known_hosts, and finds python3 in the remote user's shell
  local deadline=$(( $(date +%s) + 20 ))
  until REMOTE_PYTHON=$(ssh_run 'command -v python3 || echo NO-PYTHON3' 2>>"$d/ssh-client.log"); do
    (( $(date +%s) < deadline )) || { tail -n 25 "$d/sshd.log" >&2; die "no ssh login on $SSH_HOST:$SSH_PORT after 20 s (log: $d/sshd.log)"; }
    sleep 0.2
  done
  [[ $REMOTE_PYTHON == /* ]] || die "the ssh user's shell has no python3 on its PATH"
  timing ssh "$t0" "$note"
}

# The bed's known_hosts: the sshd's host key, then the bastion's and the cluster's behind it once they have keys. Written
# whole by start_ssh and start_bastion alike (install_file: atomically, and only when it changes), so that a test reading
# it meanwhile never misses a line.
write_known_hosts() {
  local b=$S/bastion
  {
    printf '[%s]:%s %s\n' "$SSH_HOST" "$SSH_PORT" "$(cut -d' ' -f1,2 "$S/ssh/ssh_host_ed25519_key.pub")"
    if has bastion && [[ -f $b/bastion_host_ed25519_key.pub && -f $b/cluster_host_ed25519_key.pub ]]; then
      printf '[%s]:%s %s\n' "$BASTION_HOST" "$BASTION_PORT" "$(cut -d' ' -f1,2 "$b/bastion_host_ed25519_key.pub")"
      printf '[%s]:%s %s\n' "$BEHIND_HOST" "$BEHIND_PORT" "$(cut -d' ' -f1,2 "$b/cluster_host_ed25519_key.pub")"
    fi
  } | install_file "$S/ssh/known_hosts" 644 || true
}

ssh_run() {  # CMD... : run a command over our sshd with strict host-key checking
  ssh -p "$SSH_PORT" -i "$S/ssh/client_key" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$S/ssh/known_hosts" "$SSH_USER@$SSH_HOST" "$@"
}

# ====================================================================================== 1b. the bastion
# A jump host, and a login node reachable only through it, both on loopback. The login node listens in a network
# namespace of its own (the cluster's private network: a lo of its own, nothing else), so from this machine's network
# nothing answers on 127.0.0.2:$BEHIND_PORT. The bastion's listener is in this network; each connection to it is one
# sshd in inetd mode (-i) moved into the private network (nsenter), so the connections it forwards (direct-tcpip, what
# ProxyJump asks for) start there. The listener there starts one sshd -i per connection back in this network, where
# its sessions reach Slurm (whose daemons listen on this network's 127.0.0.1). Each listener is a socat (fork, and EXEC
# with nofork: the accepted socket is the sshd's stdin and stdout, as inetd hands it over); their PID files are
# bastion.pid and cluster.pid, and each session script finds the other network through the other listener's PID. An
# sshd -i reads its config and host key at each connection: a changed config applies at once, without a restart.
socat_alive() { pid_alive "$1" socat; }
bastion_listening() { socat_alive "$S/bastion/bastion.pid" && [[ -n $(ss -Hltn "src $BASTION_HOST:$BASTION_PORT") ]]; }
behind_listening() {
  local pid
  socat_alive "$S/bastion/cluster.pid" || return 1
  pid=$(pid_of "$S/bastion/cluster.pid")
  [[ -n $(nsenter --net="/proc/$pid/ns/net" ss -Hltn "src $BEHIND_HOST:$BEHIND_PORT" 2>/dev/null) ]]
}

bastion_sshd_config() {  # USE_PAM
  cat <<EOF
# generated by runyard infra/start-services.sh: the bastion, a jump host (sshd -i, one per connection, in the cluster's
# private network namespace). It forwards connections to the cluster behind it, and does nothing else.
HostKey $S/bastion/bastion_host_ed25519_key
AuthorizedKeysFile $S/ssh/authorized_keys
$(sshd_basics "$1")
AllowTcpForwarding local
PermitOpen $BEHIND_HOST:$BEHIND_PORT
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
ForceCommand /bin/sh -c 'echo "runyard test bed: this is the bastion, a jump host (ProxyJump): it runs no commands" >&2; exit 1'
LogLevel VERBOSE
EOF
}

cluster_sshd_config() {  # USE_PAM: as the ssh component's sshd (sessions get SLURM_CONF), with a host key of its own
  cat <<EOF
# generated by runyard infra/start-services.sh: the login node behind the bastion (sshd -i, one per connection, in this
# machine's network; its connections come only from the bastion, through the cluster's private network)
HostKey $S/bastion/cluster_host_ed25519_key
AuthorizedKeysFile $S/ssh/authorized_keys
$(sshd_basics "$1")
MaxSessions 64
AllowTcpForwarding no
Subsystem sftp internal-sftp
SetEnv SLURM_CONF=$S/slurm/slurm.conf
LogLevel VERBOSE
EOF
}

session_script() {  # SIDE OTHER: one connection to SIDE, served in the network of the OTHER side's listener
  cat <<EOF
#!/bin/sh
# generated by runyard infra/start-services.sh: one connection to the $1 (socat's child: the connection is stdin and
# stdout), served by sshd in inetd mode in the network of the $2 listener (found by its PID file)
pid=\$(cat $S/bastion/$2.pid 2>/dev/null)
case \$(readlink "/proc/\$pid/exe" 2>/dev/null) in
  */socat) ;;
  *) echo "runyard test bed: the $2 listener is not running (no live $S/bastion/$2.pid)" >&2; exit 1 ;;
esac
exec nsenter --net="/proc/\$pid/ns/net" /usr/sbin/sshd -i -e -f $S/bastion/$1_sshd_config
EOF
}

listener_script() {  # SIDE
  echo '#!/bin/sh'
  if [[ $1 == bastion ]]; then
    cat <<EOF
# generated by runyard infra/start-services.sh: the listener of the bastion, in this machine's network
exec socat -d TCP-LISTEN:$BASTION_PORT,bind=$BASTION_HOST,reuseaddr,fork,backlog=128 EXEC:$S/bastion/bastion-session,nofork
EOF
  else
    cat <<EOF
# generated by runyard infra/start-services.sh: the listener of the cluster behind the bastion, run by unshare --net in a
# network namespace of its own (the cluster's private network: only the bastion's sshd, moved there, reaches it)
ip link set lo up || exit 1
exec socat -d TCP-LISTEN:$BEHIND_PORT,bind=$BEHIND_HOST,reuseaddr,fork,backlog=128 EXEC:$S/bastion/cluster-session,nofork
EOF
  fi
}

bastion_client_config() {
  cat <<EOF
# generated by runyard infra/start-services.sh: the test bed's SSH hosts, for OpenSSH (ssh -F $S/bastion/ssh_config
# runyard-behind) and for runyard (SSHTunnel(host="runyard-behind", ssh_config="$S/bastion/ssh_config"))
Host runyard-bastion
  HostName $BASTION_HOST
  Port $BASTION_PORT
Host runyard-behind
  HostName $BEHIND_HOST
  Port $BEHIND_PORT
  ProxyJump runyard-bastion
Host runyard-login
  HostName $SSH_HOST
  Port $SSH_PORT
Host runyard-*
  User $SSH_USER
  IdentityFile $S/ssh/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $S/ssh/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
EOF
}

start_bastion() {
  local t0 d=$S/bastion note="already running" use_pam=no side other bpid cpid started=""
  local bastion_changed=0 cluster_changed=0
  t0=$(now)
  apt_install socat
  mkdir -p "$d" /run/sshd; chmod 700 "$d"; chmod 755 /run/sshd
  unshare --net true 2>/dev/null \
    || die "cannot make a network namespace (unshare --net): the bastion component needs root with CAP_SYS_ADMIN; leave it out of RUNYARD_INFRA_COMPONENTS"
  for side in bastion cluster; do
    [[ -f $d/${side}_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C "runyard-test-$side" -f "$d/${side}_host_ed25519_key"
  done
  write_known_hosts
  [[ $(getent shadow "$SSH_USER" | cut -d: -f2) == '!'* ]] && use_pam=yes   # as start_ssh
  bastion_sshd_config "$use_pam" | install_file "$d/bastion_sshd_config" 600 || true
  cluster_sshd_config "$use_pam" | install_file "$d/cluster_sshd_config" 600 || true
  /usr/sbin/sshd -t -f "$d/bastion_sshd_config" || die "sshd rejects the bastion's config $d/bastion_sshd_config"
  /usr/sbin/sshd -t -f "$d/cluster_sshd_config" || die "sshd rejects the config $d/cluster_sshd_config"
  for side in bastion cluster; do
    if [[ $side == bastion ]]; then other=cluster; else other=bastion; fi
    session_script "$side" "$other" | install_file "$d/$side-session" 755 || true
  done
  listener_script bastion | install_file "$d/bastion-listener" 755 && bastion_changed=1
  listener_script cluster | install_file "$d/cluster-listener" 755 && cluster_changed=1
  if socat_alive "$d/bastion.pid" && (( bastion_changed )); then
    log "the bastion's listener changed: restarting it"
    stop_pidfile "$d/bastion.pid" socat 10 log || die "the bastion's socat did not stop"
  fi
  if socat_alive "$d/cluster.pid" && (( cluster_changed )); then
    log "the listener of the cluster behind the bastion changed: restarting it"
    stop_pidfile "$d/cluster.pid" socat 10 log || die "the cluster listener's socat did not stop"
  fi
  # nothing may answer where the cluster behind the bastion is from this network, or "no direct logins" would not hold
  require_free_port "$BEHIND_PORT" "the cluster behind the bastion, which must not answer on $BEHIND_HOST:$BEHIND_PORT from this network"
  if ! socat_alive "$d/bastion.pid"; then
    require_free_port "$BASTION_PORT" "the bastion"
    start_bg "$d/bastion.log" "$d/bastion-listener"
    echo $! >"$d/bastion.pid"; started+=" bastion"
  fi
  if ! socat_alive "$d/cluster.pid"; then
    start_bg "$d/cluster.log" unshare --net "$d/cluster-listener"
    echo $! >"$d/cluster.pid"; started+=" cluster"
  fi
  wait_for 20 "the bastion's listener (socat)" "$d/bastion.log" bastion_listening
  wait_for 20 "the listener of the cluster behind the bastion (socat)" "$d/cluster.log" behind_listening
  bpid=$(pid_of "$d/bastion.pid"); cpid=$(pid_of "$d/cluster.pid")
  [[ $(readlink "/proc/$bpid/ns/net") != "$(readlink "/proc/$cpid/ns/net")" ]] \
    || die "the listener of the cluster behind the bastion (pid $cpid) is in this machine's network"
  if [[ -n $started ]]; then
    note="started${started}"
    log "started the bastion on $BASTION_HOST:$BASTION_PORT (pid $bpid), the cluster behind it on $BEHIND_HOST:$BEHIND_PORT in a network of its own (pid $cpid)"
  else
    log "the bastion is already running (pid $bpid), and the cluster behind it (pid $cpid)"
  fi
  bastion_client_config | install_file "$d/ssh_config" 644 || true
  # one login through the bastion proves both sshds, the keys, known_hosts and the session's Slurm environment
  local deadline=$(( $(date +%s) + 20 )) out=""
  until out=$(ssh -F "$d/ssh_config" runyard-behind 'echo "$SLURM_CONF"' 2>>"$d/ssh-client.log" 9>&-); do
    (( $(date +%s) < deadline )) || { tail -n 25 "$d/bastion.log" "$d/cluster.log" >&2; die "no ssh login through the bastion to $BEHIND_HOST:$BEHIND_PORT after 20 s (logs: $d/bastion.log, $d/cluster.log, $d/ssh-client.log)"; }
    sleep 0.2
  done
  [[ $out == "$S/slurm/slurm.conf" ]] || die "a login through the bastion has SLURM_CONF='$out', not $S/slurm/slurm.conf"
  if timeout 5 bash -c "exec 3<>/dev/tcp/$BEHIND_HOST/$BEHIND_PORT" 2>/dev/null; then
    die "$BEHIND_HOST:$BEHIND_PORT answers from this machine's network: the cluster behind the bastion must not"
  fi
  timing bastion "$t0" "$note"
}

# =========================================================================================== 2. Slurm
start_munge() {
  local d=$S/munge
  mkdir -p "$d"; chmod 755 "$d"   # munged insists that the socket directory is world-executable
  [[ -s $d/munge.key ]] || mungekey --create --keyfile="$d/munge.key" --bits=1024
  chmod 600 "$d/munge.key"
  if pid_alive "$d/munged.pid" munged; then log "munged already running (pid $(pid_of "$d/munged.pid"))"; return; fi
  rm -f "$d/munge.socket.2" "$d/munge.socket.2.lock"
  start_bg "$d/munged.log" munged -F --socket="$d/munge.socket.2" --key-file="$d/munge.key" \
    --pid-file="$d/munged.pid" --seed-file="$d/munged.seed" --num-threads=4
  wait_for 20 munged "$d/munged.log" bash -c "munge -S '$d/munge.socket.2' -n | unmunge -S '$d/munge.socket.2'"
  log "started munged"
}

start_mariadb() {
  local d=$S/mysql
  mkdir -p "$d"
  install_file "$d/my.cnf" 644 <<EOF || true
# generated by runyard infra/start-services.sh (read with --defaults-file: no system my.cnf applies)
[mysqld]
user=root
datadir=$d/data
socket=$d/mysqld.sock
pid-file=$d/mysqld.pid
log-error=$d/mysqld.err
bind-address=127.0.0.1
port=$MYSQL_PORT
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
innodb_flush_log_at_trx_commit=2
EOF
  if [[ ! -d $d/data/mysql ]]; then
    rm -rf "$d/data"
    mariadb-install-db --defaults-file="$d/my.cnf" --auth-root-authentication-method=socket --skip-test-db \
      >"$d/install-db.log" 2>&1 || { tail -n 20 "$d/install-db.log" >&2; die "mariadb-install-db failed"; }
  fi
  if pid_alive "$d/mysqld.pid" mariadbd; then
    log "mariadbd already running (pid $(pid_of "$d/mysqld.pid"))"
  else
    require_free_port "$MYSQL_PORT" mariadbd
    start_bg "$d/mysqld.out" mariadbd --defaults-file="$d/my.cnf"
    log "started mariadbd on 127.0.0.1:$MYSQL_PORT"
  fi
  wait_for 60 mariadbd "$d/mysqld.err" mariadb-admin --socket="$d/mysqld.sock" ping
  mariadb --socket="$d/mysqld.sock" -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test-pw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "creating the Slurm accounting database failed"
}

start_slurmdbd() {
  local d=$S/slurm changed=0
  # slurmdbd has no -f: it reads slurmdbd.conf beside $SLURM_CONF, which must be mode 600
  install_file "$d/slurmdbd.conf" 600 <<EOF && changed=1
# generated by runyard infra/start-services.sh
AuthType=auth/munge
AuthInfo=socket=$S/munge/munge.socket.2
CommunicationParameters=NoInAddrAny
DbdHost=$HOST_SHORT
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
PidFile=$d/slurmdbd.pid
LogFile=$d/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurm-test-pw
StorageLoc=slurm_acct_db
EOF
  if pid_alive "$d/slurmdbd.pid" slurmdbd && (( changed )); then
    log "slurmdbd.conf changed: restarting slurmdbd"
    stop_pidfile "$d/slurmdbd.pid" slurmdbd 20 log || die "slurmdbd did not stop"
  fi
  if pid_alive "$d/slurmdbd.pid" slurmdbd; then
    log "slurmdbd already running (pid $(pid_of "$d/slurmdbd.pid"))"
  else
    require_free_port "$SLURMDBD_PORT" slurmdbd
    start_bg "$d/log/slurmdbd.out" slurmdbd -D
    log "started slurmdbd on 127.0.0.1:$SLURMDBD_PORT"
  fi
  wait_for 60 slurmdbd "$d/log/slurmdbd.log" sacctmgr -n -P show cluster
}

SLURM_CONF_CHANGED=0
SLURM_MEM=0
write_slurm_conf() {  # sets SLURM_CONF_CHANGED=1 when slurm.conf or gres.conf changed
  local d=$S/slurm node cpus boards sockets cores threads mem i gpus
  node=$(slurmd -C 2>/dev/null | sed -n 1p) || true
  [[ $node == NodeName=* ]] || die "'slurmd -C' did not print this machine's hardware: $node"
  get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$node"; }
  cpus=$(get CPUs); boards=$(get Boards); sockets=$(get SocketsPerBoard); cores=$(get CoresPerSocket)
  threads=$(get ThreadsPerCore); mem=$(get RealMemory)
  [[ -n $cpus && -n $boards && -n $sockets && -n $cores && -n $threads && -n $mem ]] \
    || die "could not parse 'slurmd -C': $node"
  # the default RealMemory (1 MB) rejects --mem; more than the machine has drains the node ("Low RealMemory")
  SLURM_MEM=$(( mem * 9 / 10 ))
  mkdir -p "$d/fakedev"
  for ((i = 0; i < FAKE_GPUS; i++)); do
    # slurmd drops GPUs without a file and complains about regular files; a char device like /dev/null works
    [[ -e $d/fakedev/gpu$i ]] || mknod "$d/fakedev/gpu$i" c 1 3 2>/dev/null || touch "$d/fakedev/gpu$i"
  done
  gpus="gpu[0-$((FAKE_GPUS - 1))]"
  printf 'NodeName=%s Name=gpu File=%s/fakedev/%s\n' "$SLURM_NODE" "$d" "$gpus" \
    | install_file "$d/gres.conf" 644 && SLURM_CONF_CHANGED=1
  install_file "$d/slurm.conf" 644 <<EOF && SLURM_CONF_CHANGED=1
# generated by runyard infra/start-services.sh: a two-node test cluster on one machine, everything on 127.0.0.1
ClusterName=$SLURM_CLUSTER
SlurmctldHost=$HOST_SHORT(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
# bind to the host name's (loopback) address, not 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge/munge.socket.2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$d/state
# %n = the node name: each slurmd (slurmd -N node1, slurmd -N node2) has its own spool dir, PID file and log
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd-%n.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# schedule at once instead of the default 3 s batch delay and 2 s minimum interval
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
# for slurmdbd traffic Slurm takes the munge socket from AccountingStoragePass, not from AuthInfo
AccountingStoragePass=$S/munge/munge.socket.2
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/filetxt
JobCompLoc=$d/jobcomp.log
GresTypes=gpu
# preemption on cue: a job of a partition with a higher PriorityTier requeues the jobs of a lower one whose
# PreemptMode is not OFF (only low's); preempt_send_user_signal delivers a job's --signal at preemption
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
# both nodes are this machine (same host name, NodeAddr 127.0.0.1), told apart by their slurmd's port
NodeName=${SLURM_NODES[0]} NodeHostname=$HOST_SHORT NodeAddr=127.0.0.1 Port=${SLURMD_PORTS[0]} CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$SLURM_MEM Gres=gpu:$FAKE_GPUS State=UNKNOWN
NodeName=${SLURM_NODES[1]} NodeHostname=$HOST_SHORT NodeAddr=127.0.0.1 Port=${SLURMD_PORTS[1]} CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$SLURM_MEM State=UNKNOWN
PartitionName=cpu Nodes=$SLURM_NODE Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=gpu Nodes=$SLURM_NODE Default=NO MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=$SLURM_MULTI_PARTITION Nodes=${SLURM_NODES[0]},${SLURM_NODES[1]} Default=NO MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=$SLURM_LOW_PARTITION Nodes=${SLURM_NODES[1]} Default=NO MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=$SLURM_HIGH_PARTITION Nodes=${SLURM_NODES[1]} Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
  return 0
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | sed -n 1p; }  # NODE
node_usable() { [[ $(node_state "$1") =~ ^(idle|mixed|allocated|completing)$ ]]; }  # NODE
nodes_usable() { local n; for n in "${SLURM_NODES[@]}"; do node_usable "$n" || return 1; done; }

start_slurm() {
  local t0 d=$S/slurm i n note="already running"
  t0=$(now)
  apt_install munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client
  mkdir -p "$d"/{state,log} "$S/slurm-jobs"
  for n in "${SLURM_NODES[@]}"; do mkdir -p "$d/spool/$n"; done
  if [[ -f $d/state/clustername && $(cat "$d/state/clustername") != "$SLURM_CLUSTER" ]]; then
    pid_alive "$d/slurmctld.pid" slurmctld && die "slurmctld runs for cluster $(cat "$d/state/clustername"); stop it first"
    warn "removing the Slurm state of cluster '$(cat "$d/state/clustername")'"; rm -rf "${d:?}/state"/*
  fi
  write_slurm_conf
  start_munge
  start_mariadb
  start_slurmdbd
  if pid_alive "$d/slurmctld.pid" slurmctld && (( SLURM_CONF_CHANGED )); then
    log "slurm.conf changed: restarting slurmctld and the slurmd of every node"
    for n in "${SLURM_NODES[@]}"; do stop_pidfile "$d/slurmd-$n.pid" slurmd 20 log || die "slurmd $n did not stop"; done
    stop_pidfile "$d/slurmctld.pid" slurmctld 20 log || die "slurmctld did not stop"
  fi
  # the one slurmd of the one-node test bed (before issue 10) had this PID file
  stop_pidfile "$d/slurmd.pid" slurmd 20 log || die "the one-node bed's slurmd did not stop"
  if pid_alive "$d/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(pid_of "$d/slurmctld.pid"))"
  else
    require_free_port "$SLURMCTLD_PORT" slurmctld
    start_bg "$d/log/slurmctld.out" slurmctld -D
    log "started slurmctld on 127.0.0.1:$SLURMCTLD_PORT"; note="started"
  fi
  wait_for 60 slurmctld "$d/log/slurmctld.log" bash -c 'scontrol ping | grep -q "is UP"'
  for i in "${!SLURM_NODES[@]}"; do
    n=${SLURM_NODES[$i]}
    if pid_alive "$d/slurmd-$n.pid" slurmd; then
      log "slurmd of $n already running (pid $(pid_of "$d/slurmd-$n.pid"))"
    else
      require_free_port "${SLURMD_PORTS[$i]}" "slurmd of $n"
      start_bg "$d/log/slurmd-$n.out" slurmd -D -N "$n"
      log "started slurmd (node $n) on 127.0.0.1:${SLURMD_PORTS[$i]}"; note="started"
    fi
  done
  for i in $(seq 1 150); do nodes_usable && break; sleep 0.2; done
  for n in "${SLURM_NODES[@]}"; do
    if ! node_usable "$n"; then   # e.g. DOWN or DRAINED after an unclean stop
      log "node $n is '$(node_state "$n")': resuming it"
      scontrol update nodename="$n" state=resume 2>/dev/null || true
    fi
  done
  for n in "${SLURM_NODES[@]}"; do
    wait_for 30 "Slurm node $n (state: $(node_state "$n"))" "$d/log/slurmd-$n.log" node_usable "$n"
  done
  # a symlink so that plain `sinfo` works in a developer's shell; only when /etc/slurm/slurm.conf is absent
  if [[ ! -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm; ln -s "$d/slurm.conf" /etc/slurm/slurm.conf; echo /etc/slurm/slurm.conf >"$d/etc-link-created"
  fi
  timing slurm "$t0" "$note"
}

# ================================================================================ 3. Docker + test image
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

start_docker() {
  local t0 d=$S/docker note="already running"
  t0=$(now)
  mkdir -p "$d"
  # the client first: without it an engine that already answers would look absent (docker.io has both)
  command -v docker >/dev/null || apt_install docker.io
  if pid_alive "$d/dockerd.pid" dockerd; then
    wait_for 60 "dockerd (pid $(pid_of "$d/dockerd.pid"))" "$d/dockerd.log" docker_ok
    log "dockerd already running (started by this script, pid $(pid_of "$d/dockerd.pid"))"
  elif docker_ok; then
    log "using the Docker engine that already answers at $DOCKER_SOCK (not ours: stop-services.sh leaves it alone)"
    note="not ours, reused"
  else
    command -v dockerd >/dev/null || apt_install docker.io
    # never add --bridge=none: such a dockerd deletes an existing docker0 bridge
    start_bg "$d/dockerd.log" dockerd -H "unix://$DOCKER_SOCK" --pidfile "$d/dockerd.pid"
    wait_for 90 "dockerd at $DOCKER_SOCK" "$d/dockerd.log" docker_ok
    log "started dockerd (pid $(pid_of "$d/dockerd.pid")) at $DOCKER_SOCK"; note="started"
  fi
  timing docker "$t0" "$note"
  ensure_image
}

IMAGE_PACKAGES=python3,python-is-python3,bash,dash,coreutils,base-files,base-passwd,debianutils,grep,sed,findutils,procps
ensure_image() {
  local t0 building="$DOCKER_IMAGE-building" recipe
  # the image carries a hash of its recipe: a changed recipe rebuilds it
  recipe=$(printf '%s %s %s' "$IMAGE_PACKAGES" bookworm v1 | sha1sum | cut -c1-12)
  t0=$(now)
  if [[ $(docker image inspect -f '{{index .Config.Labels "org.runyard.test-image-recipe"}}' "$DOCKER_IMAGE" 2>/dev/null) == "$recipe" ]]; then
    timing image "$t0" "$DOCKER_IMAGE cached"; return
  fi
  apt_install mmdebstrap
  log "building $DOCKER_IMAGE from Debian bookworm packages with mmdebstrap (no registry)"
  # --variant=extract unpacks the packages without running maintainer scripts (seconds, ~90 MB); the hook
  # creates what those scripts would have: passwd/group, /root, /tmp and the ld.so cache.
  # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's hook, not here
  mmdebstrap --quiet --variant=extract --include="$IMAGE_PACKAGES" \
    --extract-hook='cp "$1/usr/share/base-passwd/passwd.master" "$1/etc/passwd"; cp "$1/usr/share/base-passwd/group.master" "$1/etc/group"; mkdir -p "$1/root" "$1/tmp"; chmod 1777 "$1/tmp"; ldconfig -r "$1"' \
    bookworm - "$DEBIAN_MIRROR" 2>"$S/logs/image-build.log" \
    | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["python3"]' -c "LABEL org.runyard.test-image-recipe=$recipe" \
        - "$building" >>"$S/logs/image-build.log" 2>&1 \
    || { tail -n 20 "$S/logs/image-build.log" >&2; die "building the image with mmdebstrap | docker import failed"; }
  docker run --rm "$building" bash -c 'python3 -c "import ssl, sqlite3, json, subprocess"' \
    || { docker rmi -f "$building" >/dev/null 2>&1; die "the built image has no working python3 or bash"; }
  docker tag "$building" "$DOCKER_IMAGE"; docker rmi "$building" >/dev/null
  timing image "$t0" "built"
}

# ================================================================================== 4. the torch venv
# A venv of its own (never the project's .venv: `uv sync` removes what uv.lock does not list), made with pip:
# pip takes PyTorch's CPU wheel from this machine's disk, uv would download a CUDA build of several GB.
# start_torch begins the install in the background (pip is mostly I/O), beside Docker; finish_torch waits for it.
TORCH_PYTHON="" TORCH_T0="" TORCH_PID=""
torch_imports() { "$1" -c 'import numpy, torch, torch.distributed as d; assert d.is_available()' >/dev/null 2>&1; }
torch_version() { "$TORCH_PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))'; }
# installed as asked (without importing torch, which takes seconds: the venv was proven when it was made)
torch_installed() {
  "$1" -c 'import importlib.metadata as m, sys
for r in sys.argv[1:]:
    name, _, version = r.partition("==")
    assert m.version(name).split("+")[0] == version if version else m.version(name)' "${TORCH_REQUIREMENTS[@]}" \
    >/dev/null 2>&1 && [[ -e ${1%/bin/python}/.runyard-proven ]]
}
# venv_base PYTHON SETTING WHAT: sets VENV_BASE to the absolute path of PYTHON, able to make a venv with pip
# (Debian's python3 may need python3-venv first)
VENV_BASE=""
venv_base() {
  VENV_BASE=$(command -v "$1") || die "no $1 on PATH for the $3 ($2)"
  if ! "$VENV_BASE" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    [[ $VENV_BASE == /usr/bin/* ]] || die "$VENV_BASE cannot make a venv with pip (it has no venv or ensurepip module)"
    apt_install python3-venv
  fi
}
venv_in_background() {  # DIR BASE NAME REQUIREMENTS...: DIR/venv made anew from BASE, then pip install
  # REQUIREMENTS, in the background ($! is its PID; its output goes to $S/logs/NAME.log)
  local d=$1 base=$2 name=$3
  shift 3
  mkdir -p "$d"; rm -rf "$d/venv"
  log "making the $name venv $d/venv from $base: pip install $* (in the background)"
  { "$base" -m venv "$d/venv" && "$d/venv/bin/python" -m pip install -q "$@"; } >>"$S/logs/$name.log" 2>&1 9>&- &
}
start_torch() {
  local d=$S/torch base
  TORCH_T0=$(now)
  TORCH_PYTHON=$d/venv/bin/python
  if [[ -x $TORCH_PYTHON ]] && torch_installed "$TORCH_PYTHON"; then return; fi
  venv_base "$TORCH_PYTHON_BASE" RUNYARD_INFRA_TORCH_PYTHON "torch venv"; base=$VENV_BASE
  venv_in_background "$d" "$base" torch "${TORCH_REQUIREMENTS[@]}"
  TORCH_PID=$!
}
finish_torch() {
  local note=cached
  if [[ -n $TORCH_PID ]]; then
    wait "$TORCH_PID" || { tail -n 20 "$S/logs/torch.log" >&2; die "the torch venv: venv or pip install ${TORCH_REQUIREMENTS[*]} failed, see $S/logs/torch.log"; }
    torch_imports "$TORCH_PYTHON" || die "the torch venv $S/torch/venv does not import numpy, torch and torch.distributed"
    touch "$S/torch/venv/.runyard-proven"
    note=installed
  fi
  timing torch "$TORCH_T0" "$note (torch $(torch_version))"
}

# ============================================================================== 5. headless Chromium
# Installed only when missing; proven by rendering a page headless (as root it needs --no-sandbox, and a fresh
# --user-data-dir keeps runs apart). The flags are those the tests use (tests/conftest.py, fixture chromium).
CHROMIUM="" CHROMIUM_FLAGS=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
  --disable-component-update --disable-sync)
start_chromium() {
  local t0 note=cached profile out
  t0=$(now)
  if ! command -v chromium >/dev/null; then apt_install chromium; note=installed; fi
  # the shells whose completion scripts the CLI tests run (runyard completion zsh|fish), beside the browser
  if ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then apt_install zsh fish; note=installed; fi
  CHROMIUM=$(command -v chromium) || die "no chromium on PATH after installing Debian's chromium package"
  profile=$(mktemp -d "$S/chromium-profile.XXXXXX")
  out=$(timeout 60 "$CHROMIUM" "${CHROMIUM_FLAGS[@]}" --user-data-dir="$profile" \
    --dump-dom 'data:text/html,<p id="x">chromium-ok</p>' 2>>"$S/logs/chromium.log" 9>&-) || true
  rm -rf "$profile"
  [[ $out == *chromium-ok* ]] || { tail -n 20 "$S/logs/chromium.log" >&2; die "headless chromium rendered no page (log: $S/logs/chromium.log)"; }
  timing chromium "$t0" "$note ($("$CHROMIUM" --version 2>/dev/null | head -n 1))"
}

# =================================================================================== 6. the Ray head
# A venv of its own, made with pip like the torch venv (in the background, beside Docker and the torch venv), then
# one head started by infra/ray-head.sh, which also finds its processes again (by a marker in their environment
# and their session) to reuse or stop them: `ray stop` would kill every Ray process on the machine.
RAY_PYTHON="" RAY_T0="" RAY_PID=""
ray_installed() {  # PYTHON: ray of RAY_VERSION, in a venv proven when it was made (importing ray takes seconds)
  "$1" -c 'import importlib.metadata as m, sys; assert m.version("ray") == sys.argv[1]' "$RAY_VERSION" \
    >/dev/null 2>&1 && [[ -e ${1%/bin/python}/.runyard-proven ]]
}
start_ray_venv() {
  local d=$S/ray base
  RAY_T0=$(now)
  RAY_PYTHON=$d/venv/bin/python
  if [[ -x $RAY_PYTHON ]] && ray_installed "$RAY_PYTHON"; then return; fi
  venv_base "$RAY_PYTHON_BASE" RUNYARD_INFRA_RAY_PYTHON "ray venv"; base=$VENV_BASE
  "$base" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || die "$base is Python $("$base" -c 'import sys; print(sys.version.split()[0])'): Ray $RAY_VERSION needs 3.10 or later (RUNYARD_INFRA_RAY_PYTHON)"
  # a head still running from the old venv goes with it
  [[ -d $d/venv ]] && { bash "$INFRA/ray-head.sh" stop "$d" 9>&- || die "the Ray head of the old venv did not stop"; }
  venv_in_background "$d" "$base" ray "${RAY_REQUIREMENTS[@]}"
  RAY_PID=$!
}
finish_ray() {
  local note=cached out t0
  if [[ -n $RAY_PID ]]; then
    wait "$RAY_PID" || { tail -n 20 "$S/logs/ray.log" >&2; die "the ray venv: venv or pip install ${RAY_REQUIREMENTS[*]} failed, see $S/logs/ray.log"; }
    "$RAY_PYTHON" -c 'import ray, ray.dashboard, ray.job_submission' >>"$S/logs/ray.log" 2>&1 \
      || { tail -n 20 "$S/logs/ray.log" >&2; die "the ray venv $S/ray/venv does not import ray, ray.dashboard and ray.job_submission (log: $S/logs/ray.log)"; }
    touch "$S/ray/venv/.runyard-proven"
    note=installed
  fi
  timing ray "$RAY_T0" "$note (ray $("$RAY_PYTHON" -c 'import importlib.metadata as m; print(m.version("ray"))'))"
  t0=$(now)
  out=$(bash "$INFRA/ray-head.sh" start "$S/ray" "$RAY_PORT_BASE" 9>&-) || die "the Ray head did not start (see above; logs: $S/ray/head.log, $S/ray/temp/session_latest/logs)"
  printf '%s\n' "$out"
  if [[ $out == *"already running"* ]]; then note="already running"; else note=started; fi
  timing ray-head "$t0" "$note, Jobs API at http://127.0.0.1:$RAY_PORT_BASE"
}

# ==================================================================================================== main
REMOTE_PYTHON="" IMAGE_PY="" RAY_JOB_PY=""
has ssh && start_ssh
has bastion && start_bastion
has slurm && start_slurm
has torch && start_torch
has ray && start_ray_venv
has docker && start_docker
has torch && finish_torch
has ray && finish_ray
has chromium && start_chromium

if [[ $VERIFY == 1 && -n ${COMPONENTS// /} ]]; then
  t0=$(now)
  mkdir -p "$S/verify"
  if has docker; then   # in the background, beside the Slurm job
    docker run --rm "$DOCKER_IMAGE" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' \
      >"$S/verify/docker.out" 2>&1 9>&- &
    docker_smoke=$!
  fi
  if has ray; then   # a job through the Jobs API (REST, as runyard will), in the background too
    "$RAY_PYTHON" - "http://127.0.0.1:$RAY_PORT_BASE/api/jobs/" >"$S/verify/ray.out" 2>&1 9>&- <<'PYEOF' &
import json, sys, time, urllib.request

jobs = sys.argv[1]
entrypoint = """python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'"""
submit = urllib.request.Request(
    jobs, json.dumps({"entrypoint": entrypoint}).encode(), {"Content-Type": "application/json"}
)
with urllib.request.urlopen(submit, timeout=30) as r:
    job_id = json.load(r)["submission_id"]
deadline = time.monotonic() + 120
while True:
    with urllib.request.urlopen(jobs + job_id, timeout=30) as r:
        job = json.load(r)
    if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
        break
    if time.monotonic() > deadline:
        sys.exit(f"Ray job {job_id} is still {job['status']} after 120 s")
    time.sleep(0.2)
with urllib.request.urlopen(jobs + job_id + "/logs", timeout=30) as r:
    logs = json.load(r)["logs"]
if job["status"] != "SUCCEEDED":
    sys.exit(f"Ray job {job_id} ended {job['status']}: {job.get('message')}\n{logs}")
print(job_id, logs.split()[-1])
PYEOF
    ray_smoke=$!
  fi
  if has slurm; then
    # submit a job and poll it to COMPLETED (over ssh when ssh is up: that is how the plugin will do it)
    cat >"$S/verify/smoke.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
j=$(sbatch --parsable -p cpu -o "$1/job-%j.out" --wrap 'echo verify-ok on $SLURM_JOB_PARTITION')
for _ in $(seq 1 600); do
  s=$(scontrol show job "$j" | grep -o 'JobState=[A-Z_]*' || true)
  case ${s#JobState=} in
    COMPLETED) grep -q 'verify-ok on cpu' "$1/job-$j.out" || { echo "job $j wrote no output" >&2; exit 1; }
               rm -f "$1/job-$j.out"; echo "$j"; exit 0;;
    FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) echo "job $j ended $s" >&2; exit 1;;
  esac
  sleep 0.1
done
echo "job $j did not finish within 60 s" >&2; exit 1
EOF
    if has ssh; then
      out=$(ssh_run bash "$S/verify/smoke.sh" "$S/verify" 2>&1) || die "smoke test: sbatch over ssh failed: $out"
    else
      out=$(bash "$S/verify/smoke.sh" "$S/verify" 2>&1) || die "smoke test: sbatch failed: $out"
    fi
    log "smoke test: Slurm job $out ran to COMPLETED"
  fi
  if has docker; then
    wait "$docker_smoke" || die "smoke test: docker run $DOCKER_IMAGE python3 failed: $(cat "$S/verify/docker.out")"
    IMAGE_PY=$(cat "$S/verify/docker.out")
    log "smoke test: a container of $DOCKER_IMAGE runs Python $IMAGE_PY"
  fi
  if has ray; then
    wait "$ray_smoke" || die "smoke test: a Ray job failed: $(cat "$S/verify/ray.out")"
    read -r ray_job RAY_JOB_PY <"$S/verify/ray.out"
    if ! [[ $RAY_JOB_PY =~ ^3\.([0-9]+)\.[0-9]+$ ]] || (( BASH_REMATCH[1] < 10 )); then
      die "smoke test: the python3 of a Ray job's entrypoint is not Python 3.10 or later: $(cat "$S/verify/ray.out")"
    fi
    log "smoke test: Ray job $ray_job ran to SUCCEEDED; its entrypoint's python3 is Python $RAY_JOB_PY"
  fi
  timing verify "$t0"
fi

# ------------------------------------------------------------------------------------------------- env.sh
q() { printf "%q" "$1"; }
{
  echo "# written by runyard infra/start-services.sh at $(date -Is); source this file"
  echo "export RUNYARD_INFRA_DIR=$(q "$S")"
  echo "export RUNYARD_TEST_SERVICES=$(q "$COMPONENTS")"
  if has ssh; then
    echo "export RUNYARD_TEST_SSH_HOST=$SSH_HOST"
    echo "export RUNYARD_TEST_SSH_PORT=$SSH_PORT"
    echo "export RUNYARD_TEST_SSH_USER=$SSH_USER"
    echo "export RUNYARD_TEST_SSH_KEY=$(q "$S/ssh/client_key")"
    echo "export RUNYARD_TEST_SSH_PUBKEY=$(q "$S/ssh/client_key.pub")"
    echo "export RUNYARD_TEST_SSH_KNOWN_HOSTS=$(q "$S/ssh/known_hosts")"
    echo "export RUNYARD_TEST_SSH_PYTHON=$(q "$REMOTE_PYTHON")"
  fi
  if has bastion; then
    echo "export RUNYARD_TEST_BASTION_HOST=$BASTION_HOST"
    echo "export RUNYARD_TEST_BASTION_PORT=$BASTION_PORT"
    echo "export RUNYARD_TEST_BASTION_USER=$SSH_USER"
    echo "export RUNYARD_TEST_BASTION_KEY=$(q "$S/ssh/client_key")"
    echo "export RUNYARD_TEST_BASTION_KNOWN_HOSTS=$(q "$S/ssh/known_hosts")"
    echo "export RUNYARD_TEST_BASTION_TARGET_HOST=$BEHIND_HOST"
    echo "export RUNYARD_TEST_BASTION_TARGET_PORT=$BEHIND_PORT"
    echo "export RUNYARD_TEST_BASTION_SSH_CONFIG=$(q "$S/bastion/ssh_config")"
  fi
  if has slurm; then
    echo "export SLURM_CONF=$(q "$S/slurm/slurm.conf")"
    echo "export RUNYARD_TEST_SLURM_CLUSTER=$SLURM_CLUSTER"
    echo "export RUNYARD_TEST_SLURM_NODE=$SLURM_NODE"
    echo "export RUNYARD_TEST_SLURM_NODES=$(IFS=,; echo "${SLURM_NODES[*]}")"
    echo "export RUNYARD_TEST_SLURM_PARTITIONS=cpu,gpu,$SLURM_MULTI_PARTITION,$SLURM_LOW_PARTITION,$SLURM_HIGH_PARTITION"
    echo "export RUNYARD_TEST_SLURM_DEFAULT_PARTITION=cpu"
    echo "export RUNYARD_TEST_SLURM_GPU_PARTITION=gpu"
    echo "export RUNYARD_TEST_SLURM_MULTI_PARTITION=$SLURM_MULTI_PARTITION"
    echo "export RUNYARD_TEST_SLURM_LOW_PARTITION=$SLURM_LOW_PARTITION"
    echo "export RUNYARD_TEST_SLURM_HIGH_PARTITION=$SLURM_HIGH_PARTITION"
    echo "export RUNYARD_TEST_SLURM_GPUS=$FAKE_GPUS"
    echo "export RUNYARD_TEST_SLURM_CPUS=$(sinfo -h -n "$SLURM_NODE" -o %c | sed -n 1p)"
    echo "export RUNYARD_TEST_SLURM_MEMORY_MB=$SLURM_MEM"
    echo "export RUNYARD_TEST_SLURM_JOB_DIR=$(q "$S/slurm-jobs")"
  fi
  if has docker; then
    echo "export DOCKER_HOST=$(q "unix://$DOCKER_SOCK")"
    echo "export RUNYARD_TEST_DOCKER_IMAGE=$(q "$DOCKER_IMAGE")"
    if [[ -n $IMAGE_PY ]]; then echo "export RUNYARD_TEST_DOCKER_IMAGE_PYTHON=$IMAGE_PY"; fi
  fi
  if has torch; then echo "export RUNYARD_TEST_TORCH_PYTHON=$(q "$TORCH_PYTHON")"; fi
  if has chromium; then echo "export RUNYARD_TEST_CHROMIUM=$(q "$CHROMIUM")"; fi
  if has ray; then
    echo "export RUNYARD_TEST_RAY_ADDRESS=$(q "http://127.0.0.1:$RAY_PORT_BASE")"
    echo "export RUNYARD_TEST_RAY_PYTHON=$(q "$RAY_PYTHON")"
    echo "export RUNYARD_TEST_RAY_TEMP=$(q "$S/ray/temp")"
  fi
} >"$S/env.sh.tmp"
mv -f "$S/env.sh.tmp" "$S/env.sh"

timing total "$T_ALL"
log "ready; timings:"
printf '%s\n' "${TIMINGS[@]}"
log "facts for tests: source $S/env.sh"
