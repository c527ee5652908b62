#!/bin/bash
# make demo: a local cluster, dirpv deployed from its manifests, the StatefulSet example running,
# and its data read back after every pod was deleted. The cluster keeps running afterwards.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$HACK_DIR/cluster-up.sh"
cd "$REPO_ROOT"

log "deploying dirpv: kubectl apply -k manifests/overlays/hostpath"
kc apply -k manifests/overlays/hostpath
kc -n dirpv rollout status deployment/dirpv --timeout=3m

log "running the StatefulSet example (busybox httpd standing in for nginx: no registry here)"
kc apply -k e2e/testdata/web
kc rollout status statefulset/web --timeout=5m

pods=(web-0 web-1 web-2)
for p in "${pods[@]}"; do
  kc exec "$p" -- sh -c 'echo "hello $(hostname)" > /usr/share/nginx/html/index.html'
done
log "deleting every pod of the StatefulSet"
kc delete pods -l app=nginx --wait=true
kc rollout status statefulset/web --timeout=5m
# rollout status can report the old revision's pods; wait until each new pod is Ready.
kc wait --for=condition=Ready pod -l app=nginx --timeout=3m

echo
kc get sc,pvc,pv,pods -o wide
echo
log "each replica reads its own volume after its pod was replaced:"
for p in "${pods[@]}"; do
  printf '%s: %s\n' "$p" "$(kc exec "$p" -- cat /usr/share/nginx/html/index.html)"
done
echo
echo "The cluster keeps running. Use it with:"
echo "  $WORK/kubectl get pvc,pv"
echo "Stop it with: make demo-down"
