#!/bin/bash
# Measures dirpv on the local cluster (e2e/bench_test.go) and prints a table of ratios measured
# in one run; the figures also go to _output/bench.json. A cluster that is already up is used and
# left running; otherwise one is brought up and torn down afterwards.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=$REPO_ROOT/_output/bench.json
mkdir -p "$(dirname "$out")"
# A cluster brought up here is torn down afterwards: the bench need not delete what it made.
disposable=
if ! kc get --raw /readyz >/dev/null 2>&1; then
  trap '"$HACK_DIR/cluster-down.sh"' EXIT
  "$HACK_DIR/cluster-up.sh"
  disposable=1
else
  log "using the running cluster"
  "$HACK_DIR/cluster-up.sh" # refreshes the images
  # The image keeps its tag: replicas already running would go on with the old build.
  if kc -n dirpv get deployment/dirpv >/dev/null 2>&1; then
    kc -n dirpv rollout restart deployment/dirpv
    kc -n dirpv rollout status deployment/dirpv --timeout=3m
  fi
fi

# dirpv's own logs, kept whatever the outcome: what a slow figure needs explained.
keep_logs() {
  local pod
  for pod in $(kc -n dirpv get pods -o name 2>/dev/null); do
    kc -n dirpv logs "$pod" >"${out%.json}-${pod#pod/}.log" 2>&1 || true
  done
}

log "measuring (log: ${out%.json}.log; dirpv's: ${out%.json}-<pod>.log)"
cd "$REPO_ROOT"
rm -f "${out%.json}"-dirpv-*.log
if ! nsx env KUBECONFIG="$KUBECONFIG_ADMIN" DIRPV_CLUSTER_DIR="$WORK" DIRPV_BENCH="$out" DIRPV_BENCH_DISPOSABLE="$disposable" \
  go test -tags e2e -count=1 -timeout 240m -v -run '^TestBench$' ./e2e/ >"${out%.json}.log" 2>&1; then
  tail -40 "${out%.json}.log" >&2
  keep_logs
  exit 1
fi
keep_logs
# The table: the lines the test prints for it.
grep -E '^([0-9]+ cores, |\|)' "${out%.json}.log"
log "figures: $out"
