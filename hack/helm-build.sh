#!/bin/bash
# Builds helm at exact versions from the Go module proxy into the tools cache, once:
# $HELM4 (the chart's tests and the e2e case use it) and $HELM3 (the chart is checked with it too).
# `go install pkg@version` builds in a module of its own, so helm's Kubernetes modules (newer
# than dirpv's client-go) stay out of dirpv's go.mod. Cold: about 20 minutes for helm 4 on 2 busy
# cores (its modules downloaded too), 5 more for helm 3, which shares most of them; warm: nothing.
#
# usage: helm-build.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# build MODULE VERSION BIN: MODULE/cmd/helm@VERSION installed as BIN.
build() {
  local mod=$1 ver=$2 bin=$3
  [ -x "$bin" ] && return 0
  local dir=${bin%/bin/helm}
  log "building helm $ver into $dir (cold: up to 20 minutes on 2 cores)"
  mkdir -p "$(dirname "$dir")"
  # Built beside its final place (same filesystem) and renamed into it: an interrupted build
  # never leaves a partial directory that a later run would take for a complete one.
  local out
  out=$(mktemp -d "$dir.tmp.XXXXXX")
  trap 'rm -rf "$out"' EXIT
  (cd "$out" && GOWORK=off GOFLAGS=-mod=mod GOBIN="$out/bin" go install -trimpath "$mod/cmd/helm@$ver")
  if [ ! -x "$bin" ]; then # else a concurrent run finished first: keep its binary
    rm -rf "$dir"
    mv "$out" "$dir"
    chmod 755 "$dir"
  fi
  rm -rf "$out"
  trap - EXIT
  log "helm $ver ready: $bin"
}

build helm.sh/helm/v4 "$HELM4_VERSION" "$HELM4"
build helm.sh/helm/v3 "$HELM3_VERSION" "$HELM3"
