# Shared by up/down: where the development Slurm keeps everything (one directory, loopback only).
STATE="${DASKWEAK_SLURM_STATE:-/tmp/daskweak-slurm}"
export SLURM_CONF="$STATE/etc/slurm.conf"
MUNGE_SOCKET="$STATE/munge/run/munge.socket.2"
NODE="$(hostname -s)"
CTLD_PORT="${DASKWEAK_SLURMCTLD_PORT:-16817}"
SLURMD_PORT="${DASKWEAK_SLURMD_PORT:-16818}"
DBD_PORT="${DASKWEAK_SLURMDBD_PORT:-16819}"
MYSQL_PORT="${DASKWEAK_MYSQL_PORT:-16306}"

# A PID file names a live daemon: the process is that daemon (after a crash or reboot its PID may belong to
# any other process, even a thread of one), and not a zombie left by a killed daemon whose reaper is away.
alive() {
  local pid name comm
  [ -f "$1" ] && pid="$(cat "$1")" && [ -r "/proc/$pid/stat" ] || return 1
  name="$(basename "$1" .pid)"
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)"
  [ "$comm" = "$name" ] || [ "$comm" = "${name}d" ] || return 1  # mariadb.pid names mariadbd
  [ "$(awk '/^Tgid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" = "$pid" ] || return 1  # not a thread
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "dev-cluster: $what did not come up within ${limit}s" >&2
  return 1
}
