# shellcheck shell=bash disable=SC2034  # sourced: the callers use these variables
# Shared by up/down/node/login: where the development Slurm keeps everything.
# MULTI (set by the caller before sourcing): 0 is the single-node cluster on the host's loopback; 1 is the
# multi-node cluster, a login node and compute nodes that are network + UTS + mount namespaces on a private
# bridge. The two may run at the same time: separate state, munged, ports and cluster name.
MULTI="${MULTI:-0}"
if [ "$MULTI" = 1 ]; then
  # Not under /tmp: every host of this cluster has its own /tmp, and the state (munge socket, spools, logs,
  # the shared directory) must be the same path on all of them, like a site's shared file system.
  STATE="${DASKWEAK_SLURM_STATE:-/var/tmp/daskweak-slurm-multi}"
  CLUSTER=dwmulti
  CTLD_PORT="${DASKWEAK_SLURMCTLD_PORT:-16827}"
  SLURMD_PORT="${DASKWEAK_SLURMD_PORT:-16828}"
  DBD_PORT="${DASKWEAK_SLURMDBD_PORT:-16829}"
  MYSQL_PORT="${DASKWEAK_MYSQL_PORT:-16316}"
else
  STATE="${DASKWEAK_SLURM_STATE:-/tmp/daskweak-slurm}"
  CLUSTER=daskweak
  CTLD_PORT="${DASKWEAK_SLURMCTLD_PORT:-16817}"
  SLURMD_PORT="${DASKWEAK_SLURMD_PORT:-16818}"
  DBD_PORT="${DASKWEAK_SLURMDBD_PORT:-16819}"
  MYSQL_PORT="${DASKWEAK_MYSQL_PORT:-16306}"
fi
export SLURM_CONF="$STATE/etc/slurm.conf"
MUNGE_SOCKET="$STATE/munge/run/munge.socket.2"
NODE="$(hostname -s)"
SHARED="$STATE/shared"

# The multi-node cluster's network, one per machine. Names are fixed so that fault tests can find them:
# namespace dw<host> (dwlogin, dwnode1…), host-side veth dwv-<host> (its peer is eth0 in the namespace),
# bridge dwbr0, subnet 10.77.0.0/24 (login .1, nodeK .10+K). No address on the bridge, no route out:
# nothing leaves the namespaces.
BRIDGE=dwbr0
SUBNET=10.77.0
ns_of() { echo "dw$1"; }
veth_of() { echo "dwv-$1"; }
ip_of() { if [ "$1" = login ]; then echo "$SUBNET.1"; else echo "$SUBNET.$((10 + ${1#node}))"; fi; }

# A PID file names a live daemon: the process is that daemon (after a crash or reboot its PID may belong to
# any other process, even a thread of one), and not a zombie left by a killed daemon whose reaper is away.
# slurmd-node1.pid names a slurmd (one per compute node of the multi-node cluster).
alive() {
  local pid name comm
  [ -f "$1" ] && pid="$(cat "$1" 2>/dev/null)" && [ -r "/proc/$pid/stat" ] || return 1  # the daemon may remove it meanwhile
  name="$(basename "$1" .pid)"
  name="${name%%-*}"
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)"
  [ "$comm" = "$name" ] || [ "$comm" = "${name}d" ] || return 1  # mariadb.pid names mariadbd
  [ "$(awk '/^Tgid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" = "$pid" ] || return 1  # not a thread
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# The holder of a host is the process whose namespaces are that host (a `sleep` in its network namespace);
# every daemon and command of the host is entered from it.
holder_pid() {  # holder_pid HOST: prints the PID if the holder lives, else fails
  local pidfile="$STATE/run/holder-$1.pid" pid
  [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] || return 1
  [ "$(ip netns identify "$pid" 2>/dev/null)" = "$(ns_of "$1")" ] || return 1
  echo "$pid"
}

at() {  # at HOST COMMAND...: run on that host (its network, hostname and mounts), in AT_WD (default /)
  local pid
  pid="$(holder_pid "$1")" || { echo "dev-cluster: host $1 is not up (slurm/dev-cluster/up --nodes N)" >&2; return 1; }
  shift
  # The directory is looked up on the host, not here: nsenter --wd would open it before entering the mount
  # namespace, and a command started from the machine's /tmp would see the machine's files.
  nsenter -t "$pid" -n -u -m -- env --chdir="${AT_WD:-/}" -- "$@"
}

# Tear the multi-node network down whatever state it is in (after a crash too): every process left in our
# namespaces (daemons, jobs, holders) is stopped, then the namespaces, veths and bridge are deleted.
remove_hosts() {
  local namespaces ns pids link
  namespaces="$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^dw(login|node[0-9]+)$' || true)"
  for ns in $namespaces; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    # shellcheck disable=SC2086  # a list of PIDs
    [ -n "$pids" ] && kill $pids 2>/dev/null
  done
  for ns in $namespaces; do
    for _ in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
  done
  # Deleting a namespace deletes its eth0 and with it the host-side peer; these catch half-made hosts.
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^dwv-' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  rm -f "$STATE"/run/holder-*.pid
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "dev-cluster: $what did not come up within ${limit}s" >&2
  return 1
}
