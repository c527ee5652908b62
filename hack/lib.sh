# shellcheck shell=bash disable=SC2034  # settings used by the scripts that source this
# Shared settings for the local-cluster scripts in hack/. Source it; do not run it.
#
# The cluster is a real single-node Kubernetes inside a private network namespace ($NETNS):
# the apiserver refuses a loopback advertise address, so the node gets its own address
# ($NODE_IP) on a bridge device that exists only in that namespace.

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)

KVER=${KVER:-1.34.4}                        # v1.34: kubelet 1.35+ refuses cgroup v1
CACHE=${DIRPV_CACHE:-$HOME/.cache/dirpv}    # survives cluster-down.sh
KBIN=$CACHE/kube-v$KVER/bin                 # one dir per version, so a new KVER rebuilds
WORK=${DIRPV_CLUSTER_DIR:-/tmp/dirpv-cluster} # per-cluster state, removed by cluster-down.sh
NETNS=${DIRPV_NETNS:-dirpv}
NODE_IP=10.0.0.1
NODE_NAME=node1
KUBELET_ROOT=/var/lib/kubelet               # the standard dir: node-inspecting tools expect it

DIRPV_IMAGE=${DIRPV_IMAGE:-dirpv.io/dirpv:v0.1.0}
PAUSE_IMAGE=dirpv.io/pause:1
BUSYBOX_IMAGE=dirpv.io/busybox:1

CTR_SOCK=$WORK/containerd/containerd.sock
KUBECONFIG_ADMIN=$WORK/admin.kubeconfig

# The kubectl built with the cluster comes first: it matches the server version.
export PATH=$KBIN:/usr/local/go/bin:$PATH

# log prints a timestamped progress line to stderr.
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# nsx runs a command inside the cluster's network namespace. nsenter, not `ip netns exec`:
# the latter remounts /sys, which hides the cgroup mounts from the kubelet.
nsx() { nsenter --net="/var/run/netns/$NETNS" "$@"; }

# kc runs kubectl against the cluster as admin.
kc() { nsx kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ctrk runs ctr against the cluster's containerd, in the namespace the kubelet uses.
ctrk() { ctr -a "$CTR_SOCK" -n k8s.io "$@"; }

# alive PID...: is any of them running? A zombie is not: it has exited and only waits for
# its parent (init, once the script that started it is gone) to reap it.
alive() {
  local pid stat
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    [[ ${stat##*) } == Z* ]] || return 0
  done
  return 1
}
