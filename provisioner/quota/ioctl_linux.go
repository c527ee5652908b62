package quota

import (
	"io/fs"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's interfaces that golang.org/x/sys/unix does not define (checked by
// TestLayouts): from linux/fs.h, linux/quota.h, linux/dqblk_xfs.h and linux/btrfs.h.

// fsxattr is struct fsxattr, of FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR.
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	_          [8]byte
}

const (
	fsIocFsgetxattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjinherit = 0x200
)

// quotactl commands, for qcmd, and the quota type they apply to.
const (
	prjQuota       = 2 // PRJQUOTA
	qGetquota      = 0x800007
	qSetquota      = 0x800008
	qGetnextquota  = 0x800009
	qXGetqstat     = 'X'<<8 + 5 // Q_XGETQSTAT
	qifBlimits     = 1
	qifIlimits     = 4
	qifLimits      = qifBlimits | qifIlimits
	fsQuotaPdqAcct = 1 << 4 // FS_QUOTA_PDQ_ACCT: project usage is counted
	fsQuotaPdqEnfd = 1 << 5 // FS_QUOTA_PDQ_ENFD: project limits are enforced
)

// qcmd is QCMD(cmd, type).
func qcmd(cmd, typ uint32) uint32 { return cmd<<8 | typ&0xff }

// dqblk is struct if_dqblk: limits in 1 KiB blocks, space in bytes.
type dqblk struct {
	Bhardlimit uint64
	Bsoftlimit uint64
	Curspace   uint64
	Ihardlimit uint64
	Isoftlimit uint64
	Curinodes  uint64
	Btime      uint64
	Itime      uint64
	Valid      uint32
	_          uint32
}

// nextdqblk is struct if_nextdqblk: if_dqblk with the ID where if_dqblk has its padding.
type nextdqblk struct {
	Bhardlimit uint64
	Bsoftlimit uint64
	Curspace   uint64
	Ihardlimit uint64
	Isoftlimit uint64
	Curinodes  uint64
	Btime      uint64
	Itime      uint64
	Valid      uint32
	ID         uint32
}

// qfilestat and quotaStat are fs_qfilestat_t and struct fs_quota_stat, of Q_XGETQSTAT.
type qfilestat struct {
	Ino      uint64
	Nblks    uint64
	Nextents uint32
	_        uint32
}

type quotaStat struct {
	Version      int8
	_            int8
	Flags        uint16
	Pad          int8
	_            [3]byte
	Uquota       qfilestat
	Gquota       qfilestat
	Incoredqs    uint32
	Btimelimit   int32
	Itimelimit   int32
	Rtbtimelimit int32
	Bwarnlimit   uint16
	Iwarnlimit   uint16
	_            uint32
}

// btrfs ioctls.
const (
	btrfsIocSubvolCreate    = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSnapDestroy     = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsIocTreeSearch      = 0xd0009411 // _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
	btrfsIocInoLookup       = 0xd0009412 // _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
	btrfsIocQuotaCtl        = 0xc0109428 // _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	btrfsIocQgroupLimit     = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
	btrfsIocQuotaRescanWait = 0x0000942e // _IO(0x94, 46)

	btrfsQuotaCtlEnable     = 1
	btrfsQgroupLimitMaxRfer = 1 // BTRFS_QGROUP_LIMIT_MAX_RFER
	btrfsClearLimit         = ^uint64(0)

	btrfsFirstFreeObjectid = 256 // the inode number of every subvolume's root directory
	btrfsFsTreeObjectid    = 5   // the top-level subvolume
	btrfsQuotaTreeObjectid = 8
	btrfsQgroupStatusKey   = 240
	btrfsQgroupInfoKey     = 242
	btrfsQgroupLimitKey    = 244
	btrfsQgroupStatusOn    = 1 // BTRFS_QGROUP_STATUS_FLAG_ON
)

type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte
}

type btrfsInoLookupArgs struct {
	Treeid   uint64
	Objectid uint64
	Name     [4080]byte
}

type btrfsQuotaCtlArgs struct {
	Cmd    uint64
	Status uint64
}

type btrfsQgroupLimitArgs struct {
	Qgroupid uint64
	Flags    uint64
	MaxRfer  uint64
	MaxExcl  uint64
	RsvRfer  uint64
	RsvExcl  uint64
}

type btrfsSearchKey struct {
	TreeID      uint64
	MinObjectid uint64
	MaxObjectid uint64
	MinOffset   uint64
	MaxOffset   uint64
	MinTransid  uint64
	MaxTransid  uint64
	MinType     uint32
	MaxType     uint32
	NrItems     uint32
	_           uint32
	_           [4]uint64
}

type btrfsSearchArgs struct {
	Key btrfsSearchKey
	Buf [4096 - 104]byte
}

// btrfsSearchHeader precedes each item in btrfsSearchArgs.Buf.
type btrfsSearchHeader struct {
	Transid  uint64
	Objectid uint64
	Offset   uint64
	Type     uint32
	Len      uint32
}

// ioctl calls ioctl(2) until it is not interrupted.
func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// quotactlFd is quotactl_fd(2) (Linux 5.14): any descriptor on the filesystem will do, so no
// block device needs to be found or visible (it is not, in a container).
func quotactlFd(fd int, cmd, id uint32, addr unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd), uintptr(id), uintptr(addr), 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// nameOf names the file fd refers to, for messages.
func nameOf(fd int) string {
	buf := make([]byte, 4096)
	if n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf); err == nil && n < len(buf) {
		return string(buf[:n])
	}
	return "descriptor " + strconv.Itoa(fd)
}

// wrap makes err the failure of op on the file fd.
func wrap(op string, fd int, err error) error {
	return &fs.PathError{Op: op, Path: nameOf(fd), Err: err}
}

// explain adds why to err if err is errno: what usually causes it, or what to do.
func explain(err error, errno unix.Errno, why string) error {
	if e, ok := err.(unix.Errno); ok && e == errno {
		return &explained{errno, why}
	}
	return err
}

// explained is an errno with its usual cause.
type explained struct {
	errno unix.Errno
	why   string
}

func (e *explained) Error() string { return e.errno.Error() + " (" + e.why + ")" }
func (e *explained) Unwrap() error { return e.errno }

// needAdmin is why a quota call gets EPERM.
const needAdmin = "setting and reading project quotas and qgroups needs CAP_SYS_ADMIN"
