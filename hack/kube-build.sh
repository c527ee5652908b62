#!/bin/bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl at
# $KVER from the Go module proxy into $KBIN. No container registry or GitHub is needed.
# Skipped when all six binaries are already there. Cold: ~6 min on 2 cores; warm: seconds.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

have_all() {
  local c
  for c in "${CMDS[@]}"; do [ -x "$KBIN/$c" ] || return 1; done
}
if have_all; then
  exit 0
fi

log "building Kubernetes v$KVER binaries into $KBIN (cold: ~6 min on 2 cores)"
mkdir -p "$(dirname "$KBIN")"
src=$(mktemp -d)
# Build next to $KBIN (same filesystem) so the final move is a rename: an interrupted
# build never leaves a partial $KBIN that a later run would take for a complete one.
out=$(mktemp -d "$KBIN.tmp.XXXXXX")
trap 'rm -rf "$src" "$out"' EXIT
trap 'exit 130' INT TERM # so the EXIT trap removes the partial build

cd "$src"
# A scratch module requiring k8s.io/kubernetes. Its go.mod points every staging module
# (k8s.io/api, client-go, ...) at ./staging, which a module consumer cannot use: replace each
# with its published v0.MINOR.PATCH version instead.
printf 'module kubebuild\n\ngo 1.24\n\nrequire k8s.io/kubernetes v%s\n' "$KVER" >go.mod
log "downloading k8s.io/kubernetes@v$KVER"
go mod download -json "k8s.io/kubernetes@v$KVER" >/dev/null
kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$KVER.mod"
{
  echo
  echo "replace ("
  grep -E '^\s+k8s.io/.* => ./staging' "$kmod" | awk -v v="0.${KVER#1.}" '{print "\t" $1 " => " $1 " v" v}'
  echo ")"
} >>go.mod
grep -q ' => k8s.io/api v' go.mod || { echo "kube-build: no staging modules found in $kmod" >&2; exit 1; }

# Blank imports so `go mod tidy` resolves everything the commands need.
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} >tools.go
log "resolving modules (go mod tidy -e)"
# -e: k8s.io/kubernetes has test-only imports that cannot resolve from the proxy; not needed.
go mod tidy -e >tidy.log 2>&1 || { cat tidy.log >&2; exit 1; }

# Without gitVersion the binaries report v0.0.0-master+$Format:%H$, which clients that
# parse the server version choke on.
ldflags="-X k8s.io/component-base/version.gitVersion=v$KVER"
for c in "${CMDS[@]}"; do
  log "building $c"
  go build -ldflags "$ldflags" -o "$out/$c" "k8s.io/kubernetes/cmd/$c"
done

if have_all; then # a concurrent run finished first: keep its binaries
  exit 0
fi
rm -rf "$KBIN" # a partial dir from an older, non-atomic build
mv "$out" "$KBIN"
chmod 755 "$KBIN"
log "Kubernetes v$KVER binaries ready in $KBIN"
