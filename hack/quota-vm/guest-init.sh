#!/bin/busybox sh
# shellcheck shell=dash
# /init of the initramfs hack/quota-test.sh boots: make the filesystems provisioner/quota is
# tested on, run its test binary (/quota.test), then provisioner/volumeop's (/volumeop.test: the
# life of a limited volume through volumeop.Apply), both static, with their mount points in the
# environment, and power off. Every verdict goes to the serial console as a QUOTA-VM-* line; the
# host script passes only if it sees QUOTA-VM-PASS, which needs both binaries to pass.
#
# Disks (virtio, in the host script's order):
#   vda  XFS, mounted -o prjquota                              DIRPV_QUOTA_XFS
#   vdb  ext4 with the quota and project features, -o prjquota DIRPV_QUOTA_EXT4
#   vdc  XFS without quotas                                    DIRPV_QUOTA_XFS_NOQUOTA
#   vdd  ext4 with the features, mounted without prjquota      DIRPV_QUOTA_EXT4_NOENFORCE
# and a tmpfs                                                  DIRPV_QUOTA_TMPFS
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "QUOTA-VM-$*"; }

# fail REASON: report, show what the kernel said since /init started, power off.
fail() {
  say "FAIL $(echo "$*" | tr '\n' ' ')"
  dmesg | tail -n "+$((dmesg_from + 1))" | sed 's/^/dmesg: /'
  poweroff -f
}
dmesg_from=$(dmesg | wc -l)

# ext4 and tmpfs are built into Debian's cloud kernel; virtio_blk, xfs and quota_v2 (the
# format of ext4's quota files, which the kernel would load on demand with modprobe) are not.
read -r mods </lib/modules/load-order
for m in $mods; do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
# the disks appear as virtio_blk probes them, shortly after it loads
i=0
while [ ! -b /dev/vdd ]; do
  [ $i -lt 100 ] || fail "no /dev/vdd after 10 s: $(echo /dev/vd*)"
  i=$((i + 1))
  sleep 0.1
done
echo "T+$(up)s disks: $(echo /dev/vd*)"

# mk4 DEV: ext4 with project quotas. -I 256: project IDs live in the larger inode (small
# filesystems default to 128 bytes); -b 4096: the block size of a real volume.
mk4() { mkfs.ext4 -q -F -b 4096 -I 256 -O quota,project "$1"; }
mkdir -p /mnt/xfs /mnt/ext4 /mnt/xfs-noquota /mnt/ext4-noenforce /mnt/tmpfs
out=$(mkfs.xfs -f -q /dev/vda 2>&1 && mount -t xfs -o prjquota /dev/vda /mnt/xfs 2>&1) || fail "XFS on vda: $out"
out=$(mk4 /dev/vdb 2>&1 && mount -t ext4 -o prjquota /dev/vdb /mnt/ext4 2>&1) || fail "ext4 on vdb: $out"
out=$(mkfs.xfs -f -q /dev/vdc 2>&1 && mount -t xfs /dev/vdc /mnt/xfs-noquota 2>&1) || fail "XFS on vdc: $out"
out=$(mk4 /dev/vdd 2>&1 && mount -t ext4 /dev/vdd /mnt/ext4-noenforce 2>&1) || fail "ext4 on vdd: $out"
mount -t tmpfs tmpfs /mnt/tmpfs || fail "tmpfs"
grep ' /mnt/' /proc/mounts | sed 's/^/QUOTA-VM-MOUNT /'
echo "T+$(up)s filesystems made"

export DIRPV_QUOTA_XFS=/mnt/xfs DIRPV_QUOTA_EXT4=/mnt/ext4 DIRPV_QUOTA_XFS_NOQUOTA=/mnt/xfs-noquota \
  DIRPV_QUOTA_EXT4_NOENFORCE=/mnt/ext4-noenforce DIRPV_QUOTA_TMPFS=/mnt/tmpfs
# tests BIN ARG...: runs the test binary /BIN with -test.v and ARGs; a failure is added to $failed.
# The second runs even if the first failed: it tests the same filesystems from another side.
failed=""
tests() {
  bin=$1
  shift
  rc=0
  "/$bin" -test.v -test.count=1 "$@" 2>&1 || rc=$?
  echo "T+$(up)s $bin done"
  [ $rc = 0 ] || failed="$failed, $bin exited with status $rc"
}
tests quota.test
tests volumeop.test -test.run '^(TestLimitsProject|TestCreateLimitRefused)$'
[ -z "$failed" ] || fail "${failed#, }"
for d in /mnt/xfs /mnt/ext4 /mnt/xfs-noquota /mnt/ext4-noenforce; do
  out=$(umount "$d" 2>&1) || fail "umount $d: $out"
done
say PASS
poweroff -f
