#!/bin/bash
# Mounts an NFS export with a real Linux NFS client and writes a file through it: this host's
# kernel has no NFS client, so Debian's cloud kernel boots under qemu (TCG) with a busybox
# initramfs (hack/nfs-vm/guest-init.sh is its /init), mounts SERVER:PATH with Debian's
# mount.nfs, writes the file dirpv-vm-check holding TOKEN, reads it back, lists the directory,
# unmounts and powers off.
#
#   hack/nfs-vm.sh NETNS SERVER:PATH [MOUNT_OPTIONS]
#   hack/nfs-vm.sh prepare    only install packages, fetch the kernel, build the initramfs
#
# NETNS: the network namespace (/var/run/netns/NETNS) qemu runs in. Its user networking (slirp)
#   turns each guest connection into one made from NETNS, so SERVER is an IP address as seen
#   from there (e.g. 10.0.0.1, the cluster node's address in netns dirpv). No DNS in the guest.
# MOUNT_OPTIONS: comma-separated, for mount -o; default vers=3,proto=tcp,mountproto=tcp,nolock
#   (nolock: no rpc.statd in the guest). E.g. nfsvers=4.1. The guest kernel is TCP only.
# Environment:
#   TOKEN       what the file gets ([A-Za-z0-9._-], no newline); generated if unset
#   AS_UID      write and read as this uid instead of root; AS_GID its gid (default AS_UID)
#   VM_TIMEOUT  seconds before qemu is killed (default 240); the guest gives up on the mount
#               after half of it
#   NFS_VM_KPKG the kernel package (default linux-image-6.1.0-56-cloud-amd64)
# The first run needs the network (apt); a netns without a way out (the cluster's) has none,
# so run `prepare` from the root netns before calling this from inside one.
#
# stdout: the guest's NFS-VM-* lines (CRs stripped), in order:
#   NFS-VM-MOUNT SERVER:PATH -o OPTIONS
#   NFS-VM-OK mounted: <its /proc/mounts line>
#   NFS-VM-OK wrote dirpv-vm-check as UID:GID; owner by the server: UID:GID
#   NFS-VM-OK read back: TOKEN
#   NFS-VM-LS <a line of ls -lan of the mounted directory>   (several)
#   NFS-VM-OK unmounted
#   NFS-VM-PASS token=TOKEN
# or, at the step that failed, NFS-VM-FAIL <reason> followed by dmesg: lines.
# Progress goes to stderr, and on failure the whole console log too.
# Exit status: 0 only if the guest printed NFS-VM-PASS; 2 for bad usage, 124 on timeout.
# Kernel and initramfs are cached in $CACHE/nfs-vm; nothing else is left behind.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '8,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
mode=run
if [ $# -eq 1 ] && [ "$1" = prepare ]; then mode=prepare; elif [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
ns=${1:-} spec=${2:-} opts=${3:-vers=3,proto=tcp,mountproto=tcp,nolock}
if [ $mode = run ]; then
  [ -e "/var/run/netns/$ns" ] || { echo "nfs-vm: no network namespace $ns" >&2; exit 2; }
  [[ $spec == ?*:/* ]] || { echo "nfs-vm: want SERVER:/PATH, got '$spec'" >&2; exit 2; }
  TOKEN=${TOKEN:-dirpv-$(date +%s)-$$-$RANDOM}
  [[ $TOKEN =~ ^[A-Za-z0-9._-]+$ ]] || { echo "nfs-vm: TOKEN may hold only [A-Za-z0-9._-]" >&2; exit 2; }
  AS_UID=${AS_UID:-}
  AS_GID=${AS_GID:-$AS_UID}
  [[ $AS_UID =~ ^[0-9]*$ && $AS_GID =~ ^[0-9]*$ ]] || { echo "nfs-vm: AS_UID, AS_GID: numbers" >&2; exit 2; }
fi
VM_TIMEOUT=${VM_TIMEOUT:-240}
KPKG=${NFS_VM_KPKG:-linux-image-6.1.0-56-cloud-amd64} # verified; see apt-cache search cloud-amd64
VMCACHE=$CACHE/nfs-vm

tmp=$(mktemp -d /tmp/dirpv-nfs-vm.XXXXXX)
vm_pid=""
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  if [ -n "$vm_pid" ]; then
    kill -TERM "$vm_pid" 2>/dev/null || true # timeout(1) passes it on to qemu
    wait "$vm_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- host packages: qemu, and mount.nfs to copy into the guest ---
# nfs-common pulls in rpcbind; policy-rc.d (exit 101) keeps their postinst from starting them.
"$HACK_DIR/install-deps.sh" qemu-system-x86 nfs-common busybox-static

# --- kernel: the package's vmlinuz and the modules the guest loads, in dependency order ---
kdir=$VMCACHE/$KPKG
if ! vm_kernel "$KPKG" "$VMCACHE" "$tmp" virtio_pci virtio_net nfsv3 nfsv4; then
  echo "nfs-vm: cannot download $KPKG (no network? run hack/nfs-vm.sh prepare from the root" \
    "netns first; another kernel: NFS_VM_KPKG, see apt-cache search cloud-amd64)" >&2
  exit 1
fi

# --- initramfs: busybox, mount.nfs with its libraries, the modules, the init script ---
# Cached under a hash of what goes in; the run's parameters go in a second archive below.
key=$(cat /bin/busybox /sbin/mount.nfs "$kdir/load-order" "$HACK_DIR/nfs-vm/guest-init.sh" | sha256sum | cut -c1-16)
initrd=$kdir/initrd-$key.gz
if [ ! -f "$initrd" ]; then
  log "nfs-vm: building the initramfs"
  R=$tmp/root
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,mnt,tmp,run,var/lib/nfs,lib/modules}
  cp /bin/busybox "$R/bin/busybox"
  cp /sbin/mount.nfs "$R/sbin/mount.nfs"
  ldd /sbin/mount.nfs | grep -o '/[^ ]*' | while read -r l; do
    mkdir -p "$R$(dirname "$l")"
    cp -L "$l" "$R$l"
  done
  # mount.nfs: "Failed to find 'tcp' protocol" without protocols; libtirpc (v3's rpcbind and
  # MOUNT calls) needs netconfig; mtab is what mount.nfs updates.
  cp /etc/protocols /etc/services /etc/netconfig "$R/etc/"
  ln -s /proc/mounts "$R/etc/mtab"
  printf 'root:x:0:0::/:/bin/sh\n' >"$R/etc/passwd"
  printf 'root:x:0:\n' >"$R/etc/group"
  vm_initrd "$R" "$HACK_DIR/nfs-vm/guest-init.sh" "$initrd" "$tmp"
fi
[ $mode = run ] || exit 0

# The kernel unpacks concatenated archives in turn: the cached one, then this run's /params.
P=$tmp/params
mkdir -p "$P/params"
printf '%s' "$spec" >"$P/params/spec"
printf '%s' "$opts" >"$P/params/options"
printf '%s' "$TOKEN" >"$P/params/token"
printf '%s' "$AS_UID" >"$P/params/uid"
printf '%s' "$AS_GID" >"$P/params/gid"
printf '%s' "$((VM_TIMEOUT / 2))" >"$P/params/mount_timeout"
(cd "$P" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$tmp/params.gz"
cat "$initrd" "$tmp/params.gz" >"$tmp/initrd"

# --- boot. TCG: /dev/kvm here is kvm_pvm, slower than TCG and unreliable (see quota-vm). ---
log "nfs-vm: booting; the guest mounts $spec -o $opts (netns $ns)"
console=$tmp/console.log
start=$(date +%s)
timeout -k 5 "$VM_TIMEOUT" nsenter --net="/var/run/netns/$ns" \
  qemu-system-x86_64 -accel tcg -m 512 -smp 2 -nodefaults -display none -no-reboot \
  -serial "file:$console" -nic user,model=virtio-net-pci \
  -kernel "$kdir/vmlinuz" -initrd "$tmp/initrd" -append 'console=ttyS0 quiet panic=-1' \
  </dev/null >"$tmp/qemu.log" 2>&1 &
vm_pid=$!
rc=0
wait "$vm_pid" || rc=$?
vm_pid=""
log "nfs-vm: the VM ran $(($(date +%s) - start)) s"

tr -d '\r' <"$console" | grep '^NFS-VM-\|^dmesg: ' || true
if [ "$rc" -eq 0 ] && tr -d '\r' <"$console" | grep -q '^NFS-VM-PASS '; then
  exit 0
fi
{
  echo "--- qemu output ---"
  cat "$tmp/qemu.log"
  echo "--- guest console ---"
  tr -d '\r' <"$console"
} >&2
if [ "$rc" -eq 124 ]; then
  echo "nfs-vm: timed out after $VM_TIMEOUT s; qemu killed" >&2
  exit 124
fi
echo "nfs-vm: the guest did not report NFS-VM-PASS (qemu exit status $rc)" >&2
exit 1
