#!/bin/busybox sh
# shellcheck shell=dash
# /init of the initramfs hack/nfs-vm.sh boots: bring up virtio-net and the kernel's NFS
# client, mount one NFS export with Debian's mount.nfs, write a file through it, read it back,
# unmount and power off. Every verdict goes to the serial console as an NFS-VM-* line; the host
# script passes only if it sees NFS-VM-PASS.
#
# The run's parameters come in files under /params (a second cpio archive the host appends to
# the cached initramfs), so paths and options need no quoting on the kernel command line:
#   spec (SERVER:PATH), options (for mount -o), token, uid, gid (empty: write as root),
#   mount_timeout (seconds).
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

up() { cut -d' ' -f1 /proc/uptime; }
param() { cat "/params/$1" 2>/dev/null; }
say() { echo "NFS-VM-$*"; }
MNT=/mnt/nfs
FILE=dirpv-vm-check

# fail REASON: report, show what the kernel said since $dmesg_from (the start of /init, later
# of the mount), leave the export unmounted, power off.
fail() {
  say "FAIL $(echo "$*" | tr '\n' ' ')"
  dmesg | tail -n "+$((dmesg_from + 1))" | sed 's/^/dmesg: /'
  if grep -q " $MNT " /proc/mounts; then
    ls -lan "$MNT" 2>&1 | sed 's/^/NFS-VM-LS /'
    umount -f "$MNT"
  fi
  poweroff -f
}
dmesg_from=$(dmesg | wc -l)

SPEC=$(param spec) OPTS=$(param options) TOKEN=$(param token)
AS_UID=$(param uid) AS_GID=$(param gid) MOUNT_TIMEOUT=$(param mount_timeout)

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done

# qemu user networking (slirp): the guest is 10.0.2.15/24 behind the gateway 10.0.2.2, and
# slirp turns every guest connection into one from the host side, i.e. from the network
# namespace qemu runs in; so the NFS server is reached at its own address there.
ip link set lo up
{ ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; } ||
  fail "network setup"
echo "T+$(up)s network up"

# run_as CMD: CMD through sh as the identity the host asked for (root unless uid was given).
run_as() {
  if [ -z "$AS_UID" ]; then
    sh -c "$1"
  else
    su -s /bin/sh dirpv-vm -c "$1"
  fi
}
if [ -n "$AS_UID" ]; then
  echo "dirpv-vm:x:$AS_UID:$AS_GID::/:/bin/sh" >>/etc/passwd
  echo "dirpv-vm:x:$AS_GID:" >>/etc/group
fi

mkdir -p "$MNT"
dmesg_from=$(dmesg | wc -l) # module and network messages are not news from here on
say "MOUNT $SPEC -o $OPTS"
# bounded: with an unreachable server mount.nfs keeps retrying for minutes
rc=0
out=$(timeout "$MOUNT_TIMEOUT" mount.nfs "$SPEC" "$MNT" -o "$OPTS" 2>&1) || rc=$?
if [ $rc != 0 ]; then
  # busybox timeout kills mount.nfs with SIGTERM
  [ $rc = 143 ] && fail "mount.nfs killed: no answer in $MOUNT_TIMEOUT s: $out"
  fail "mount.nfs exited $rc: $out"
fi
say "OK mounted: $(grep " $MNT " /proc/mounts)"
echo "T+$(up)s mounted"

# dd conv=fsync: the data is on the server before we say so, and an error writing it back
# (a shell's printf >FILE failed on one without saying why) comes with its reason
out=$(run_as "printf %s '$TOKEN' | dd of=$MNT/$FILE conv=fsync" 2>&1) ||
  fail "write $FILE (exit status $?) as $(run_as id): $out"
# 0 links: the server handed out a file that is gone from its directory. Seen with ganesha
# when the file (or the directory) was removed on the server's side while ganesha had it
# cached: what is written here would never show up in the backing directory.
links=$(stat -c %h "$MNT/$FILE")
[ "$links" != 0 ] || fail "$FILE has 0 links on the server: a stale file (removed behind the server's back?)"
say "OK wrote $FILE as $(run_as 'id -u'):$(run_as 'id -g'); owner by the server: $(stat -c %u:%g "$MNT/$FILE")"
# drop the page cache so the read below goes to the server, not to what the write left
sync
echo 3 >/proc/sys/vm/drop_caches
got=$(run_as "cat $MNT/$FILE" 2>&1) || fail "read $FILE back: $got"
[ "$got" = "$TOKEN" ] || fail "read back '$got', want '$TOKEN'"
say "OK read back: $got"
ls -lan "$MNT" | sed 's/^/NFS-VM-LS /'

out=$(umount "$MNT" 2>&1) || fail "umount: $out"
say "OK unmounted"
say "PASS token=$TOKEN"
echo "T+$(up)s powering off"
poweroff -f
