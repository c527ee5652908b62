#!/bin/bash
# Adds node K (2, 3, ...: nodeK at 10.0.0.K) to the local cluster that cluster-up.sh started
# (cluster-up.sh runs it for nodes 2..$DIRPV_NODES). The node runs its own containerd, kubelet
# and kube-proxy as plain processes, like node1, but in
#   - a network namespace of its own ($NETNS-nodeK), with its address on a veth whose other end
#     is a port of node1's bridge; pod ranges are routed between the namespaces;
#   - a mount namespace of its own, in which /var/lib, /var/log, /run/containerd and /run/netns
#     are (initially empty) directories of its own, $NODES_DIR/nodeK/root/<dir>. Its containers
#     inherit that view, so a hostPath /var/lib/dirpv/x on nodeK is
#     $NODES_DIR/nodeK/root/var/lib/dirpv/x on this machine, not node1's /var/lib/dirpv/x, and
#     /var/lib/kubelet is its own. Other host paths (/srv, /tmp, ...) are shared by all nodes;
#   - a cgroup parent of its own (/$NETNS-nodeK), so the kubelets' QoS cgroups do not collide.
#
#   hack/node-up.sh K          # about 3 s; again while the node is up: only re-imports images
#   $NODES_DIR/nodeK/exec CMD  # run CMD "on nodeK" (its network and mount namespaces)
#   hack/node-down.sh nodeK    # cluster-down.sh runs it for every node first
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K=${1:?usage: node-up.sh K (2, 3, ...)}
[[ $K =~ ^[0-9]+$ ]] && [ "$K" -ge 2 ] && [ "$K" -le 30 ] || { log "node-up: K must be 2..30, not '$K'"; exit 2; }
NAME=$(node_name "$K")
IP=$(node_ip "$K")
CIDR=$(node_pod_cidr "$K")
NNS=$NETNS-$NAME # its network namespace, also the name of its cgroup parent
N=$NODES_DIR/$NAME
ROOT=$N/root
SOCK=$N/containerd/containerd.sock
VETH=veth-$NAME
CGROOT=/$NNS
# Each of these is the node's own; node1's view of them is hidden from it.
PRIVATE_DIRS="/var/lib /var/log /run/containerd /run/netns"

ctrn() { ctr -a "$SOCK" -n k8s.io "$@"; }
pid_alive() { [ -f "$N/$1.pid" ] && alive "$(cat "$N/$1.pid")"; }
# import_images: node1's images, all named ones, into this node's containerd; never pulled.
import_images() {
  local refs
  refs=$(ctrk images ls -q | grep -v '^sha256:')
  # shellcheck disable=SC2086 # one ref per word
  ctrk images export - $refs | ctrn images import - >/dev/null
}

t0=$SECONDS
[ -f "$KUBECONFIG_ADMIN" ] && [ -e "/var/run/netns/$NETNS" ] ||
  { log "no cluster at $WORK (netns $NETNS): run hack/cluster-up.sh first"; exit 1; }
if pid_alive containerd && pid_alive kubelet && pid_alive proxy && node_ready "$NAME"; then
  log "$NAME already up; re-importing images"
  import_images
  exit 0
fi
if [ -e "$N" ] || [ -e "/var/run/netns/$NNS" ]; then
  log "cleaning up an incomplete earlier $NAME"
  "$HACK_DIR/node-down.sh" "$NAME"
fi

on_error() { # line [exit code]
  local rc=${2:-$?} c
  trap - ERR INT TERM
  set +e
  log "node-up $NAME failed (line $1, exit $rc)"
  for c in containerd kubelet proxy; do
    [ -f "$N/$c.log" ] || continue
    printf -- '----- %s (last 20 lines) -----\n' "$N/$c.log" >&2
    tail -n 20 "$N/$c.log" >&2
  done
  rm -rf "$N.logs" && mkdir -p "$N.logs" && cp "$N"/*.log "$N.logs/" 2>/dev/null
  log "logs kept in $N.logs/; tearing $NAME down"
  disown -a
  "$HACK_DIR/node-down.sh" "$NAME"
  exit "$rc"
}
trap 'on_error $LINENO' ERR
trap 'on_error $LINENO 130' INT TERM


mkdir -p "$N/pki" "$N/cni" "$N/containerd" "$ROOT"

# --- network: a namespace with a veth into node1's bridge; routes to each other's pods ---
log "creating network namespace $NNS ($NAME at $IP, pods $CIDR)"
ip netns add "$NNS"
nnx() { nsenter --net="/var/run/netns/$NNS" "$@"; }
nnx ip link set lo up
nsx ip link add "$VETH" type veth peer name eth0 netns "$NNS"
nsx ip link set "$VETH" master dirpv0 up
nnx ip addr add "$IP/24" dev eth0
nnx ip link set eth0 up
# A default route via node1, whose namespace routes each node's pod range: pods of every node
# are reachable, and so are Service IPs from the node's own namespace (kube-proxy's DNAT for
# local processes needs a route to exist first).
nnx ip route add default via "$NODE_IP"
nsx ip route add "$CIDR" via "$IP"
# Both forward between their pod bridge and the link (the CNI bridge plugin sets this too, but
# only when a node's first pod starts).
nsx sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
nnx sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'

# --- cgroup parent: the kubelet requires its cgroupRoot to exist in every hierarchy ---
while read -r mnt; do
  mkdir -p "$mnt$CGROOT"
  if [ -f "$mnt/cpuset.cpus" ] && [ -f "$mnt$CGROOT/cpuset.cpus" ]; then # v1 cpuset starts empty
    cat "$mnt/cpuset.cpus" >"$mnt$CGROOT/cpuset.cpus"
    cat "$mnt/cpuset.mems" >"$mnt$CGROOT/cpuset.mems"
  fi
done < <(awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo)

# --- identity (the Node authorizer knows a kubelet by this exact name) and configuration ---
log "creating $NAME's kubelet certificate and configuration"
sign_cert "$N/pki" kubelet "/O=system:nodes/CN=system:node:$NAME" \
  "extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=IP:$IP,DNS:$NAME"
write_kubeconfig "$N/kubelet.kubeconfig" "$N/pki/kubelet.crt" "$N/pki/kubelet.key"
cp "$WORK/proxy.kubeconfig" "$N/proxy.kubeconfig" # so that its command line names $N
write_containerd_config "$N/containerd/config.toml" "$N/containerd" "$SOCK" "$N/cni"
write_cni_config "$N/cni/10-dirpv.conflist" "$CIDR" "$N/cni-ipam"
write_kubelet_config "$N/kubelet.yaml" "$IP" "$N/pki/kubelet.crt" "$N/pki/kubelet.key" "$SOCK" "$CGROOT"

# --- the mount namespace, made by containerd's launcher; kubelet and kube-proxy join it ---
# Inside it: drop the copies of the host's mounts below the private dirs and $WORK (node1's
# volumes, container root filesystems, network namespace files), then bind the node's own
# directories over the private dirs, shortest first.
cat >"$N/mounts.sh" <<EOF
set -eu
for p in \$(awk '{ print \$5 }' /proc/self/mountinfo | sort -ru); do
  for d in $PRIVATE_DIRS $WORK; do
    case \$p in "\$d" | "\$d"/*) umount -l "\$p" 2>/dev/null || true ;; esac
  done
done
for d in \$(printf '%s\n' $PRIVATE_DIRS | awk '{ print length, \$0 }' | sort -n | cut -d' ' -f2-); do
  mkdir -p "$ROOT\$d" "\$d"
  mount --bind "$ROOT\$d" "\$d"
done
$(declare -f share_mount)
share_mount $HOSTPATH_ROOT
EOF

log "starting $NAME's containerd (own network and mount namespace)"
# Without job control a background job is no process group leader, so setsid does not fork,
# and nsenter, unshare and bash exec: $! is containerd's PID. --propagation private keeps the
# node's mounts out of the host and the host's later mounts out of the node.
setsid nsenter --net="/var/run/netns/$NNS" unshare --mount --propagation private \
  bash -c ". '$N/mounts.sh' && exec containerd --config '$N/containerd/config.toml'" \
  >"$N/containerd.log" 2>&1 </dev/null &
echo $! >"$N/containerd.pid"
wait_until 30 containerd "$NAME's containerd" ctrn version
readlink "/proc/$(cat "$N/containerd.pid")/ns/mnt" >"$N/mntns" # node-down.sh finds its processes by it

# start NAME CMD...: run CMD in the node's network and mount namespaces; log and PID in $N.
start() {
  local name=$1
  shift
  setsid nsenter --target "$(cat "$N/containerd.pid")" --mount --net "$@" >"$N/$name.log" 2>&1 </dev/null &
  echo $! >"$N/$name.pid"
}

log "starting $NAME's kubelet and kube-proxy; importing images"
start kubelet "$KBIN/kubelet" --config="$N/kubelet.yaml" --kubeconfig="$N/kubelet.kubeconfig" \
  --hostname-override="$NAME" --node-ip="$IP" --root-dir="$KUBELET_ROOT"
start proxy "$KBIN/kube-proxy" --kubeconfig="$N/proxy.kubeconfig" --hostname-override="$NAME" \
  --cluster-cidr="$CIDR" --proxy-mode=iptables --conntrack-max-per-core=0
import_images

wait_until 120 kubelet "node $NAME to register" kc get node "$NAME"
wait_until 120 kubelet "node $NAME to be Ready" node_ready "$NAME"
for c in containerd kubelet proxy; do pid_alive "$c" || { log "$c exited"; false; }; done
trap - ERR INT TERM

cat >"$N/exec" <<EOF
#!/bin/sh
# Runs a command on $NAME: in its network and mount namespaces (its /var/lib/dirpv, ...).
exec nsenter --target "\$(cat $N/containerd.pid)" --mount --net "\$@"
EOF
chmod 755 "$N/exec"
log "$NAME is up ($((SECONDS - t0))s): $IP, pods $CIDR; its /var/lib is $ROOT/var/lib"
