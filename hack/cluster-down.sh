#!/bin/bash
# Stops the local cluster that hack/cluster-up.sh started and removes its state: processes
# (the NFS server's too), pods' sandboxes and network namespaces, mounts, the netns $NETNS,
# $KUBELET_ROOT and $WORK. The NFS export directories keep their data.
# The build cache ($CACHE: Kubernetes binaries, image tarballs) stays.
# Harmless when nothing is up, and when run twice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$SECONDS
NETNS_FILE=/var/run/netns/$NETNS

# ours PID: is PID one of this cluster's processes? All of them name $WORK on their command
# line; checking it guards against a PID file that outlived its process (PID reuse).
ours() {
  local cmd
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmd == *"$WORK/"* ]]
}

was_up=""
if [ -e "$WORK" ] || [ -e "$NETNS_FILE" ]; then
  was_up=yes
  log "stopping the local cluster ($WORK)"
fi

# 0. The other nodes first (node-down.sh deletes their pods through the API while it runs).
for node in $(extra_nodes); do "$HACK_DIR/node-down.sh" "$node"; done

# 1. Stop the controllers first, so nothing recreates or schedules the pods deleted next.
#    SIGKILL: the cluster's state is thrown away anyway, and they take seconds to exit.
stop_recorded "$WORK" KILL kcm sched

# 2. Delete all pods and let the kubelet tear them down: it stops their containers, unmounts
#    their volumes and removes their sandboxes with the CNI network namespaces containerd made
#    (killing tasks by hand would leave those namespaces behind).
if [ -e "$NETNS_FILE" ] && [ -f "$KUBECONFIG_ADMIN" ] && [ -f "$WORK/kubelet.pid" ] &&
  alive "$(cat "$WORK/kubelet.pid")" && kc --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
  if [ -n "$(kc --request-timeout=10s get pods -A -o name 2>/dev/null)" ]; then
    log "deleting pods"
    kc --request-timeout=10s delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    wait_tasks_gone "$CTR_SOCK"
  fi
fi

# 3. Node agents, then whatever containers are still running, through containerd.
stop_recorded "$WORK" TERM proxy kubelet
kill_tasks "$CTR_SOCK"

# 4. The rest, etcd last: an apiserver whose etcd is gone takes 10+ s to shut down.
stop_recorded "$WORK" TERM containerd apiserver
stop_recorded "$WORK" TERM etcd

# 4b. The NFS server (its export directories and their data stay).
"$HACK_DIR/nfs-server.sh" down "$NFS_STATE"

# 5. Stragglers: processes of this cluster without a PID file (an interrupted start), and
#    containerd shims, which outlive containerd. A shim's children are container init
#    processes, each PID 1 of its own PID namespace: killing one ends its whole container.
#    Only our binaries naming $WORK are candidates, never a shell that merely mentions it.
strays=()
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case ${exe##*/} in
  etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | containerd | containerd-shim* | ganesha.nfsd) ;;
  *) continue ;;
  esac
  if ours "$pid"; then strays+=("$pid"); fi
done
end_processes "this cluster" "${strays[@]}"

# 6. Unmount everything below $WORK (container rootfs, shm) and the kubelet's root dir (which
#    it bind-mounts onto itself; pod volumes), deepest first. Lazy, since a busy mount must
#    not stop the teardown; repeated, since mounts can be stacked on one path.
mounts_below() {
  awk -v w="$WORK" -v k="$KUBELET_ROOT" '
    { p = $5 } p == w || index(p, w "/") == 1 || p == k || index(p, k "/") == 1 { print p }
  ' /proc/self/mountinfo | sort -ru
}
for ((i = 0; i < 5; i++)); do
  m=$(mounts_below)
  [ -n "$m" ] || break
  [ "$i" -gt 0 ] || log "unmounting $(wc -l <<<"$m") mount point(s)"
  while read -r p; do umount -l "$p" 2>/dev/null || true; done <<<"$m"
done

# 7. Network namespaces: ours, and pod namespaces (cni-*) that no process uses any more,
#    left behind when a sandbox could not be torn down by the kubelet.
if [ -e "$NETNS_FILE" ]; then
  ip netns del "$NETNS" 2>/dev/null || true
fi
if compgen -G "/var/run/netns/cni-*" >/dev/null; then
  # A process may exit between the glob and its readlink: that is not a failure (pipefail).
  in_use=$(for d in /proc/[0-9]*; do readlink "$d/ns/net" 2>/dev/null || true; done | sort -u)
  for f in /var/run/netns/cni-*; do
    ino=$(stat -L -c %i "$f" 2>/dev/null) || continue
    if ! grep -qxF "net:[$ino]" <<<"$in_use"; then
      log "removing leftover pod network namespace ${f##*/}"
      ip netns del "${f##*/}" 2>/dev/null || true
    fi
  done
fi

# 8. State. Only delete directories once nothing is mounted below them: rm -rf through a
#    still-mounted volume would delete the volume's data on the host.
if [ -n "$(mounts_below)" ]; then
  log "still mounted, keeping $WORK and $KUBELET_ROOT:"
  mounts_below >&2
  exit 1
fi
rm -rf "$WORK" "$KUBELET_ROOT"
# Container logs of this cluster's pods (the kubelet's fixed locations).
rm -rf /var/log/pods /var/log/containers

if [ -n "$was_up" ]; then
  log "cluster down ($((SECONDS - t0))s)"
else
  log "no local cluster running ($WORK); nothing to stop"
fi
