package quota

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProjectID is the project ID of the file fd.
func ProjectID(fd int) (uint32, error) {
	var x fsxattr
	if err := ioctl(fd, fsIocFsgetxattr, unsafe.Pointer(&x)); err != nil {
		return 0, wrap("get the project ID of", fd, explain(err, unix.ENOTTY, "the filesystem has no project IDs"))
	}
	return x.Projid, nil
}

// SetProject gives the directory fd the project id and FS_XFLAG_PROJINHERIT, so that whatever is
// created below it joins the project. Set it on an empty directory: files already there keep
// the project they had. It needs the directory's owner or CAP_FOWNER, in the initial user
// namespace.
func SetProject(fd int, id uint32) error {
	var x fsxattr
	if err := ioctl(fd, fsIocFsgetxattr, unsafe.Pointer(&x)); err != nil {
		return wrap("get the project ID of", fd, explain(err, unix.ENOTTY, "the filesystem has no project IDs"))
	}
	if x.Projid == id && x.Xflags&fsXflagProjinherit != 0 {
		return nil
	}
	x.Projid = id
	x.Xflags |= fsXflagProjinherit
	if err := ioctl(fd, fsIocFssetxattr, unsafe.Pointer(&x)); err != nil {
		err = explain(err, unix.EINVAL, "project IDs can only be changed from the initial user namespace")
		err = explain(err, unix.EOPNOTSUPP, "ext4 needs the project feature: tune2fs -O project,quota")
		return wrap(fmt.Sprintf("set project ID %d on", id), fd, err)
	}
	return nil
}

// SetLimit sets the hard limit of the project id on the filesystem holding fsFd to bytes,
// rounded up to whole KiB; 0 removes the limit. It needs CAP_SYS_ADMIN.
func SetLimit(fsFd int, id uint32, bytes uint64) error {
	q := dqblk{Bhardlimit: kib(bytes), Valid: qifBlimits}
	if err := quotactlFd(fsFd, qcmd(qSetquota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		return wrap(fmt.Sprintf("set the limit of project %d on", id), fsFd, explain(err, unix.EPERM, needAdmin))
	}
	return nil
}

// Release removes the limits of the project id, so that it is free again once nothing is
// charged to it: once its directory is removed (XFS frees removed files in the background, so a
// moment later there). It needs CAP_SYS_ADMIN.
func Release(fsFd int, id uint32) error {
	q := dqblk{Valid: qifLimits}
	if err := quotactlFd(fsFd, qcmd(qSetquota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		return wrap(fmt.Sprintf("release project %d on", id), fsFd, explain(err, unix.EPERM, needAdmin))
	}
	return nil
}

// ProjectUsage reports what the project id holds on the filesystem of fsFd, and its hard limit. It
// needs CAP_SYS_ADMIN.
func ProjectUsage(fsFd int, id uint32) (Usage, error) {
	var q dqblk
	err := quotactlFd(fsFd, qcmd(qGetquota, prjQuota), id, unsafe.Pointer(&q))
	if err == unix.ENOENT {
		return Usage{}, nil // XFS: no quota record, so nothing charged and no limit
	}
	if err != nil {
		return Usage{}, wrap(fmt.Sprintf("get the usage of project %d on", id), fsFd, explain(err, unix.EPERM, needAdmin))
	}
	return Usage{Used: q.Curspace, Limit: q.Bhardlimit * 1024, Inodes: q.Curinodes}, nil
}

// nextFree returns the smallest project ID from FirstID up with no usage and no limits on the
// filesystem of fsFd.
func nextFree(fsFd int) (uint32, error) {
	id, err := firstFree(FirstID, nextRecord(fsFd))
	if err != nil {
		return 0, fmt.Errorf("find a free project ID on %s: %w", nameOf(fsFd), err)
	}
	return id, nil
}

// nextRecord is Q_GETNEXTQUOTA for project quotas on the filesystem of fsFd: the record of the
// smallest ID from id up that has one, or ENOENT.
func nextRecord(fsFd int) func(id uint32) (nextdqblk, error) {
	return func(id uint32) (nextdqblk, error) {
		var q nextdqblk
		err := quotactlFd(fsFd, qcmd(qGetnextquota, prjQuota), id, unsafe.Pointer(&q))
		return q, explain(err, unix.EPERM, needAdmin)
	}
}

// eachRecord calls f with each quota record from the ID from up, in order, as next (nextRecord,
// or a fake) returns them, until f returns false or no record is left.
func eachRecord(from uint32, next func(id uint32) (nextdqblk, error), f func(q *nextdqblk) bool) error {
	for id := from; ; {
		q, err := next(id)
		switch {
		case err == unix.ENOENT:
			return nil // no record from id up
		case err != nil:
			return fmt.Errorf("Q_GETNEXTQUOTA from %d: %w", id, err)
		case q.ID < id:
			return fmt.Errorf("Q_GETNEXTQUOTA from %d returned %d", id, q.ID)
		}
		if !f(&q) || q.ID == ^uint32(0) {
			return nil
		}
		id = q.ID + 1
	}
}

// firstFree returns the first free ID from the ID from up, walking the records with next. An ID
// without a record is free; so is one whose record is empty (ext4 drops a record only some time
// after it became empty).
func firstFree(from uint32, next func(id uint32) (nextdqblk, error)) (uint32, error) {
	id, full := from, false
	err := eachRecord(from, next, func(q *nextdqblk) bool {
		switch {
		case q.ID > id, q.empty():
			return false // id has no record, or an empty one
		case q.ID == ^uint32(0):
			full = true
			return false
		}
		id = q.ID + 1
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case full:
		return 0, fmt.Errorf("every ID from %d up is in use", from)
	}
	return id, nil
}

// empty reports whether the record has neither usage nor limits.
func (q *nextdqblk) empty() bool {
	return q.Curspace == 0 && q.Curinodes == 0 && q.Bhardlimit == 0 && q.Bsoftlimit == 0 &&
		q.Ihardlimit == 0 && q.Isoftlimit == 0
}
