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
# helm, built by helm-build.sh from the Go module proxy (one dir per version, like $KBIN): helm 4
# is the one the chart's tests and the e2e case use; the chart is linted and rendered with helm 3 too.
HELM4_VERSION=v4.3.2
HELM3_VERSION=v3.21.4
HELM4=$CACHE/helm-$HELM4_VERSION/bin/helm
HELM3=$CACHE/helm-$HELM3_VERSION/bin/helm
WORK=${DIRPV_CLUSTER_DIR:-/tmp/dirpv-cluster} # per-cluster state, removed by cluster-down.sh
NETNS=${DIRPV_NETNS:-dirpv}
NODE_IP=10.0.0.1
NODE_NAME=node1
POD_CIDR=10.88.0.0/16
# NODES is how many nodes cluster-up.sh brings up: node1 (the control plane's node, in $NETNS)
# and node2..nodeN (hack/node-up.sh), each in network and mount namespaces of its own, so that
# its /var/lib (hostPath volumes, /var/lib/kubelet) is its own. Their state: $NODES_DIR/<name>.
NODES=${DIRPV_NODES:-1}
# KCM_QPS, when set, raises kube-controller-manager's client rate (default 20 queries per second,
# burst 30), which bounds how fast its PV binder binds claims: `make bench` measures both.
KCM_QPS=${DIRPV_KCM_QPS:-}
KUBELET_ROOT=/var/lib/kubelet               # the standard dir: node-inspecting tools expect it

# dirpv's --hostpath-root on every node: a shared mount (share_mount).
HOSTPATH_ROOT=/var/lib/dirpv

DIRPV_IMAGE=${DIRPV_IMAGE:-dirpv.io/dirpv:v0.1.0}
# The platforms of dirpv's image (OS/ARCH[/VARIANT], as OCI and Docker spell them): the peers'
# set, as far as Go cross-compiles a static binary. The cluster imports the host's.
DIRPV_PLATFORMS=${DIRPV_PLATFORMS:-linux/amd64 linux/arm64 linux/arm/v7 linux/ppc64le linux/s390x}
PAUSE_IMAGE=dirpv.io/pause:1
BUSYBOX_IMAGE=dirpv.io/busybox:1

# The cluster's NFS server (hack/nfs-server.sh: nfs-ganesha and rpcbind in $NETNS), at
# $NODE_IP for pods and every node. Each export's server path is its directory's own path.
# Like /var/lib/dirpv, the export directories keep their data from one cluster to the next.
NFS_STATE=$WORK/nfs
NFS_EXPORT_DIR=/srv/dirpv-nfs/export   # no_root_squash
NFS_SQUASH_DIR=/srv/dirpv-nfs/squashed # root_squash: uid and gid 0 become 65534
NFS_EXPORTS=("$NFS_EXPORT_DIR" "$NFS_SQUASH_DIR:squash")

CTR_SOCK=$WORK/containerd/containerd.sock
KUBECONFIG_ADMIN=$WORK/admin.kubeconfig
NODES_DIR=$WORK/nodes

# The kubectl built with the cluster comes first: it matches the server version.
export PATH=$KBIN:/usr/local/go/bin:$PATH

# dirpv_version, dirpv_commit: what `dirpv --version` prints, given to every build of dirpv
# (the Makefile's, images.sh's, the Dockerfile's build arguments) with -ldflags -X. The commit is
# passed, not read by Go from .git: GOFLAGS may carry -buildvcs=false, and a Docker build has no .git.
dirpv_version() { echo "${DIRPV_VERSION:-$(git -C "$REPO_ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)}"; }
dirpv_commit() { echo "${DIRPV_COMMIT:-$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}"; }

# log prints a timestamped progress line to stderr.
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# nsx runs a command inside the cluster's network namespace. nsenter, not `ip netns exec`:
# the latter remounts /sys, which hides the cgroup mounts from the kubelet.
nsx() { nsenter --net="/var/run/netns/$NETNS" "$@"; }

# kc runs kubectl against the cluster as admin.
kc() { nsx kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# share_mount DIR: makes DIR a mount point of its own, shared, as it is on a host whose / is
# shared (systemd's default; not this machine's). Mounts made below it later then reach the
# containers that mount it with HostToContainer propagation (dirpv's helper agents), and
# containerd refuses to start those on a mount that is neither shared nor a slave.
share_mount() {
  mkdir -p "$1"
  mountpoint -q "$1" || mount --bind "$1" "$1"
  mount --make-rshared "$1"
}

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

# node_name, node_ip, node_pod_cidr K: node K's name, address on the bridge, pod address range.
node_name() { echo "node$1"; }
node_ip() { echo "10.0.0.$1"; }
node_pod_cidr() { echo "10.$((87 + $1)).0.0/16"; }

# extra_nodes prints the names of the nodes besides node1 that have state in $NODES_DIR.
extra_nodes() {
  local d
  for d in "$NODES_DIR"/*/; do
    [ -d "$d" ] && basename "$d"
  done
  return 0
}

# The configuration of a node's containerd, CNI and kubelet: the same for every node.
#
# write_containerd_config FILE DIR SOCK CNI_DIR: containerd keeps its state in DIR.
# restrict_oom_score_adj: this sandbox lacks CAP_SYS_RESOURCE, so runc cannot lower
# oom_score_adj below ours ("can't get final child's PID from pipe: EOF" otherwise).
write_containerd_config() {
  cat >"$1" <<EOF
version = 2
root = "$2/root"
state = "$2/state"
[grpc]
  address = "$3"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "$PAUSE_IMAGE"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$4"
EOF
}

# write_cni_config FILE POD_CIDR IPAM_DIR: a bridge with host-local IPAM; its lease files live
# in IPAM_DIR (not the default /var/lib/cni), so no stale address survives a cluster.
write_cni_config() {
  cat >"$1" <<EOF
{"cniVersion": "0.4.0", "name": "dirpv", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$3",
            "ranges": [[{"subnet": "$2"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
}

# write_kubelet_config FILE ADDRESS CERT KEY SOCK [CGROUP_ROOT]
# cgroupfs: no systemd here. resolvConf "": no host resolver to hand to pods. Eviction
# thresholds low: the kubelet cannot stat the root block device here. Image GC off: the
# imported images cannot be pulled back.
# crashLoopBackOff: the e2e fault cases SIGKILL dirpv's leader 10+ times in a row, and the
# kubelet's default restart backoff (10 s doubling to 5 min, reset only after 10 min without
# a crash) would soon leave neither replica running. kubelet v1.34 caps it only behind the
# alpha gate KubeletCrashLoopBackOffMax (off by default; the cap must then be set, 1-300 s).
# With a 1 s cap a container killed after running more than 2 s restarts at once, and one
# that keeps crashing is retried about every 10 s (the pod worker's requeue period).
# maxPods: `make bench` runs a StatefulSet of 200 replicas on one node (the default is 110).
write_kubelet_config() {
  cat >"$1" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $WORK/pki/ca.crt}}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$5
failSwapOn: false
tlsCertFile: $3
tlsPrivateKeyFile: $4
address: $2
resolvConf: ""
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
featureGates: {KubeletCrashLoopBackOffMax: true}
crashLoopBackOff: {maxContainerRestartPeriod: 1s}
maxPods: 250
EOF
  if [ -n "${6:-}" ]; then echo "cgroupRoot: $6" >>"$1"; fi
}

# write_kubeconfig FILE CERT KEY: a kubeconfig for the cluster with a client certificate.
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 "$WORK/pki/ca.crt")
users:
- name: user
  user:
    client-certificate-data: $(base64 -w0 "$2")
    client-key-data: $(base64 -w0 "$3")
contexts:
- name: local
  context: {cluster: local, user: user}
current-context: local
EOF
  chmod 600 "$1"
}

# sign_cert DIR NAME SUBJECT EXTENSIONS: DIR/NAME.key and DIR/NAME.crt, signed by the
# cluster's CA (EXTENSIONS as for printf %b: lines separated by \n).
sign_cert() {
  (
    cd "$1" || exit 1
    openssl genrsa -out "$2.key" 2048 2>/dev/null &&
      openssl req -new -key "$2.key" -subj "$3" -out "$2.csr" 2>/dev/null &&
      printf '%b\n' "$4" >"$2.ext" &&
      openssl x509 -req -in "$2.csr" -CA "$WORK/pki/ca.crt" -CAkey "$WORK/pki/ca.key" \
        -CAcreateserial -CAserial "$1/ca.srl" -days 30 -extfile "$2.ext" -out "$2.crt" 2>/dev/null
  )
}

# node_ready NAME: is the node Ready?
node_ready() {
  [ "$(kc --request-timeout=5s get node "$1" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Teardown helpers for cluster-down.sh and node-down.sh. Each script defines `ours PID`: is
# that process one of what it tears down?

# kill_wait SIGNAL SECONDS PID...: send SIGNAL, then SIGKILL whatever is left after SECONDS.
kill_wait() {
  local sig=$1 secs=$2 i
  shift 2
  [ $# -gt 0 ] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    alive "$@" || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# stop_recorded DIR SIGNAL NAME...: stop the processes recorded in DIR/NAME.pid, together, and
# wait for them. A PID file that outlived its process (PID reuse) is ignored: see `ours`.
stop_recorded() {
  local dir=$1 sig=$2 name pid pids=()
  shift 2
  for name in "$@"; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    if ours "$pid"; then pids+=("$pid"); fi
    rm -f "$dir/$name.pid"
  done
  kill_wait "$sig" 10 "${pids[@]}"
}

# tasks_of SOCK: the containers the containerd at SOCK runs.
tasks_of() { [ -S "$1" ] && ctr -a "$1" -n k8s.io tasks ls -q 2>/dev/null; }

# wait_tasks_gone SOCK: wait up to 30 s until the containerd at SOCK runs no containers (the
# kubelet tearing down the pods just deleted).
wait_tasks_gone() {
  local i
  for ((i = 0; i < 60; i++)); do
    [ -z "$(tasks_of "$1")" ] && return 0
    sleep 0.5
  done
}

# kill_tasks SOCK: SIGKILL and delete the containers the containerd at SOCK still runs.
kill_tasks() {
  local sock=$1 t i
  [ -n "$(tasks_of "$sock")" ] || return 0
  log "killing leftover containers"
  for t in $(tasks_of "$sock"); do ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  for ((i = 0; i < 20; i++)); do
    for t in $(tasks_of "$sock"); do ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
    [ -z "$(tasks_of "$sock")" ] && break
    sleep 0.5
  done
}

# end_processes WHAT PID...: end leftover processes. containerd shims among them outlive
# containerd; a shim's children are container init processes, each PID 1 of its own PID
# namespace, and killing one ends its whole container, so they go first.
end_processes() {
  local what=$1 d pid ppid stat exe children=()
  shift
  [ $# -gt 0 ] || return 0
  local -A shims=()
  for pid in "$@"; do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    if [[ ${exe##*/} == containerd-shim* ]]; then shims[$pid]=1; fi
  done
  if [ ${#shims[@]} -gt 0 ]; then
    for d in /proc/[0-9]*; do
      stat=$(cat "$d/stat" 2>/dev/null) || continue
      read -r _ ppid _ <<<"${stat##*) }" # fields after "PID (comm) ": state ppid ...
      if [ -n "${shims[$ppid]:-}" ]; then children+=("${d#/proc/}"); fi
    done
  fi
  log "ending $# leftover process(es) of $what"
  [ ${#children[@]} -eq 0 ] || kill -9 "${children[@]}" 2>/dev/null || true
  kill_wait TERM 5 "$@"
}

# wait_until SECONDS COMPONENT WHAT CMD...: poll CMD until it succeeds; fail at the deadline, or
# at once when COMPONENT (if not empty) has exited. The script defines `pid_alive COMPONENT`;
# waiting_for names the component waited on, for the logs a failing script shows.
waiting_for=""
wait_until() {
  local secs=$1 comp=$2 what=$3
  shift 3
  local deadline=$((SECONDS + secs))
  waiting_for=$comp
  until "$@" >/dev/null 2>&1; do
    if [ -n "$comp" ] && ! pid_alive "$comp"; then
      log "$comp exited while waiting for $what"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
  waiting_for=""
}

# vm_kernel KPKG DIR TMP MODULE...: Debian's kernel package KPKG, for booting under qemu: its
# vmlinuz and the MODULEs with what they depend on, listed in DIR/KPKG/load-order in the order to
# load them, fetched once into DIR/KPKG (extracted, never installed). TMP is scratch space.
# Returns 1, with apt's output, when the package cannot be downloaded.
vm_kernel() {
  local kpkg=$1 dir=$2 tmp=$3
  shift 3
  local kdir=$dir/$kpkg
  [ ! -f "$kdir/load-order" ] || return 0
  log "fetching $kpkg"
  mkdir -p "$dir" "$tmp/deb"
  # apt-get download as root warns that _apt cannot write here: harmless, shown only on failure
  if ! (cd "$tmp/deb" && apt-get download -q "$kpkg") >"$tmp/apt.log" 2>&1; then
    # maybe just stale package lists
    if ! { apt-get update -qq && (cd "$tmp/deb" && apt-get download -q "$kpkg"); } >"$tmp/apt.log" 2>&1; then
      cat "$tmp/apt.log" >&2
      return 1
    fi
  fi
  dpkg -x "$tmp"/deb/*.deb "$tmp/kernel"
  local modroot
  modroot=$(echo "$tmp"/kernel/lib/modules/*/kernel)
  # The host has no modinfo and the deb no modules.dep: each .ko names its dependencies in its
  # depends= field; those load first.
  local -A seen=()
  local order=() m
  _vm_kofile() { find "$modroot" -name "$1.ko" | head -1; }
  _vm_addmod() {
    local m=$1 f d
    [ -z "${seen[$m]:-}" ] || return 0
    seen[$m]=1
    f=$(_vm_kofile "$m")
    [ -n "$f" ] || { echo "module $m is not in $kpkg" >&2; exit 1; }
    for d in $(grep -ao 'depends=[a-z0-9_,-]*' "$f" | head -1 | cut -d= -f2 | tr ',' ' '); do _vm_addmod "$d"; done
    order+=("$m")
  }
  for m in "$@"; do _vm_addmod "$m"; done
  mkdir -p "$tmp/k/modules"
  cp "$tmp"/kernel/boot/vmlinuz-* "$tmp/k/vmlinuz"
  for m in "${order[@]}"; do cp "$(_vm_kofile "$m")" "$tmp/k/modules/"; done
  echo "${order[*]}" >"$tmp/k/load-order"
  # renamed into place whole: a concurrent run sees either nothing or all of it
  mv -T "$tmp/k" "$kdir" 2>/dev/null || [ -f "$kdir/load-order" ]
}

# vm_initrd ROOT INIT INITRD TMP: packs the directory ROOT, with INIT as its /init and the
# modules and load-order of vm_kernel's directory (INITRD's) in lib/modules, into INITRD, a
# gzipped cpio, and removes that directory's older initramfs images. TMP is scratch space.
vm_initrd() {
  local root=$1 init=$2 initrd=$3 tmp=$4
  local kdir=${initrd%/*}
  cp "$kdir"/modules/*.ko "$kdir/load-order" "$root/lib/modules/"
  cp "$init" "$root/init"
  chmod 755 "$root/init"
  (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$tmp/initrd.gz"
  # Others were built from an older init script or tools. Only old ones go: another worktree's
  # (another init script, same cache) may be in use right now.
  find "$kdir" -maxdepth 1 -name 'initrd-*.gz' ! -name "${initrd##*/}" -mmin +60 -delete
  mv "$tmp/initrd.gz" "$initrd"
}
