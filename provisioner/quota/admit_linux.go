package quota

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"golang.org/x/sys/unix"
)

// admit checks that the volumes on the filesystem of fd may hold bytes more: the limits dirpv set
// there (the project IDs from FirstID up, or the level-0 qgroups), but the one of except (the
// volume's own, when it is being raised; 0 for none), plus bytes, must not exceed the
// filesystem's size times overcommit. The caller holds the allocation lock, so two volumes
// cannot both take the last room.
func admit(kind Kind, fd int, except uint64, bytes uint64, overcommit float64) error {
	size, held, err := promised(kind, fd, except)
	if err != nil {
		return err
	}
	return room(nameOf(fd), size, held, bytes, overcommit)
}

// Room is what admission would still promise new volumes on the filesystem of fd, a directory
// where dirpv can enforce sizes (else an error matching ErrNotEnforced): its size times
// overcommit, less the limits dirpv set there; 0 once they reach it. It needs CAP_SYS_ADMIN.
func Room(fd int, overcommit float64) (uint64, error) {
	kind, err := Probe(fd)
	if err != nil {
		return 0, err
	}
	size, held, err := promised(kind, fd, 0)
	if err != nil {
		return 0, err
	}
	capacity, err := capacityOf(nameOf(fd), size, overcommit)
	if err != nil || held >= capacity {
		return 0, err
	}
	return capacity - held, nil
}

// Free is the bytes of the filesystem of fd that are free for unprivileged writers, as df counts
// them.
func Free(fd int) (uint64, error) {
	var st unix.Statfs_t
	if err := fstatfs(fd, &st); err != nil {
		return 0, wrap("statfs", fd, err)
	}
	hi, free := bits.Mul64(st.Bavail, uint64(st.Bsize))
	if hi != 0 {
		return math.MaxUint64, nil
	}
	return free, nil
}

// promised is the size of the filesystem of fd and the sum of the limits dirpv set there, but
// except's.
func promised(kind Kind, fd int, except uint64) (size, held uint64, err error) {
	var st unix.Statfs_t
	if err := fstatfs(fd, &st); err != nil {
		return 0, 0, wrap("statfs", fd, err)
	}
	size = st.Blocks * uint64(st.Bsize)
	if kind == KindBtrfs {
		held, err = qgroupLimits(fd, except)
	} else {
		held, err = projectLimits(fd, except)
	}
	return size, held, err
}

// room refuses bytes more on a filesystem called name of size bytes whose volumes are held to
// held already, if that passes its size times overcommit. No sum wraps: one past 2^64 bytes
// passes any filesystem's room.
func room(name string, size, held, bytes uint64, overcommit float64) error {
	capacity, err := capacityOf(name, size, overcommit)
	if err != nil {
		return err
	}
	total, carry := bits.Add64(held, bytes, 0)
	if carry == 0 && total <= capacity {
		return nil
	}
	return fmt.Errorf("%w: the filesystem of %s holds %s, its volumes are held to %s already, and %s more would pass %s (its size times overcommit %g)",
		ErrNoRoom, name, human(size), human(held), human(bytes), human(capacity), overcommit)
}

// capacityOf is what the volumes of a filesystem called name of size bytes may be held to in
// all: its size times overcommit, at most 2^64-1.
func capacityOf(name string, size uint64, overcommit float64) (uint64, error) {
	if !(overcommit > 0) || math.IsInf(overcommit, 1) {
		return 0, fmt.Errorf("the filesystem of %s: overcommit %g is not a finite number above 0", name, overcommit)
	}
	if overcommit == 1 { // times 1 stays exact
		return size, nil
	}
	if c := float64(size) * overcommit; c < 1<<64 {
		return uint64(c), nil
	}
	return math.MaxUint64, nil
}

// addLimit adds a limit to a sum of them, holding it at 2^64-1 rather than wrapping.
func addLimit(sum, limit uint64) uint64 {
	total, carry := bits.Add64(sum, limit, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return total
}

// projectLimits sums the hard limits of the projects from FirstID up, but except's.
func projectLimits(fd int, except uint64) (uint64, error) {
	sum, err := sumProjectLimits(nextRecord(fd), except)
	if err != nil {
		return 0, fmt.Errorf("sum the project limits on %s: %w", nameOf(fd), err)
	}
	return sum, nil
}

// sumProjectLimits sums the hard limits of the records next returns from FirstID up, but except's.
func sumProjectLimits(next func(id uint32) (nextdqblk, error), except uint64) (uint64, error) {
	var sum uint64
	err := eachRecord(FirstID, next, func(q *nextdqblk) bool {
		if uint64(q.ID) != except {
			bytes := uint64(math.MaxUint64)
			if q.Bhardlimit <= math.MaxUint64/1024 {
				bytes = q.Bhardlimit * 1024
			}
			sum = addLimit(sum, bytes)
		}
		return true
	})
	return sum, err
}

// qgroupLimits sums the referenced-bytes limits of the level-0 qgroups (one per subvolume), but
// except's.
func qgroupLimits(fd int, except uint64) (uint64, error) {
	var sum uint64
	err := btrfsSearchAll(fd, btrfsQuotaTreeObjectid, 0, btrfsQgroupLimitKey, 0, 1<<48-1, func(qgroup uint64, item []byte) {
		// btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl
		if qgroup != except && len(item) >= 16 && binary.LittleEndian.Uint64(item)&btrfsQgroupLimitMaxRfer != 0 {
			sum = addLimit(sum, binary.LittleEndian.Uint64(item[8:]))
		}
	})
	return sum, err
}

// btrfsSearchAll calls f with the offset and data of every item (objectid, typ, offset) of the
// tree whose offset lies in [minOffset, maxOffset], in order. It needs CAP_SYS_ADMIN.
func btrfsSearchAll(fd int, tree, objectid uint64, typ uint32, minOffset, maxOffset uint64, f func(offset uint64, data []byte)) error {
	const hdrLen = int(unsafe.Sizeof(btrfsSearchHeader{}))
	for from := minOffset; from <= maxOffset; {
		args := btrfsSearchArgs{Key: btrfsSearchKey{
			TreeID: tree, MinObjectid: objectid, MaxObjectid: objectid, MinOffset: from, MaxOffset: maxOffset,
			MaxTransid: ^uint64(0), MinType: typ, MaxType: typ, NrItems: 4096,
		}}
		if err := ioctl(fd, btrfsIocTreeSearch, unsafe.Pointer(&args)); err != nil {
			return wrap(fmt.Sprintf("btrfs tree search (tree %d, items %d %d) on", tree, objectid, typ), fd,
				explain(err, unix.EPERM, "reading btrfs qgroups needs CAP_SYS_ADMIN"))
		}
		if args.Key.NrItems == 0 {
			return nil
		}
		buf := args.Buf[:]
		var last uint64
		for n := uint32(0); n < args.Key.NrItems; n++ {
			if len(buf) < hdrLen {
				return fmt.Errorf("btrfs tree search on %s: short item header", nameOf(fd))
			}
			objid := binary.NativeEndian.Uint64(buf[8:])
			offset := binary.NativeEndian.Uint64(buf[16:])
			itemType := binary.NativeEndian.Uint32(buf[24:])
			size := int(binary.NativeEndian.Uint32(buf[28:]))
			if len(buf) < hdrLen+size {
				return fmt.Errorf("btrfs tree search on %s: short item", nameOf(fd))
			}
			if objid == objectid && itemType == typ && offset >= from && offset <= maxOffset {
				f(offset, buf[hdrLen:hdrLen+size])
			}
			last = offset
			buf = buf[hdrLen+size:]
		}
		if last == ^uint64(0) {
			return nil
		}
		from = last + 1
	}
	return nil
}

// human writes bytes in the largest binary unit that keeps a whole number above 1.
func human(bytes uint64) string {
	const unit = 1024
	if bytes < unit {
		return fmt.Sprintf("%d B", bytes)
	}
	v, i := float64(bytes), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.4g %ciB", v, "KMGTP"[i])
}
