#!/bin/bash
# Runs the end-to-end suite (e2e/, build tag e2e) on the local cluster. A cluster that is already
# up (make demo) is used and left running; otherwise one is brought up and torn down afterwards.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The suite needs two nodes (its multi-node cases skip with one); more work too.
export DIRPV_NODES=${DIRPV_NODES:-2}

started=no
if ! kc get --raw /readyz >/dev/null 2>&1; then
  started=yes
  trap '"$HACK_DIR/cluster-down.sh"' EXIT
  "$HACK_DIR/cluster-up.sh"
else
  log "using the running cluster"
  "$HACK_DIR/cluster-up.sh" # refreshes the images and adds missing nodes
fi

# The kernel NFS client check boots a VM from inside the cluster's namespace, which has no way
# out: fetch what it needs now.
"$HACK_DIR/nfs-vm.sh" prepare

# The case Helm installs dirpv with helm 4 (DIRPV_HELM).
"$HACK_DIR/helm-build.sh"

log "running the e2e suite"
cd "$REPO_ROOT"
status=0
# DIRPV_CLUSTER_DIR: the fault cases stop and restart kube-apiserver through $WORK/apiserver.pid;
# DIRPV_NETNS: the kernel NFS client check boots its VM there.
# DIRPV_HELM: the helm of the case Helm.
# DIRPV_E2E_RUN: a -run pattern, to run some cases only (e.g. 'TestE2E/(NFS|Fleet)$').
nsx env KUBECONFIG="$KUBECONFIG_ADMIN" DIRPV_CLUSTER_DIR="$WORK" DIRPV_NETNS="$NETNS" DIRPV_HELM="$HELM4" go test -tags e2e -count=1 -timeout 40m -v -run "${DIRPV_E2E_RUN:-.}" ./e2e/ || status=$?
if [ "$status" -ne 0 ] && [ "$started" = yes ]; then
  mkdir -p "$WORK.logs"
  cp "$WORK"/*.log "$WORK.logs/" 2>/dev/null || true
  for node in $(extra_nodes); do
    mkdir -p "$WORK.logs/$node" && cp "$NODES_DIR/$node"/*.log "$WORK.logs/$node/" 2>/dev/null || true
  done
  # dirpv's own replicas (those still running: a deleted pod's log goes with it).
  for pod in $(kc -n dirpv get pods -l app.kubernetes.io/component=provisioner -o name 2>/dev/null); do
    kc -n dirpv logs "$pod" >"$WORK.logs/${pod#pod/}.log" 2>&1 || true
  done
  log "cluster logs kept in $WORK.logs/"
fi
exit "$status"
