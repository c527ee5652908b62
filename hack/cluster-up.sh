#!/bin/bash
# Starts a real single-node Kubernetes cluster (v$KVER) for dirpv on this machine, without a
# container engine: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
# kubelet and kube-proxy run as plain processes inside the network namespace $NETNS, with
# PID files and logs in $WORK, and so does an NFS server (hack/nfs-server.sh, state in
# $NFS_STATE) exporting $NFS_EXPORT_DIR and $NFS_SQUASH_DIR at $NODE_IP. Images come from hack/images.sh (imported, never pulled).
#
#   hack/cluster-up.sh          # ~15-20 s with cached binaries; ~6 min more the first time
#   $WORK/kubectl get nodes     # kubectl wrapper written at the end
#   hack/cluster-down.sh        # stops it and removes $WORK
#
# Running it while the cluster is up only rebuilds and re-imports the dirpv image.
# A failed start prints the relevant logs, keeps a copy in $WORK.logs, and cleans up.
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

P=$WORK/pki
COMPONENTS=(etcd apiserver containerd kcm sched kubelet proxy) # start order
t0=$SECONDS

pid_alive() { # component: is the process recorded in its PID file running?
  local f=$WORK/$1.pid
  [ -f "$f" ] && alive "$(cat "$f")"
}

cluster_healthy() {
  [ -f "$KUBECONFIG_ADMIN" ] && [ -e "/var/run/netns/$NETNS" ] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  kc --request-timeout=5s get --raw /readyz >/dev/null 2>&1 && node_ready "$NODE_NAME" &&
    kc --request-timeout=5s get serviceaccount default -n default >/dev/null 2>&1
}

# up_nodes brings up nodes 2..$NODES (node-up.sh only re-imports the images of one that runs).
up_nodes() {
  local k
  for ((k = 2; k <= NODES; k++)); do "$HACK_DIR/node-up.sh" "$k"; done
}

write_kubectl_wrapper() {
  cat >"$WORK/kubectl" <<EOF
#!/bin/sh
# kubectl for the local dirpv cluster (its apiserver is reachable only inside netns $NETNS).
exec nsenter --net=/var/run/netns/$NETNS $KBIN/kubectl --kubeconfig $KUBECONFIG_ADMIN "\$@"
EOF
  chmod 755 "$WORK/kubectl"
}

print_usage() {
  log "cluster is up (${1}s): nodes $(kc get nodes -o jsonpath='{.items[*].metadata.name}'), Kubernetes v$KVER"
  cat >&2 <<EOF
    kubectl:   $WORK/kubectl get pods -A
               (or: nsenter --net=/var/run/netns/$NETNS $KBIN/kubectl --kubeconfig $KUBECONFIG_ADMIN ...)
    images:    $DIRPV_IMAGE  $BUSYBOX_IMAGE  (imagePullPolicy: Never or IfNotPresent)
    nfs:       $NODE_IP:$NFS_EXPORT_DIR (no_root_squash), $NODE_IP:$NFS_SQUASH_DIR (root_squash); NFSv3/v4, TCP
    re-import: hack/images.sh        logs: $WORK/*.log
    stop:      hack/cluster-down.sh
EOF
}

"$HACK_DIR/install-deps.sh"
"$HACK_DIR/kube-build.sh"

# --- already up? then only refresh the images ---
if cluster_healthy; then
  log "cluster already up; refreshing images"
  "$HACK_DIR/nfs-server.sh" up "$NFS_STATE" "$NETNS" "${NFS_EXPORTS[@]}" # restarted if it died
  "$HACK_DIR/images.sh" all
  up_nodes
  write_kubectl_wrapper
  print_usage $((SECONDS - t0))
  exit 0
fi
if [ -e "$WORK" ] || [ -e "/var/run/netns/$NETNS" ]; then
  log "cleaning up an incomplete earlier cluster"
  "$HACK_DIR/cluster-down.sh"
fi

# --- from here on, any failure shows the logs and tears down what was started ---
on_error() {   # line [exit code]
  local rc=${2:-$?} c shown=""
  trap - ERR INT TERM
  set +e
  [ "$rc" -ne 0 ] || rc=1
  log "cluster-up failed (line $1, exit $rc)"
  for c in "${COMPONENTS[@]}"; do
    [ -f "$WORK/$c.log" ] || continue
    # Show the log of what we were waiting for, and of anything that died.
    if [ "$c" = "$waiting_for" ] || { [ -f "$WORK/$c.pid" ] && ! pid_alive "$c"; }; then
      printf -- '----- %s (last 25 lines) -----\n' "$WORK/$c.log" >&2
      tail -n 25 "$WORK/$c.log" >&2
      shown=yes
    fi
  done
  [ -n "$shown" ] || log "no component log to blame; see the output above"
  if compgen -G "$WORK/*.log" >/dev/null; then
    rm -rf "$WORK.logs" && mkdir -p "$WORK.logs" && cp "$WORK"/*.log "$WORK.logs/"
    log "full logs kept in $WORK.logs/"
  fi
  log "tearing down"
  disown -a # the daemons are our background jobs: no "Killed" notices when they are stopped
  "$HACK_DIR/cluster-down.sh"
  exit "$rc"
}
trap 'on_error $LINENO' ERR
trap 'on_error $LINENO 130' INT TERM


# start NAME CMD...: run CMD inside the netns in a session of its own (so a Ctrl-C of this
# script does not reach it), log and PID file in $WORK. Without job control a background
# job is no process group leader, so setsid does not fork and nsenter execs: $! is CMD's PID.
start() {
  local name=$1
  shift
  setsid nsenter --net="/var/run/netns/$NETNS" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  echo $! >"$WORK/$name.pid"
}

mkdir -p "$WORK"

# --- images: build now, so the pause image exists before the kubelet needs a sandbox ---
"$HACK_DIR/images.sh" build

# --- network namespace with the node's own address ---
# The apiserver refuses a loopback advertise address and no address outside the namespace
# may be used, so the node address lives on a bridge inside it ("dummy" links are not in
# this kernel).
log "creating network namespace $NETNS (node address $NODE_IP)"
ip netns add "$NETNS"
nsx ip link set lo up
nsx ip link add dirpv0 type bridge
nsx ip addr add "$NODE_IP/24" dev dirpv0
nsx ip link set dirpv0 up

# --- the NFS server, on every address of the namespace: pods and all nodes reach $NODE_IP ---
"$HACK_DIR/nfs-server.sh" up "$NFS_STATE" "$NETNS" "${NFS_EXPORTS[@]}"
# Clients of the squashed export act as the anonymous user: let it make volumes there.
chmod 1777 "$NFS_SQUASH_DIR"

# --- throwaway PKI, one per cluster ---
log "creating PKI"
mkdir -p "$P"
(
  trap - ERR # the parent reports the failure
  cd "$P"
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -nodes -key ca.key -subj "/CN=dirpv-local-ca" -days 30 -out ca.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  sign_cert "$P" apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\nextendedKeyUsage=serverAuth"
  sign_cert "$P" admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  # The Node authorizer knows a kubelet by this exact identity.
  sign_cert "$P" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  sign_cert "$P" kcm "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  sign_cert "$P" sched "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  sign_cert "$P" proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
)
for k in admin kcm sched kubelet proxy; do
  write_kubeconfig "$WORK/$k.kubeconfig" "$P/$k.crt" "$P/$k.key"
done

# --- control plane ---
log "starting etcd and kube-apiserver"
start etcd etcd --data-dir "$WORK/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
# --kubelet-preferred-address-types=InternalIP: `kubectl logs/exec` would otherwise try DNS.
# --shutdown-send-retry-after: on SIGTERM it drains requests in flight and exits within seconds;
# without it the HTTP server waits out --request-timeout (60 s) for open watches before it
# exits. The e2e apiserver-down case stops and restarts it; cluster-down.sh is quicker too.
start apiserver "$KBIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 \
  --advertise-address="$NODE_IP" --secure-port=6443 \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
  --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" \
  --kubelet-preferred-address-types=InternalIP --shutdown-send-retry-after=true

# --- container runtime (started while the apiserver comes up) ---
share_mount "$HOSTPATH_ROOT"
log "starting containerd"
mkdir -p "$WORK/cni" "$WORK/containerd"
write_containerd_config "$WORK/containerd/config.toml" "$WORK/containerd" "$CTR_SOCK" "$WORK/cni"
write_cni_config "$WORK/cni/10-dirpv.conflist" "$POD_CIDR" "$WORK/cni-ipam"
start containerd containerd --config "$WORK/containerd/config.toml"
wait_until 30 containerd "containerd" ctrk version
"$HACK_DIR/images.sh" import

wait_until 90 apiserver "kube-apiserver /readyz" kc --request-timeout=2s get --raw /readyz
log "kube-apiserver ready; starting kube-controller-manager, kube-scheduler, kubelet, kube-proxy"
start kcm "$KBIN/kube-controller-manager" --kubeconfig="$WORK/kcm.kubeconfig" \
  --authentication-kubeconfig="$WORK/kcm.kubeconfig" --authorization-kubeconfig="$WORK/kcm.kubeconfig" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --leader-elect=false \
  ${KCM_QPS:+--kube-api-qps="$KCM_QPS" --kube-api-burst="$((KCM_QPS * 3 / 2))"}
start sched "$KBIN/kube-scheduler" --kubeconfig="$WORK/sched.kubeconfig" \
  --authentication-kubeconfig="$WORK/sched.kubeconfig" --authorization-kubeconfig="$WORK/sched.kubeconfig" \
  --leader-elect=false

write_kubelet_config "$WORK/kubelet.yaml" "$NODE_IP" "$P/kubelet.crt" "$P/kubelet.key" "$CTR_SOCK"
mkdir -p "$KUBELET_ROOT"
start kubelet "$KBIN/kubelet" --config="$WORK/kubelet.yaml" --kubeconfig="$WORK/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$KUBELET_ROOT"
# --conntrack-max-per-core=0: nf_conntrack_max is not writable here.
start proxy "$KBIN/kube-proxy" --kubeconfig="$WORK/proxy.kubeconfig" --hostname-override="$NODE_NAME" \
  --cluster-cidr="$POD_CIDR" --proxy-mode=iptables --conntrack-max-per-core=0

# `kubectl wait` fails at once while the node object does not exist, so poll instead.
log "waiting for node $NODE_NAME to be Ready"
wait_until 120 kubelet "node $NODE_NAME to register" kc get node "$NODE_NAME"
wait_until 120 kubelet "node $NODE_NAME to be Ready" node_ready "$NODE_NAME"
# Pods are refused until the service-account controller has made the namespace's account.
wait_until 60 kcm "ServiceAccount default/default" kc get serviceaccount default -n default
for c in "${COMPONENTS[@]}"; do
  pid_alive "$c" || { waiting_for=$c; log "$c exited"; false; }
done

up_nodes
trap - ERR INT TERM
write_kubectl_wrapper
print_usage $((SECONDS - t0))
