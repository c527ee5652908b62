#!/bin/bash
# Stops node NAME (started by node-up.sh) and removes everything it made: its pods (deleted
# through the API, torn down by its kubelet), its Node object, processes (containerd, kubelet,
# kube-proxy, shims and containers), its network namespace, veth and route, its cgroup parent,
# and $NODES_DIR/NAME (its state and private directories). node1 and the control plane are left
# alone. cluster-down.sh runs it for every node first. Harmless when the node is not up, and
# when run twice.
#
#   hack/node-down.sh node2
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=${1:?usage: node-down.sh NAME (node2, node3, ...)}
[[ $NAME =~ ^node([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 2 ] || { log "node-down: not an added node: '$NAME'"; exit 2; }
K=${BASH_REMATCH[1]}
IP=$(node_ip "$K")
CIDR=$(node_pod_cidr "$K")
NNS=$NETNS-$NAME
N=$NODES_DIR/$NAME
SOCK=$N/containerd/containerd.sock
VETH=veth-$NAME
CGROOT=/$NNS

api_up() {
  [ -e "/var/run/netns/$NETNS" ] && [ -f "$KUBECONFIG_ADMIN" ] &&
    kc --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}
# ours PID: is it one of the node's processes? In its mount namespace (containerd, kubelet,
# kube-proxy, shims) or network namespace, or naming $N on its command line.
node_mntns=$(cat "$N/mntns" 2>/dev/null)
[ "$node_mntns" != "$(readlink /proc/self/ns/mnt)" ] || node_mntns="" # never the host's own
node_netns=""
[ -e "/var/run/netns/$NNS" ] && node_netns="net:[$(stat -L -c %i "/var/run/netns/$NNS")]"
ours() {
  local cmd
  [ -n "$node_mntns" ] && [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$node_mntns" ] && return 0
  [ -n "$node_netns" ] && [ "$(readlink "/proc/$1/ns/net" 2>/dev/null)" = "$node_netns" ] && return 0
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmd == *"$N/"* ]]
}
t0=$SECONDS
was_up=""
if [ -e "$N" ] || [ -e "/var/run/netns/$NNS" ]; then
  was_up=yes
  log "stopping $NAME ($N)"
fi

# 1. Its pods, through the API: the Node object first (so no DaemonSet puts pods back), then
#    the pods bound to it; its kubelet stops their containers and removes their sandboxes.
if api_up; then
  kc --request-timeout=10s delete node "$NAME" --wait=false >/dev/null 2>&1 || true
  if [ -n "$(kc --request-timeout=10s get pods -A --field-selector "spec.nodeName=$NAME" -o name 2>/dev/null)" ]; then
    log "deleting $NAME's pods"
    kc --request-timeout=10s delete pods -A --field-selector "spec.nodeName=$NAME" \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    if [ -f "$N/kubelet.pid" ] && alive "$(cat "$N/kubelet.pid")"; then
      wait_tasks_gone "$SOCK"
    fi
  fi
fi

# 2. Node agents, then leftover containers through containerd, then containerd.
stop_recorded "$N" TERM proxy kubelet
kill_tasks "$SOCK"
stop_recorded "$N" TERM containerd

# 3. Stragglers: anything else of the node's (shims outlive containerd). A shim's children are
#    container init processes, each PID 1 of its own PID namespace: killing one ends its container.
strays=()
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" != $$ ] || continue
  if ours "$pid"; then strays+=("$pid"); fi
done
end_processes "$NAME" "${strays[@]}"

# 4. Network: the route in node1's namespace, the veth, the node's namespace. With all its
#    processes gone, the node's mount namespace (and with it every mount the node made, pod network
#    namespaces included) is gone too.
if [ -e "/var/run/netns/$NETNS" ]; then
  nsx ip route del "$CIDR" via "$IP" 2>/dev/null || true
  nsx ip link del "$VETH" 2>/dev/null || true
fi
[ -e "/var/run/netns/$NNS" ] && { ip netns del "$NNS" 2>/dev/null || true; }

# 5. Its cgroup parent, deepest first (retried: a cgroup lingers briefly after its last task).
for ((i = 0; i < 20; i++)); do
  left=""
  while read -r mnt; do
    [ -d "$mnt$CGROOT" ] || continue
    find "$mnt$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$mnt$CGROOT" ] && left=yes
  done < <(awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo)
  [ -z "$left" ] && break
  sleep 0.5
done
[ -z "$left" ] || log "could not remove cgroup $CGROOT in every hierarchy (processes left in it?)"

# 6. State. Nothing of the node's may be mounted any more, as seen from here or from anyone.
if grep -qF " $N" /proc/self/mountinfo; then
  log "still mounted below $N; keeping it"
  exit 1
fi
rm -rf "$N"
rmdir "$NODES_DIR" 2>/dev/null
if api_up; then kc --request-timeout=10s delete node "$NAME" --ignore-not-found >/dev/null 2>&1 || true; fi

if [ -n "$was_up" ]; then
  log "$NAME down ($((SECONDS - t0))s)"
else
  log "$NAME not running ($N); nothing to stop"
fi
