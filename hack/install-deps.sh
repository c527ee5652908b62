#!/bin/bash
# Installs the Debian packages the local cluster needs; a no-op when all are present.
#   install-deps.sh            the cluster's packages
#   install-deps.sh PKG...     these packages instead (for scripts with needs of their own)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkgs=(etcd-server containerd runc containernetworking-plugins iptables openssl busybox-static iproute2)
# The cluster's NFS server (hack/nfs-server.sh); nfs-common has the rpcinfo it waits with.
pkgs+=(nfs-ganesha nfs-ganesha-vfs rpcbind nfs-common)
# mkfs.btrfs for the e2e capacity cases (a btrfs with quotas below --hostpath-root).
pkgs+=(btrfs-progs)
# The Prometheus server of the e2e case Prometheus (it scrapes dirpv with the alerting rules).
pkgs+=(prometheus)
# qemu-aarch64-static and the others: make image-test runs the image's foreign binaries.
pkgs+=(qemu-user-static)
if [ $# -gt 0 ]; then pkgs=("$@"); fi

missing=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

log "installing Debian packages: ${missing[*]}"
out=$(mktemp)
made_policy=""
cleanup() {
  rm -f "$out"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT
# policy-rc.d exiting 101: the postinst scripts must not start services (rpcbind would bind
# port 111 of this machine). This kind of machine has one; make it for the install if not.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy=yes
fi
export DEBIAN_FRONTEND=noninteractive
# apt is chatty even with -qq (debconf notices): keep its output, show it only on failure.
# Others may be running apt on this machine: wait for its lock rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if ! { apt_get update -qq && apt_get install -y -qq --no-install-recommends "${missing[@]}"; } >"$out" 2>&1; then
  cat "$out" >&2
  echo "install-deps: apt-get failed" >&2
  exit 1
fi
# The packages' postinst does not start services here (policy-rc.d); cluster-up.sh starts
# containerd, ganesha and rpcbind itself with its own config, so nothing else to do.
