#!/bin/bash
# make image-test: builds dirpv's image index and SBOMs (hack/images.sh build) and checks them
# (hack/mkimage/built_test.go, build tag imagetest): each platform of $DIRPV_PLATFORMS in the
# index with its architecture in its config, its binary an ELF for it that runs (under Debian's
# qemu-user-static when foreign) and prints its version and `dirpv helper` usage, and its SBOM
# naming the modules the binary links, at their versions.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$HACK_DIR/install-deps.sh" qemu-user-static
"$HACK_DIR/images.sh" build
cd "$HACK_DIR/mkimage"
DIRPV_IMAGE_ARCHIVE=$REPO_ROOT/_output/dirpv-image.tar DIRPV_OUTPUT=$REPO_ROOT/_output \
  DIRPV_PLATFORMS=$DIRPV_PLATFORMS go test -tags imagetest -count=1 -run TestBuiltImages -v .
