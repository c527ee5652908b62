#!/bin/bash
# Installs the Debian packages the local cluster needs; a no-op when all are present.
#   install-deps.sh            the cluster's packages
#   install-deps.sh PKG...     these packages instead (for scripts with needs of their own)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkgs=(etcd-server containerd runc containernetworking-plugins iptables openssl busybox-static iproute2)
if [ $# -gt 0 ]; then pkgs=("$@"); fi

missing=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

log "installing Debian packages: ${missing[*]}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export DEBIAN_FRONTEND=noninteractive
# apt is chatty even with -qq (debconf notices): keep its output, show it only on failure.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$out" 2>&1; then
  cat "$out" >&2
  echo "install-deps: apt-get failed" >&2
  exit 1
fi
# The packages' postinst does not start services here (policy-rc.d); cluster-up.sh starts
# containerd itself with its own config, so nothing else to do.
