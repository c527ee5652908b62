package quota

import (
	"testing"
	"unsafe"
)

// TestLayouts checks the structures defined here against the sizes and offsets of the kernel's
// (linux/fs.h, linux/quota.h, linux/dqblk_xfs.h, linux/btrfs.h, on 64-bit Linux).
func TestLayouts(t *testing.T) {
	var (
		qs  quotaStat
		nq  nextdqblk
		dq  dqblk
		key btrfsSearchKey
	)
	for _, tt := range []struct {
		what      string
		got, want uintptr
	}{
		{"sizeof(struct fsxattr)", unsafe.Sizeof(fsxattr{}), 28},
		{"offsetof(struct fsxattr, fsx_projid)", unsafe.Offsetof(fsxattr{}.Projid), 12},
		{"sizeof(struct if_dqblk)", unsafe.Sizeof(dq), 72},
		{"offsetof(struct if_dqblk, dqb_valid)", unsafe.Offsetof(dq.Valid), 64},
		{"sizeof(struct if_nextdqblk)", unsafe.Sizeof(nq), 72},
		{"offsetof(struct if_nextdqblk, dqb_valid)", unsafe.Offsetof(nq.Valid), 64},
		{"offsetof(struct if_nextdqblk, dqb_id)", unsafe.Offsetof(nq.ID), 68},
		{"sizeof(struct fs_quota_stat)", unsafe.Sizeof(qs), 80},
		{"offsetof(struct fs_quota_stat, qs_flags)", unsafe.Offsetof(qs.Flags), 2},
		{"offsetof(struct fs_quota_stat, qs_uquota)", unsafe.Offsetof(qs.Uquota), 8},
		{"offsetof(struct fs_quota_stat, qs_incoredqs)", unsafe.Offsetof(qs.Incoredqs), 56},
		{"offsetof(struct fs_quota_stat, qs_bwarnlimit)", unsafe.Offsetof(qs.Bwarnlimit), 72},
		{"sizeof(struct btrfs_ioctl_vol_args)", unsafe.Sizeof(btrfsVolArgs{}), 4096},
		{"sizeof(struct btrfs_ioctl_ino_lookup_args)", unsafe.Sizeof(btrfsInoLookupArgs{}), 4096},
		{"sizeof(struct btrfs_ioctl_quota_ctl_args)", unsafe.Sizeof(btrfsQuotaCtlArgs{}), 16},
		{"sizeof(struct btrfs_ioctl_qgroup_limit_args)", unsafe.Sizeof(btrfsQgroupLimitArgs{}), 48},
		{"sizeof(struct btrfs_ioctl_search_key)", unsafe.Sizeof(key), 104},
		{"offsetof(struct btrfs_ioctl_search_key, min_type)", unsafe.Offsetof(key.MinType), 56},
		{"offsetof(struct btrfs_ioctl_search_key, nr_items)", unsafe.Offsetof(key.NrItems), 64},
		{"sizeof(struct btrfs_ioctl_search_args)", unsafe.Sizeof(btrfsSearchArgs{}), 4096},
		{"sizeof(struct btrfs_ioctl_search_header)", unsafe.Sizeof(btrfsSearchHeader{}), 32},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.what, tt.got, tt.want)
		}
	}
}

// TestIoctlNumbers derives each request number from its structure's size, as _IOR and _IOW do.
func TestIoctlNumbers(t *testing.T) {
	const none, write, read = 0, 1, 2
	ioc := func(dir, typ, nr, size uintptr) uintptr { return dir<<30 | size<<16 | typ<<8 | nr }
	for _, tt := range []struct {
		what      string
		got, want uintptr
	}{
		{"FS_IOC_FSGETXATTR", fsIocFsgetxattr, ioc(read, 'X', 31, unsafe.Sizeof(fsxattr{}))},
		{"FS_IOC_FSSETXATTR", fsIocFssetxattr, ioc(write, 'X', 32, unsafe.Sizeof(fsxattr{}))},
		{"BTRFS_IOC_SUBVOL_CREATE", btrfsIocSubvolCreate, ioc(write, 0x94, 14, unsafe.Sizeof(btrfsVolArgs{}))},
		{"BTRFS_IOC_SNAP_DESTROY", btrfsIocSnapDestroy, ioc(write, 0x94, 15, unsafe.Sizeof(btrfsVolArgs{}))},
		{"BTRFS_IOC_TREE_SEARCH", btrfsIocTreeSearch, ioc(read|write, 0x94, 17, unsafe.Sizeof(btrfsSearchArgs{}))},
		{"BTRFS_IOC_INO_LOOKUP", btrfsIocInoLookup, ioc(read|write, 0x94, 18, unsafe.Sizeof(btrfsInoLookupArgs{}))},
		{"BTRFS_IOC_QUOTA_CTL", btrfsIocQuotaCtl, ioc(read|write, 0x94, 40, unsafe.Sizeof(btrfsQuotaCtlArgs{}))},
		{"BTRFS_IOC_QGROUP_LIMIT", btrfsIocQgroupLimit, ioc(read, 0x94, 43, unsafe.Sizeof(btrfsQgroupLimitArgs{}))},
		{"BTRFS_IOC_QUOTA_RESCAN_WAIT", btrfsIocQuotaRescanWait, ioc(none, 0x94, 46, 0)},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.what, tt.got, tt.want)
		}
	}
}

func TestQcmd(t *testing.T) {
	for _, tt := range []struct {
		what      string
		got, want uint32
	}{
		{"QCMD(Q_GETQUOTA, PRJQUOTA)", qcmd(qGetquota, prjQuota), 0x80000702},
		{"QCMD(Q_SETQUOTA, PRJQUOTA)", qcmd(qSetquota, prjQuota), 0x80000802},
		{"QCMD(Q_GETNEXTQUOTA, PRJQUOTA)", qcmd(qGetnextquota, prjQuota), 0x80000902},
		{"QCMD(Q_XGETQSTAT, PRJQUOTA)", qcmd(qXGetqstat, prjQuota), 0x580502},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.what, tt.got, tt.want)
		}
	}
}
