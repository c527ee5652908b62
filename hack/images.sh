#!/bin/bash
# Builds the local cluster's container images without a container engine and, when the
# cluster's containerd is running, imports them:
#   dirpv.io/dirpv:v0.1.0  ($DIRPV_IMAGE) the provisioner: /dirpv, user 65532:65532, like the
#                          Dockerfile's distroless static-debian12:nonroot image; an OCI image
#                          index of an image per platform in $DIRPV_PLATFORMS
#                          (_output/dirpv-image.tar), with a CycloneDX SBOM per platform beside
#                          it (_output/dirpv-OS-ARCH[-VARIANT].cdx.json)
#   dirpv.io/pause:1       the pod sandbox image (containerd's sandbox_image)
#   dirpv.io/busybox:1     a shell image for tests, from Debian's busybox-static
# The names carry a registry host on purpose: containerd would turn "dirpv/x:1" into
# "docker.io/dirpv/x:1", and pods would then have to spell it that way.
#
# usage: images.sh [all|build|import]   (default all; import needs the tarballs built)
# The dirpv image is rebuilt every time; pause and busybox only when their inputs changed.
# DIRPV_BIN=/path/to/dirpv packs that (static) binary instead of building ./cmd/dirpv, for this
# machine's platform only. The cluster imports this machine's platform from the index.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:-all}
case $mode in all | build | import) ;; *) echo "usage: $0 [all|build|import]" >&2; exit 2 ;; esac

IMG=$CACHE/images # survives cluster-down.sh, so pause and busybox are built once
OUT=$REPO_ROOT/_output # dirpv's image: this worktree's source, not shared through the cache
CYCLONEDX=$CACHE/cyclonedx-gomod-v1.10.0/cyclonedx-gomod
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
  mkdir -p "$IMG" "$OUT"
  # Its own module, so go-containerregistry stays out of the main module's go.mod.
  (cd "$HACK_DIR/mkimage" && "${GOBUILD[@]}" -o "$OUT/mkimage" .)
}

# build_sbom_tool: cyclonedx-gomod, built once into the cache (not in dirpv's go.mod).
build_sbom_tool() {
  [ -x "$CYCLONEDX" ] && return 0
  log "building cyclonedx-gomod"
  GOBIN=$(dirname "$CYCLONEDX") go install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0
}

build_dirpv() {
  local platforms=$DIRPV_PLATFORMS host plat os arch variant tag root args=()
  host=$(go env GOOS)/$(go env GOARCH)
  if [ -n "${DIRPV_BIN:-}" ]; then
    platforms=$host
  elif [ ! -d "$REPO_ROOT/cmd/dirpv" ]; then
    log "no ./cmd/dirpv yet: skipping $DIRPV_IMAGE"
    rm -f "$OUT/dirpv-image.tar"
    return 0
  fi
  build_sbom_tool
  mkdir -p "$OUT"
  rm -f "$OUT"/dirpv-*.cdx.json
  for plat in $platforms; do
    IFS=/ read -r os arch variant <<<"$plat"
    tag=$os-$arch${variant:+-$variant}
    root=$OUT/rootfs-$tag
    rm -rf "$root"
    mkdir -p "$root"
    if [ -n "${DIRPV_BIN:-}" ]; then
      log "building $DIRPV_IMAGE from $DIRPV_BIN"
      cp "$DIRPV_BIN" "$root/dirpv"
    else
      log "building dirpv for $plat"
      # GOARM is the variant's number (v7 -> 7); other variants need no setting.
      (cd "$REPO_ROOT" && GOOS=$os GOARCH=$arch GOARM=$([ "$arch" = arm ] && echo "${variant#v}") \
        go build -trimpath -ldflags "-s -w -X main.version=$(dirpv_version) -X main.commit=$(dirpv_commit)" \
        -o "$root/dirpv" ./cmd/dirpv)
    fi
    # The SBOM: the modules linked into the binary, read from its build information.
    "$CYCLONEDX" bin -json -version "$(dirpv_version)" -output "$OUT/dirpv-$tag.cdx.json" "$root/dirpv" 2>/dev/null
    write_etc "$root" yes
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
      mkdir -p "$root/etc/ssl/certs"
      cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    args+=(--platform "$plat=$root")
  done
  "$OUT/mkimage" "${args[@]}" --ref "$DIRPV_IMAGE" --out "$OUT/dirpv-image.tar" \
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
  "$OUT/mkimage" --rootfs "$root" --ref "$PAUSE_IMAGE" --out "$IMG/pause.tar" --entrypoint /pause
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
  "$OUT/mkimage" --rootfs "$root" --ref "$BUSYBOX_IMAGE" --out "$IMG/busybox.tar" \
    --entrypoint /bin/sh --env PATH=/bin
}

import_all() {
  if [ ! -S "$CTR_SOCK" ]; then
    log "containerd not running ($CTR_SOCK): images built, not imported"
    return 0
  fi
  local t tars=() want got wanted=()
  for t in "$IMG/pause.tar" "$IMG/busybox.tar"; do
    if [ ! -f "$t" ]; then
      echo "images.sh: $t missing; run '$0 build'" >&2
      exit 1
    fi
    tars+=("$t")
  done
  # ctr imports the content of this machine's platform only (no --all-platforms): from dirpv's
  # index, the host's image, which it unpacks; the image's name stays on the index.
  [ ! -f "$OUT/dirpv-image.tar" ] || tars+=("$OUT/dirpv-image.tar") # none without ./cmd/dirpv
  for t in "${tars[@]}"; do ctrk images import "$t" >/dev/null; done
  wanted=("$PAUSE_IMAGE" "$BUSYBOX_IMAGE")
  [ ! -f "$OUT/dirpv-image.tar" ] || wanted+=("$DIRPV_IMAGE")
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
    for t in "${tars[@]}"; do ctr -a "$sock" -n k8s.io images import "$t" >/dev/null; done
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
