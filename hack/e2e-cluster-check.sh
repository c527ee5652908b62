#!/bin/bash
# Smoke test of the local cluster (hack/cluster-up.sh must have run):
#  1. a busybox pod writes through a hostPath volume and exits; the file must be on the host;
#  2. a pod of the dirpv image runs `/dirpv --version` as the image's non-root user
#     (skipped when the dirpv image was not built).
# Exits non-zero, with the pod's description and logs, on any failure.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$SECONDS
BUSYBOX_POD=dirpv-smoke-busybox
DIRPV_POD=dirpv-smoke-dirpv
HOSTDIR=$WORK/smoke-hostpath
TOKEN=$RANDOM$RANDOM

if ! kc --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
  echo "e2e-cluster-check: the local cluster is not up; run hack/cluster-up.sh" >&2
  exit 1
fi

cleanup() {
  kc delete pod "$BUSYBOX_POD" "$DIRPV_POD" --ignore-not-found --grace-period=0 --force \
    --wait=false >/dev/null 2>&1 || true
  rm -rf "$HOSTDIR"
}
trap cleanup EXIT
cleanup # pods left by an interrupted earlier run

# wait_succeeded NAME: wait until pod NAME has finished; fail with its details unless it Succeeded.
wait_succeeded() {
  local pod=$1 phase="" i
  for ((i = 0; i < 180; i++)); do
    phase=$(kc get pod "$pod" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case $phase in Succeeded | Failed) break ;; esac
    sleep 0.5
  done
  if [ "$phase" != Succeeded ]; then
    log "pod $pod: phase '${phase:-unknown}', want Succeeded"
    kc describe pod "$pod" >&2 || true
    kc logs "$pod" >&2 || true
    return 1
  fi
}

# --- 1. busybox + hostPath ---
log "running $BUSYBOX_IMAGE pod with a hostPath volume ($HOSTDIR)"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $BUSYBOX_POD}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo hello-$TOKEN > /data/hello && ls -l /data"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    hostPath: {path: $HOSTDIR, type: DirectoryOrCreate}
EOF
wait_succeeded "$BUSYBOX_POD"
got=$(cat "$HOSTDIR/hello" 2>/dev/null || true)
if [ "$got" != "hello-$TOKEN" ]; then
  log "host file $HOSTDIR/hello has '$got', want 'hello-$TOKEN'"
  exit 1
fi
log "ok: pod wrote $HOSTDIR/hello on the host"

# --- 2. the dirpv image ---
if ! ctrk images ls -q 2>/dev/null | grep -qxF "$DIRPV_IMAGE"; then
  log "skipped: $DIRPV_IMAGE is not in containerd (no ./cmd/dirpv yet?)"
else
  log "running $DIRPV_IMAGE pod: /dirpv --version"
  # runAsNonRoot without runAsUser: the kubelet refuses to start the container unless the
  # image's own user is non-root, which checks the image's USER 65532.
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $DIRPV_POD}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
  - name: main
    image: $DIRPV_IMAGE
    imagePullPolicy: Never
    command: ["/dirpv", "--version"]
EOF
  wait_succeeded "$DIRPV_POD"
  log "ok: $DIRPV_IMAGE runs as non-root: $(kc logs "$DIRPV_POD" | head -n 1)"
fi

log "smoke check passed ($((SECONDS - t0))s)"
