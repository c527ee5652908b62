#!/bin/bash
# Builds the local cluster's container images without a container engine and, when the
# cluster's containerd is running, imports them:
#   dirpv.io/dirpv:v0.1.0  ($DIRPV_IMAGE) the provisioner: /dirpv, user 65532:65532, like the
#                          Dockerfile's distroless static-debian12:nonroot image
#   dirpv.io/pause:1       the pod sandbox image (containerd's sandbox_image)
#   dirpv.io/busybox:1     a shell image for tests, from Debian's busybox-static
# The names carry a registry host on purpose: containerd would turn "dirpv/x:1" into
# "docker.io/dirpv/x:1", and pods would then have to spell it that way.
#
# usage: images.sh [all|build|import]   (default all; import needs the tarballs built)
# The dirpv image is rebuilt every time; pause and busybox only when their inputs changed.
# DIRPV_BIN=/path/to/dirpv packs that (static) binary instead of building ./cmd/dirpv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:-all}
case $mode in all | build | import) ;; *) echo "usage: $0 [all|build|import]" >&2; exit 2 ;; esac

IMG=$CACHE/images # survives cluster-down.sh, so pause and busybox are built once
GOBUILD=(go build -trimpath -ldflags "-s -w")
export CGO_ENABLED=0 # static binaries: the images have no libc

# passwd/group for an image: root plus, optionally, the distroless "nonroot" user.
write_etc() { # rootfs with_nonroot
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\n' >"$1/etc/group"
  if [ "$2" = yes ]; then
    printf 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >>"$1/etc/passwd"
    printf 'nonroot:x:65532:\n' >>"$1/etc/group"
  fi
}

build_mkimage() {
  mkdir -p "$IMG"
  # Its own module, so go-containerregistry stays out of the main module's go.mod.
  (cd "$HACK_DIR/mkimage" && "${GOBUILD[@]}" -o "$IMG/mkimage" .)
}

build_dirpv() {
  local root=$IMG/rootfs-dirpv
  rm -rf "$root"
  mkdir -p "$root"
  if [ -n "${DIRPV_BIN:-}" ]; then
    log "building $DIRPV_IMAGE from $DIRPV_BIN"
    cp "$DIRPV_BIN" "$root/dirpv"
  elif [ ! -d "$REPO_ROOT/cmd/dirpv" ]; then
    log "no ./cmd/dirpv yet: skipping $DIRPV_IMAGE"
    rm -f "$IMG/dirpv.tar"
    return 0
  else
    log "building $DIRPV_IMAGE from ./cmd/dirpv"
    (cd "$REPO_ROOT" && go build -trimpath -ldflags "-s -w -X main.version=$(dirpv_version) -X main.commit=$(dirpv_commit)" \
      -o "$root/dirpv" ./cmd/dirpv)
  fi
  write_etc "$root" yes
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  "$IMG/mkimage" --rootfs "$root" --ref "$DIRPV_IMAGE" --out "$IMG/dirpv.tar" \
    --entrypoint /dirpv --user 65532:65532
}

build_pause() {
  local root=$IMG/rootfs-pause
  if [ -f "$IMG/pause.tar" ] && [ "$IMG/pause.tar" -nt "$HACK_DIR/pause/main.go" ]; then
    return 0
  fi
  log "building $PAUSE_IMAGE"
  rm -rf "$root"
  mkdir -p "$root"
  (cd "$REPO_ROOT" && "${GOBUILD[@]}" -o "$root/pause" ./hack/pause)
  "$IMG/mkimage" --rootfs "$root" --ref "$PAUSE_IMAGE" --out "$IMG/pause.tar" --entrypoint /pause
}

build_busybox() {
  local root=$IMG/rootfs-busybox applet
  if [ -f "$IMG/busybox.tar" ] && [ "$IMG/busybox.tar" -nt /bin/busybox ]; then
    return 0
  fi
  log "building $BUSYBOX_IMAGE"
  rm -rf "$root"
  mkdir -p "$root/bin"
  cp /bin/busybox "$root/bin/busybox"
  # What `busybox --install -s /bin` does, but into the rootfs and with relative links.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  write_etc "$root" no
  printf 'nobody:x:65534:65534:nobody:/:/sbin/nologin\n' >>"$root/etc/passwd"
  printf 'nogroup:x:65534:\n' >>"$root/etc/group"
  "$IMG/mkimage" --rootfs "$root" --ref "$BUSYBOX_IMAGE" --out "$IMG/busybox.tar" \
    --entrypoint /bin/sh --env PATH=/bin
}

import_all() {
  if [ ! -S "$CTR_SOCK" ]; then
    log "containerd not running ($CTR_SOCK): images built, not imported"
    return 0
  fi
  local t want got wanted=()
  for t in pause busybox dirpv; do
    if [ ! -f "$IMG/$t.tar" ]; then
      [ "$t" = dirpv ] && continue # no ./cmd/dirpv yet
      echo "images.sh: $IMG/$t.tar missing; run '$0 build'" >&2
      exit 1
    fi
    ctrk images import "$IMG/$t.tar" >/dev/null
  done
  wanted=("$PAUSE_IMAGE" "$BUSYBOX_IMAGE")
  [ ! -f "$IMG/dirpv.tar" ] || wanted+=("$DIRPV_IMAGE")
  # Make sure containerd stored exactly the names pods use: the kubelet asks the CRI for the
  # normalised form of a pod's image, which for a registry-qualified name is the name itself.
  got=$(ctrk images ls -q)
  for want in "${wanted[@]}"; do
    if ! grep -qxF "$want" <<<"$got"; then
      # A name without a registry host is stored as docker.io/library/NAME or docker.io/NAME.
      echo "images.sh: $want not in containerd after import (use a name with a registry host, like dirpv.io/...):" >&2
      echo "$got" >&2
      exit 1
    fi
  done
  log "images in containerd (namespace k8s.io):"
  grep -v '^sha256:' <<<"$got" >&2
  # The other nodes' containerd (hack/node-up.sh) gets the same images.
  local node sock
  for node in $(extra_nodes); do
    sock=$NODES_DIR/$node/containerd/containerd.sock
    [ -S "$sock" ] || continue
    for t in pause busybox dirpv; do
      [ ! -f "$IMG/$t.tar" ] || ctr -a "$sock" -n k8s.io images import "$IMG/$t.tar" >/dev/null
    done
    log "images imported on $node"
  done
}

if [ "$mode" != import ]; then
  build_mkimage
  build_pause
  build_busybox
  build_dirpv
fi
if [ "$mode" != build ]; then
  import_all
fi
