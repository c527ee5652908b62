#!/bin/bash
# Tests provisioner/quota, and volumeop's limited volumes, on real filesystems, as root:
#   btrfs  here: a sparse image on a loop device, mounted in a temporary directory, and
#          `go test -run Btrfs` of both packages with DIRPV_QUOTA_BTRFS naming it.
#   vm     XFS and ext4 project quotas, which this machine's kernel lacks: Debian's cloud kernel
#          boots under qemu (TCG) with a busybox initramfs whose /init (hack/quota-vm/guest-init.sh)
#          makes the filesystems on virtio disks and runs the packages' test binaries, built
#          static (quota's, then volumeop's TestLimitsProject and TestCreateLimitRefused), with
#          their mount points in DIRPV_QUOTA_* (see the init script).
#
#   hack/quota-test.sh [btrfs|vm]    both parts unless one is named
# Environment:
#   VM_TIMEOUT     seconds before qemu is killed (default 180)
#   QUOTA_VM_KPKG  the kernel package (default linux-image-6.1.0-56-cloud-amd64)
# The first run needs the network (apt: btrfs-progs, xfsprogs, qemu, the kernel package).
#
# stdout: the btrfs tests' output; the guest's console: QUOTA-VM-MOUNT lines, the test
# binaries' -test.v output, then QUOTA-VM-PASS, or QUOTA-VM-FAIL <reason> and dmesg: lines.
# Exit status: 0 only if every part passed; 2 for bad usage.
# Kernel and initramfs are cached in $CACHE/quota-vm; nothing else is left behind.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-all} in
  all) parts=(btrfs vm) ;;
  btrfs | vm) parts=("$1") ;;
  *)
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
[ "$(id -u)" = 0 ] || { echo "quota-test: run as root (mount, loop devices, quotas)" >&2; exit 2; }
VM_TIMEOUT=${VM_TIMEOUT:-180}
KPKG=${QUOTA_VM_KPKG:-linux-image-6.1.0-56-cloud-amd64} # as hack/nfs-vm.sh; 6.1 matches xfsprogs 6.1
VMCACHE=$CACHE/quota-vm

tmp=$(mktemp -d /tmp/dirpv-quota.XXXXXX)
# the tests' writer runs as uid 65534 and must pass through to the btrfs mount
chmod 755 "$tmp"
mnt="" loopdev="" vm_pid=""
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  if [ -n "$vm_pid" ]; then
    kill -TERM "$vm_pid" 2>/dev/null || true # timeout(1) passes it on to qemu
    wait "$vm_pid" 2>/dev/null || true
  fi
  if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- btrfs, on this machine ---
test_btrfs() {
  "$HACK_DIR/install-deps.sh" btrfs-progs
  log "quota-test: btrfs on a loop device"
  truncate -s 512M "$tmp/btrfs.img"
  mkfs.btrfs -q "$tmp/btrfs.img" >/dev/null
  loopdev=$(losetup --find --show "$tmp/btrfs.img")
  mkdir "$tmp/btrfs"
  mount -t btrfs "$loopdev" "$tmp/btrfs"
  mnt=$tmp/btrfs
  local rc=0
  (cd "$REPO_ROOT" && DIRPV_QUOTA_BTRFS=$mnt go test -count=1 -run Btrfs -v ./provisioner/quota/ ./provisioner/volumeop/) || rc=$?
  umount "$mnt"
  mnt=""
  losetup -d "$loopdev"
  loopdev=""
  record btrfs $rc
}

# --- XFS and ext4, in the VM ---
# kernel_modules: the package's vmlinuz and the modules the guest loads, cached in $kdir.
kernel_modules() {
  kdir=$VMCACHE/$KPKG
  if ! vm_kernel "$KPKG" "$VMCACHE" "$tmp" virtio_pci virtio_blk xfs quota_v2; then
    echo "quota-test: cannot download $KPKG (no network? another kernel: QUOTA_VM_KPKG," \
      "see apt-cache search cloud-amd64)" >&2
    return 1
  fi
}

# initramfs: busybox, mkfs.xfs and mke2fs with their libraries, the modules, the init script;
# cached under a hash of what goes in. The test binaries go in a second archive.
initramfs() {
  local tools=(/bin/busybox "$(command -v mkfs.xfs)" "$(command -v mke2fs)") key b l libs
  key=$(cat "${tools[@]}" /etc/mke2fs.conf "$kdir/load-order" "$HACK_DIR/quota-vm/guest-init.sh" | sha256sum | cut -c1-16)
  initrd=$kdir/initrd-$key.gz
  [ ! -f "$initrd" ] || return 0
  log "quota-test: building the initramfs"
  local R=$tmp/root
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,mnt,tmp,lib/modules}
  for b in "${tools[@]}"; do
    mkdir -p "$R$(dirname "$b")"
    cp "$b" "$R$b"
    libs=$(ldd "$b" 2>/dev/null | grep -o '/[^ ]*') || true # none: busybox is static
    for l in $libs; do
      mkdir -p "$R$(dirname "$l")"
      cp -L "$l" "$R$l"
    done
  done
  ln -s "$(basename "$(command -v mke2fs)")" "$R$(dirname "$(command -v mke2fs)")/mkfs.ext4"
  cp /etc/mke2fs.conf "$R/etc/"
  printf 'root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n' >"$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
  vm_initrd "$R" "$HACK_DIR/quota-vm/guest-init.sh" "$initrd" "$tmp"
}

test_vm() {
  "$HACK_DIR/install-deps.sh" qemu-system-x86 busybox-static xfsprogs e2fsprogs
  kernel_modules
  initramfs
  log "quota-test: building the test binaries (static)"
  mkdir -p "$tmp/bin"
  local pkg
  for pkg in quota volumeop; do
    (cd "$REPO_ROOT" && CGO_ENABLED=0 go test -c -o "$tmp/bin/$pkg.test" "./provisioner/$pkg")
    chmod 755 "$tmp/bin/$pkg.test"
  done
  (cd "$tmp/bin" && printf '%s\n' quota.test volumeop.test | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$tmp/test.gz"
  cat "$initrd" "$tmp/test.gz" >"$tmp/initrd"
  # Sparse disks: mkfs.xfs wants 300 MB or more.
  local d drives=()
  for d in xfs:320M ext4:128M xfs-noquota:320M ext4-noenforce:64M; do
    truncate -s "${d#*:}" "$tmp/${d%:*}.img"
    drives+=(-drive "file=$tmp/${d%:*}.img,format=raw,if=virtio")
  done

  # TCG: /dev/kvm here is kvm_pvm, slower than TCG and unreliable (see hack/nfs-vm.sh).
  log "quota-test: booting; the guest tests XFS and ext4 project quotas"
  local console=$tmp/console.log start rc=0
  start=$(date +%s)
  timeout -k 5 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -m 512 -smp 2 -nodefaults -display none \
    -no-reboot -serial "file:$console" -nic none "${drives[@]}" \
    -kernel "$kdir/vmlinuz" -initrd "$tmp/initrd" -append 'console=ttyS0 quiet panic=-1' \
    </dev/null >"$tmp/qemu.log" 2>&1 &
  vm_pid=$!
  wait "$vm_pid" || rc=$?
  vm_pid=""
  log "quota-test: the VM ran $(($(date +%s) - start)) s"
  tr -d '\r' <"$console" | sed -n '/^QUOTA-VM-MOUNT /,$p'
  if [ "$rc" -eq 0 ] && tr -d '\r' <"$console" | grep -q '^QUOTA-VM-PASS'; then
    record vm 0
    return
  fi
  {
    echo "--- qemu output ---"
    cat "$tmp/qemu.log"
    echo "--- guest console ---"
    tr -d '\r' <"$console"
  } >&2
  if [ "$rc" -eq 124 ]; then
    echo "quota-test: timed out after $VM_TIMEOUT s; qemu killed" >&2
  else
    echo "quota-test: the guest did not report QUOTA-VM-PASS (qemu exit status $rc)" >&2
  fi
  record vm 1
}

# The parts run as plain commands, not in an if or after ||, where bash would ignore set -e in
# them: a failure to set up stops the script; record notes each part's verdict.
failed=()
record() {
  if [ "$2" = 0 ]; then log "quota-test: $1 PASS"; else log "quota-test: $1 FAIL"; failed+=("$1"); fi
}
for p in "${parts[@]}"; do "test_$p"; done
[ ${#failed[@]} -eq 0 ] || { echo "quota-test: failed: ${failed[*]}" >&2; exit 1; }
