package quota

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On btrfs each volume is a subvolume, and the level-0 qgroup btrfs keeps for every subvolume
// while quotas are enabled holds it to its size. A qgroup counts the bytes the subvolume refers
// to, data and metadata; usage is as of the last transaction commit (syncfs makes one).

// EnableQuota turns btrfs quotas on for the filesystem holding fd and waits for the rescan that
// counts what is already there. It is what `btrfs quota enable` does, for tests and setup.
func EnableQuota(fd int) error {
	args := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnable}
	if err := ioctl(fd, btrfsIocQuotaCtl, unsafe.Pointer(&args)); err != nil {
		return wrap("enable btrfs quotas", fd, explain(err, unix.EPERM, needAdmin))
	}
	if err := ioctl(fd, btrfsIocQuotaRescanWait, nil); err != nil {
		return wrap("wait for the btrfs quota rescan", fd, err)
	}
	return nil
}

// CreateSubvolume creates the subvolume name in the directory parentFd, mode 0755, owned by
// the caller. With quotas enabled it gets a qgroup of its own at once.
func CreateSubvolume(parentFd int, name string) error {
	args, err := volArgs(name)
	if err != nil {
		return err
	}
	if err := ioctl(parentFd, btrfsIocSubvolCreate, unsafe.Pointer(args)); err != nil {
		return wrap("create subvolume "+name+" in", parentFd, err)
	}
	return nil
}

// DeleteSubvolume deletes the subvolume name in the directory parentFd with all it holds. It
// needs CAP_SYS_ADMIN, or the mount option user_subvol_rm_allowed. btrfs frees the space in the
// background; the subvolume's qgroup may stay, with no usage and no effect.
func DeleteSubvolume(parentFd int, name string) error {
	args, err := volArgs(name)
	if err != nil {
		return err
	}
	if err := ioctl(parentFd, btrfsIocSnapDestroy, unsafe.Pointer(args)); err != nil {
		err = explain(err, unix.EPERM, "deleting a subvolume needs CAP_SYS_ADMIN or user_subvol_rm_allowed")
		return wrap("delete subvolume "+name+" in", parentFd, explain(err, unix.EINVAL, "not a subvolume"))
	}
	return nil
}

func volArgs(name string) (*btrfsVolArgs, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	args := new(btrfsVolArgs)
	copy(args.Name[:], name) // NUL-terminated: the rest is zero, and name is at most 255 bytes
	return args, nil
}

// SubvolumeID is the ID of the subvolume holding fd (5 for the top level). It needs no
// privilege.
func SubvolumeID(fd int) (uint64, error) {
	args := btrfsInoLookupArgs{Objectid: btrfsFirstFreeObjectid}
	if err := ioctl(fd, btrfsIocInoLookup, unsafe.Pointer(&args)); err != nil {
		return 0, wrap("look up the btrfs subvolume of", fd, explain(err, unix.ENOTTY, "not on btrfs"))
	}
	return args.Treeid, nil
}

// subvolumeRoot returns the ID of the subvolume whose root directory fd is; a directory that is
// not one, and the top level (which is the whole filesystem), are refused: a limit meant for a
// volume must not fall on its parent.
func subvolumeRoot(op string, fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, wrap(op, fd, err)
	}
	if st.Ino != btrfsFirstFreeObjectid {
		return 0, fmt.Errorf("%s %s: not the root directory of a btrfs subvolume", op, nameOf(fd))
	}
	id, err := SubvolumeID(fd)
	if err != nil {
		return 0, err
	}
	if id == btrfsFsTreeObjectid {
		return 0, fmt.Errorf("%s %s: the top-level subvolume is the whole filesystem, not a volume", op, nameOf(fd))
	}
	return id, nil
}

// SetQgroupLimit holds the subvolume whose root directory is fd to bytes (0: no limit). It
// needs CAP_SYS_ADMIN.
func SetQgroupLimit(fd int, bytes uint64) error {
	const op = "set the qgroup limit of"
	id, err := subvolumeRoot(op, fd)
	if err != nil {
		return err
	}
	args := btrfsQgroupLimitArgs{Qgroupid: id, Flags: btrfsQgroupLimitMaxRfer, MaxRfer: bytes}
	if bytes == 0 {
		args.MaxRfer = btrfsClearLimit
	}
	if err := ioctl(fd, btrfsIocQgroupLimit, unsafe.Pointer(&args)); err != nil {
		err = explain(err, unix.ENOTCONN, "btrfs quotas are not enabled")
		return wrap(op, fd, explain(err, unix.EPERM, needAdmin))
	}
	return nil
}

// QgroupUsage reports what the subvolume holding fd refers to and its limit, as of the last
// transaction commit. It needs CAP_SYS_ADMIN.
func QgroupUsage(fd int) (Usage, error) {
	id, err := SubvolumeID(fd)
	if err != nil {
		return Usage{}, err
	}
	// btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr
	info, err := btrfsSearch(fd, btrfsQuotaTreeObjectid, 0, btrfsQgroupInfoKey, id)
	if err != nil {
		return Usage{}, err
	}
	if len(info) < 16 {
		return Usage{}, fmt.Errorf("qgroup usage of %s: btrfs has no qgroup 0/%d: are its quotas enabled?", nameOf(fd), id)
	}
	u := Usage{Used: binary.LittleEndian.Uint64(info[8:])}
	// btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl
	lim, err := btrfsSearch(fd, btrfsQuotaTreeObjectid, 0, btrfsQgroupLimitKey, id)
	if err != nil {
		return Usage{}, err
	}
	if len(lim) >= 16 && binary.LittleEndian.Uint64(lim)&btrfsQgroupLimitMaxRfer != 0 {
		u.Limit = binary.LittleEndian.Uint64(lim[8:])
	}
	return u, nil
}

// btrfsSearch returns the data of the item (objectid, typ, offset) of the tree, or nil if there
// is none. It needs CAP_SYS_ADMIN.
func btrfsSearch(fd int, tree, objectid uint64, typ uint32, offset uint64) ([]byte, error) {
	args := btrfsSearchArgs{Key: btrfsSearchKey{
		TreeID: tree, MinObjectid: objectid, MaxObjectid: objectid, MinOffset: offset, MaxOffset: offset,
		MaxTransid: ^uint64(0), MinType: typ, MaxType: typ, NrItems: 1,
	}}
	if err := ioctl(fd, btrfsIocTreeSearch, unsafe.Pointer(&args)); err != nil {
		return nil, wrap(fmt.Sprintf("btrfs tree search (tree %d, item %d %d %d) on", tree, objectid, typ, offset), fd,
			explain(err, unix.EPERM, "reading btrfs qgroups needs CAP_SYS_ADMIN"))
	}
	if args.Key.NrItems == 0 {
		return nil, nil
	}
	const hdrLen = int(unsafe.Sizeof(btrfsSearchHeader{}))
	hdr := btrfsSearchHeader{
		Transid:  binary.NativeEndian.Uint64(args.Buf[0:]),
		Objectid: binary.NativeEndian.Uint64(args.Buf[8:]),
		Offset:   binary.NativeEndian.Uint64(args.Buf[16:]),
		Type:     binary.NativeEndian.Uint32(args.Buf[24:]),
		Len:      binary.NativeEndian.Uint32(args.Buf[28:]),
	}
	if hdr.Objectid != objectid || hdr.Type != typ || hdr.Offset != offset || int(hdr.Len) > len(args.Buf)-hdrLen {
		return nil, nil
	}
	return append([]byte(nil), args.Buf[hdrLen:hdrLen+int(hdr.Len)]...), nil
}
