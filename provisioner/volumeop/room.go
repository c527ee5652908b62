package volumeop

import (
	"errors"
	"fmt"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/quota"
)

// room measures the room for new volumes in the directory op.Path under root (see Room).
func room(root fsys.Dir, op Op) (Result, error) {
	if op.MustMount && op.Path == "." {
		// Its parent lies outside what dirpv may look at.
		return Result{}, errors.New("room: the operator's root itself cannot be required to be a mount")
	}
	dir, err := openBase(root, "room", op.Path, op.MustExist || op.MustMount)
	if err != nil {
		return Result{}, err
	}
	defer dir.Close()
	info, err := dir.Stat()
	if err != nil {
		return Result{}, err
	}
	if op.MustMount {
		if err := mounted(dir, info, op.Path); err != nil {
			return Result{}, err
		}
	}
	fd, ok := fsys.Descriptor(dir)
	if !ok {
		return Result{}, fmt.Errorf("room %q: only a local filesystem is measured", op.Path)
	}
	var n uint64
	if op.Limited {
		n, err = quota.Room(fd, op.overcommit())
	} else {
		n, err = quota.Free(fd)
	}
	if err != nil {
		return Result{}, err
	}
	return Result{Room: n, Device: info.ID.Dev}, nil
}

// mounted checks that dir (at p, described by info) is the root of a mount: another device or
// another mount than its parent. A mount point whose disk did not mount is a plain directory
// on its parent's filesystem, and volumes made there would fill that one instead.
func mounted(dir fsys.Dir, info fsys.Info, p string) error {
	parent, err := dir.OpenDir("..", fsys.ID{})
	if err != nil {
		return fmt.Errorf("room %q: %w", p, err)
	}
	defer parent.Close()
	pinfo, err := parent.Stat()
	if err != nil {
		return fmt.Errorf("room %q: %w", p, err)
	}
	if info.ID.Dev != pinfo.ID.Dev || dir.Mount() != parent.Mount() {
		return nil
	}
	return &unusable{fmt.Sprintf("%s is not a mounted filesystem (a plain directory on its parent's): is its disk mounted?", p), ErrNotMounted}
}
