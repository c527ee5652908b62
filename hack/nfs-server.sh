#!/bin/bash
# A real NFS server for tests: Debian's nfs-ganesha (VFS FSAL) and rpcbind, run inside the
# network namespace NETNS, serving NFSv3 and NFSv4 over TCP on every address of NETNS
# (NFS 2049, MOUNT 20048, rpcbind 111). cluster-up.sh runs it for the local cluster (at
# $NODE_IP); tests may run one of their own in a namespace of their own.
#
#   hack/nfs-server.sh up STATE_DIR NETNS EXPORT...   # EXPORT: DIR (no_root_squash) or DIR:squash
#   hack/nfs-server.sh down STATE_DIR
#
# Each DIR (absolute; made if missing) is exported with Path = Pseudo = DIR, so a client
# mounts SERVER:DIR over v3 and v4 alike. Clients may connect from any source port (a
# user-space client in a non-root pod uses one above 1023). `DIR:squash` maps uid/gid 0 to
# 65534. STATE_DIR holds ganesha.conf, the logs, PID files and NFSv4 recovery state.
# `up` returns once the server answers; when it already runs with the same configuration it
# does nothing, and with another it restarts it. `down` stops it and leaves no process, mount
# or socket behind. Both are harmless when run twice.
#
# rpcbind binds 0.0.0.0:111 and listens on a filesystem socket, /run/rpcbind.sock, through
# which ganesha registers; both are in NETNS and in a mount namespace of their own with a
# private /run, so neither a port nor a socket of theirs shows on this machine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  echo "usage: nfs-server.sh up STATE_DIR NETNS EXPORT... (EXPORT: /dir or /dir:squash)" >&2
  echo "       nfs-server.sh down STATE_DIR" >&2
  exit 2
}

NFS_PORT=2049
MNT_PORT=20048
ANSWER_SECS=20 # how long `up` waits for the server to answer

# in_server_ns PID: does it run in the server's mount namespace (recorded at start)?
in_server_ns() {
  local mntns
  mntns=$(cat "$STATE/mntns" 2>/dev/null) || return 1
  [ -n "$mntns" ] && [ "$mntns" != "$(readlink /proc/self/ns/mnt)" ] &&
    [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$mntns" ]
}

# ours PID: is this recorded PID still the server's (and not a reused PID)? ganesha and its
# launcher name $STATE/ on their command line; rpcbind does not, but runs in its namespace.
ours() {
  local cmd
  in_server_ns "$1" && return 0
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmd == *"$STATE/"* ]]
}

# running: do the recorded ganesha and rpcbind run?
running() {
  local name pid
  for name in ganesha rpcbind; do
    pid=$(cat "$STATE/$name.pid" 2>/dev/null) || return 1
    alive "$pid" && ours "$pid" || return 1
  done
}

# answers NETNS: does the server answer RPC NULL calls for NFSv3, NFSv4 and MOUNT on its fixed
# ports, and has it registered them with rpcbind? Asked over TCP from inside NETNS.
answers() {
  local n=(nsenter --net="/var/run/netns/$1") maps
  "${n[@]}" timeout 5 rpcinfo -n "$NFS_PORT" -t 127.0.0.1 nfs 3 &&
    "${n[@]}" timeout 5 rpcinfo -n "$NFS_PORT" -t 127.0.0.1 nfs 4 &&
    "${n[@]}" timeout 5 rpcinfo -n "$MNT_PORT" -t 127.0.0.1 mountd 3 || return 1
  maps=$("${n[@]}" timeout 5 rpcinfo -p 127.0.0.1) || return 1
  grep -Eq "^ *100003 +3 +tcp +$NFS_PORT " <<<"$maps" &&
    grep -Eq "^ *100005 +3 +tcp +$MNT_PORT " <<<"$maps"
}

# stop: end the recorded server, ganesha first (it unregisters from rpcbind), then anything
# else left in its mount namespace. With its last process gone the namespace goes, and with
# it the private /run (rpcbind.sock).
stop() {
  local d pid strays=()
  stop_recorded "$STATE" TERM ganesha
  stop_recorded "$STATE" TERM rpcbind
  if [ -f "$STATE/mntns" ]; then
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      if in_server_ns "$pid"; then strays+=("$pid"); fi
    done
    end_processes "the NFS server ($STATE)" "${strays[@]}"
  fi
  rm -f "$STATE/mntns" "$STATE/netns"
}

# write_config FILE EXPORT...: ganesha.conf for these exports (see the reference setup in
# the notes for why each core setting is there).
write_config() {
  local f=$1 e dir squash id=0
  shift
  cat >"$f" <<EOF
# Written by hack/nfs-server.sh for network namespace $NS; rewritten on every \`up\`.
NFS_CORE_PARAM {
    Protocols = 3, 4;
    NFS_Port = $NFS_PORT;
    MNT_Port = $MNT_PORT;        # fixed (the default is a random port)
    Enable_NLM = false;         # no rpc.statd: v3 clients mount with nolock
    Enable_RQUOTA = false;
    Enable_UDP = false;         # TCP only, like the exports
    Mount_Path_Pseudo = true;   # v3 mounts the Pseudo path, as v4 does: SERVER:DIR for both
}
NFSv4 {
    Graceless = true;           # no 90 s grace period after a restart with recorded clients
    Minor_Versions = 0, 1, 2;
    Only_Numeric_Owners = true; # clients need no idmapper
    RecoveryBackend = fs;
    RecoveryRoot = "$STATE/recovery";
}
NFS_KRB5 {
    Active_krb5 = false;        # no keytab
}
LOG {
    Default_Log_Level = EVENT;
}
EOF
  for e in "$@"; do
    dir=${e%:squash}
    squash=No_Root_Squash
    [ "$dir" = "$e" ] || squash=Root_Squash
    id=$((id + 1))
    cat >>"$f" <<EOF
EXPORT {
    Export_Id = $id;
    Path = "$dir";
    Pseudo = "$dir";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RW;           # the default is None: no access at all
    SecType = sys;
    Squash = $squash;
    Anonymous_Uid = 65534;
    Anonymous_Gid = 65534;
    PrivilegedPort = false;     # allow client source ports above 1023 (non-root clients)
    Attr_Expiration_Time = 0;   # the directories also change behind the server's back (mount-mode dirpv, tests)
    FSAL { Name = VFS; }
}
EOF
  done
}

# write_launcher FILE: the script that runs in the server's network and new mount namespace.
# It drops its copies of the mounts below /run (network namespace files among them: a copy
# would keep those namespaces alive while the server runs), mounts a private /run, starts
# rpcbind, waits for its socket (ganesha exits if it cannot register NFSv3) and becomes
# ganesha.
write_launcher() {
  cat >"$1" <<EOF
set -eu
for p in \$(awk '{ print \$5 }' /proc/self/mountinfo | sort -ru); do
  case \$p in /run/*) umount -l "\$p" 2>/dev/null || true ;; esac
done
readlink /proc/self/ns/mnt >"$STATE/mntns"
mount -t tmpfs -o mode=755 nfs-server-run /run
mkdir -p /run/rpcbind /run/ganesha
chown _rpc /run/rpcbind 2>/dev/null || true # rpcbind runs as _rpc
rpcbind -f &
echo \$! >"$STATE/rpcbind.pid"
for i in \$(seq 100); do
  [ -S /run/rpcbind.sock ] && break
  [ "\$i" -lt 100 ] || { echo "rpcbind did not make /run/rpcbind.sock in 10 s" >&2; exit 1; }
  sleep 0.1
done
exec ganesha.nfsd -F -f "$STATE/ganesha.conf" -L "$STATE/ganesha.log" -p /run/ganesha/ganesha.pid -N NIV_EVENT
EOF
}

show_logs() {
  local f
  for f in "$STATE/server.log" "$STATE/ganesha.log"; do
    [ -s "$f" ] || continue
    printf -- '----- %s (last 25 lines) -----\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}

up() {
  local e dir seen=" "
  [ $# -ge 1 ] || usage
  [ -e "/var/run/netns/$NS" ] || { log "nfs-server: no network namespace $NS"; exit 1; }
  for e in "$@"; do
    dir=${e%:squash}
    # ganesha.conf quotes the path; the pseudo root / cannot be an export's Pseudo path.
    if [[ $dir != /?* || $dir == *[\"\\:[:space:]]* || $dir == */ ]]; then
      log "nfs-server: bad export '$e': want an absolute directory, not /, without a trailing /, quotes, backslashes, colons or spaces, optionally followed by :squash"
      exit 2
    fi
    [[ $seen != *" $dir "* ]] || { log "nfs-server: $dir exported twice"; exit 2; }
    seen+="$dir "
  done
  mkdir -p "$STATE/recovery"
  write_config "$STATE/ganesha.conf.new" "$@"

  if running && cmp -s "$STATE/ganesha.conf.new" "$STATE/ganesha.conf" &&
    [ "$(cat "$STATE/netns" 2>/dev/null)" = "$NS" ] && answers "$NS" >/dev/null 2>&1; then
    rm -f "$STATE/ganesha.conf.new"
    log "NFS server already up in $NS ($STATE)"
    return 0
  fi
  if [ -f "$STATE/ganesha.pid" ] || [ -f "$STATE/rpcbind.pid" ] || [ -f "$STATE/mntns" ]; then
    log "stopping the NFS server that ran with another configuration or was not healthy"
    stop
  fi

  # Another server in NETNS would answer the readiness check in place of this one.
  local busy
  busy=$(nsenter --net="/var/run/netns/$NS" ss -Hltnp "( sport = :111 or sport = :$NFS_PORT or sport = :$MNT_PORT )")
  if [ -n "$busy" ]; then
    log "nfs-server: ports 111, $NFS_PORT or $MNT_PORT are taken in $NS (another NFS server?):"
    echo "$busy" >&2
    rm -f "$STATE/ganesha.conf.new"
    exit 1
  fi

  for e in "$@"; do mkdir -p "${e%:squash}"; done
  mv "$STATE/ganesha.conf.new" "$STATE/ganesha.conf"
  write_launcher "$STATE/launch.sh"
  echo "$NS" >"$STATE/netns"
  : >"$STATE/ganesha.log" # ganesha appends: keep only this run's log
  log "starting the NFS server in $NS: $*"
  # lo up: the readiness check asks 127.0.0.1, and a fresh namespace's lo is down.
  nsenter --net="/var/run/netns/$NS" ip link set lo up
  # Its own session, so a Ctrl-C of the caller does not reach it. Without job control a
  # background job is no process group leader, so setsid does not fork, and nsenter, unshare
  # and bash exec: $! is the launcher's PID, and then ganesha's.
  setsid nsenter --net="/var/run/netns/$NS" unshare --mount --propagation private \
    bash "$STATE/launch.sh" >"$STATE/server.log" 2>&1 </dev/null &
  echo $! >"$STATE/ganesha.pid"

  local deadline=$((SECONDS + ANSWER_SECS))
  until answers "$NS" >/dev/null 2>&1; do
    if ! alive "$(cat "$STATE/ganesha.pid")"; then
      log "nfs-server: ganesha exited while starting"
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "nfs-server: no answer from the NFS server in ${ANSWER_SECS}s"
      break
    fi
    sleep 0.2
  done
  if ! answers "$NS" >/dev/null 2>&1 || ! running; then
    show_logs
    stop
    exit 1
  fi
  log "NFS server up in $NS: NFS $NFS_PORT, MOUNT $MNT_PORT, rpcbind 111 (logs in $STATE)"
}

case ${1:-} in
up)
  [ $# -ge 4 ] || usage
  STATE=$(realpath -m "$2")
  NS=$3
  shift 3
  up "$@"
  ;;
down)
  [ $# -eq 2 ] || usage
  STATE=$(realpath -m "$2")
  if [ -f "$STATE/ganesha.pid" ] || [ -f "$STATE/rpcbind.pid" ] || [ -f "$STATE/mntns" ]; then
    log "stopping the NFS server ($STATE)"
    stop
  fi
  ;;
*) usage ;;
esac
