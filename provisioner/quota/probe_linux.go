package quota

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe says how the filesystem holding fd (a volume root) can enforce a directory's size, or,
// in an error matching ErrNotEnforced, why it cannot and what it would need.
func Probe(fd int) (Kind, error) {
	var st unix.Statfs_t
	if err := fstatfs(fd, &st); err != nil {
		return 0, wrap("statfs", fd, err)
	}
	switch magic := uint32(st.Type); magic {
	case unix.XFS_SUPER_MAGIC, unix.EXT4_SUPER_MAGIC:
		if err := probeProject(fd, magic); err != nil {
			return 0, err
		}
		return KindProject, nil
	case unix.BTRFS_SUPER_MAGIC:
		if err := probeBtrfs(fd); err != nil {
			return 0, err
		}
		return KindBtrfs, nil
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return 0, notEnforced("%s at %s cannot enforce sizes: it has no project quotas; use XFS, ext4 or btrfs",
			fsName(magic), nameOf(fd))
	case unix.NFS_SUPER_MAGIC:
		return 0, notEnforced("NFS at %s cannot enforce sizes from the client: only its server can", nameOf(fd))
	}
	return 0, notEnforced("%s at %s cannot enforce sizes: dirpv uses XFS or ext4 project quotas, or btrfs qgroups",
		fsName(uint32(st.Type)), nameOf(fd))
}

// probeProject checks that XFS or ext4 counts project usage and enforces its limits.
func probeProject(fd int, magic uint32) error {
	var qs quotaStat
	err := quotactlFd(fd, qcmd(qXGetqstat, prjQuota), 0, unsafe.Pointer(&qs))
	switch {
	case errors.Is(err, unix.ENOSYS) && !haveQuotactlFd():
		return fmt.Errorf("probe %s: this kernel has no quotactl_fd (Linux 5.14 or later has): %w", nameOf(fd), err)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
		// ENOSYS: no quota of any type is on (or no quotactl_fd: Linux < 5.14); EINVAL: the
		// filesystem has no project quotas at all
	case err != nil:
		return wrap("quotactl Q_XGETQSTAT", fd, err)
	case qs.Flags&fsQuotaPdqEnfd != 0:
		return nil
	}
	path := nameOf(fd)
	if magic == unix.XFS_SUPER_MAGIC {
		if err == nil && qs.Flags&fsQuotaPdqAcct != 0 {
			return notEnforced("XFS at %s counts project usage but does not enforce limits (pqnoenforce): "+
				"mount it with -o prjquota", path)
		}
		return notEnforced("XFS at %s is not mounted with prjquota: mount it with -o prjquota "+
			"(a remount cannot turn quotas on)", path)
	}
	if err == nil && qs.Flags&fsQuotaPdqAcct != 0 {
		return notEnforced("ext4 at %s counts project usage but does not enforce limits: "+
			"mount it with -o prjquota", path)
	}
	return notEnforced("ext4 at %s has no project quotas: it needs the project and quota features "+
		"(mkfs.ext4 -O quota,project, or tune2fs -O project,quota while unmounted) and the prjquota "+
		"mount option", path)
}

// probeBtrfs checks that btrfs quotas (qgroups) are enabled, from the status item of the quota
// tree, which exists only while they are.
func probeBtrfs(fd int) error {
	item, err := btrfsSearch(fd, btrfsQuotaTreeObjectid, 0, btrfsQgroupStatusKey, 0)
	switch {
	case errors.Is(err, unix.ENOENT), err == nil && item == nil:
		// no quota tree, or no status in it
	case err != nil:
		return err
	case len(item) >= 24 && binary.LittleEndian.Uint64(item[16:])&btrfsQgroupStatusOn != 0:
		return nil // btrfs_qgroup_status_item: version, generation, flags, ...
	}
	return notEnforced("btrfs at %s cannot enforce sizes: its quotas are not enabled (btrfs quota enable %s)",
		nameOf(fd), nameOf(fd))
}

// fsName names a filesystem type for messages.
func fsName(magic uint32) string {
	switch magic {
	case unix.XFS_SUPER_MAGIC:
		return "XFS"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.NFS_SUPER_MAGIC:
		return "NFS"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.FUSE_SUPER_MAGIC:
		return "a FUSE filesystem"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	}
	return fmt.Sprintf("the filesystem of type %#x", magic)
}

// haveQuotactlFd reports whether the kernel has quotactl_fd: given no descriptor, it says EBADF.
func haveQuotactlFd() bool {
	return quotactlFd(-1, qcmd(qXGetqstat, prjQuota), 0, nil) != unix.ENOSYS
}

func fstatfs(fd int, st *unix.Statfs_t) error {
	for {
		if err := unix.Fstatfs(fd, st); err != unix.EINTR {
			return err
		}
	}
}
