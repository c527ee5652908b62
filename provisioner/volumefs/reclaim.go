package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"syscall"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
)

const (
	// archiveTimeFormat is the UTC timestamp in archive names.
	archiveTimeFormat = "20060102T150405Z"
	// maxArchiveSuffix bounds the "-2", "-3", ... search.
	maxArchiveSuffix = 999
)

// Delete removes the volume directory and its marker. Already gone -> nil.
// A directory without marker, with another PV's marker, or released is left alone.
// The marker is removed last, so an interrupted Delete can be retried.
func Delete(root fsys.Dir, p string, o Owner) error {
	return withVolume(root, p, o, volumeOp{name: "delete", reclaim: true}, func(v opened) error {
		if err := removeVolume(v.volume); err != nil {
			return err
		}
		if err := v.dir.Unlink(v.marker().name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove marker: %w", err)
		}
		return nil
	})
}

// Release hands the volume over to the operator: its marker records why (e.g. "kept
// (onDelete: retain) at 2026-11-25T08:00:00Z"), and from then on no operation of any PV
// changes it. Releasing it again, or a volume already gone, is a no-op.
func Release(root fsys.Dir, p string, o Owner, why string) error {
	if why == "" {
		return fmt.Errorf("release volume %q: no reason given", p)
	}
	return withVolume(root, p, o, volumeOp{name: "release", reclaim: true}, func(v opened) error {
		if v.m.Released != "" {
			return nil
		}
		updated := *v.m
		updated.Released = why
		return replaceMarker(v.marker(), v.lock, updated)
	})
}

// Archive renames the directory to "archived-<base>-<UTC timestamp 20060102T150405Z>" in the same parent
// (and its marker alongside, renamed to the archive's marker name), never overwriting anything:
// if the name is taken, append "-2", "-3", ... Returns the archive's relative path.
// Directory already gone -> ("", nil). The archive is released to the operator: its marker
// still names the PV, and says so.
//
// If the directory was moved but the old marker could not be removed, the archive's path
// is returned together with the error; a retry then removes the stale marker.
func Archive(root fsys.Dir, p string, o Owner, now time.Time) (string, error) {
	return archive(root, p, o, now, false)
}

// ArchivePlain is Archive for a volume laid out by nfs-subdir-external-provisioner's
// conventions: its archive is "archived-<base>" as that provisioner names it, so that what
// looks at the disk finds it where it always did. If that name is taken, the archive gets
// Archive's name instead: nothing is ever overwritten.
func ArchivePlain(root fsys.Dir, p string, o Owner, now time.Time) (string, error) {
	return archive(root, p, o, now, true)
}

func archive(root fsys.Dir, p string, o Owner, now time.Time, plain bool) (string, error) {
	var moved string
	err := withVolume(root, p, o, volumeOp{name: "archive", reclaim: true}, func(v opened) error {
		stamp := now.UTC().Format(archiveTimeFormat)
		archived := *v.m
		archived.Released = fmt.Sprintf("archived from %s at %s", v.base, now.UTC().Format(time.RFC3339))
		first := 1
		if plain {
			first = 0
		}
		for n := first; n <= maxArchiveSuffix; n++ {
			name := "archived-" + v.base + "-" + stamp
			switch {
			case n == 0:
				name = "archived-" + v.base
			case n > 1:
				name += fmt.Sprintf("-%d", n)
			}
			newPath := path.Join(path.Dir(p), name)
			to := volume{path: newPath, dir: v.dir, base: name}
			// Reserving the archive's marker first keeps a concurrent Create or Archive from
			// claiming the name between our check and the rename. Both names are entries of the
			// one open parent, so nothing in between is resolved again.
			reserved, err := publishMarker(to.marker(), archived)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reserve %q: %w", newPath, err)
			}
			err = renameNoReplace(v.volume, to)
			reserved.Close()
			if err != nil {
				if rerr := v.dir.Unlink(to.marker().name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					return fmt.Errorf("%w (and drop reservation: %v)", err, rerr)
				}
				if errors.Is(err, fs.ErrExist) {
					continue
				}
				return err
			}
			moved = newPath
			if err := v.dir.Unlink(v.marker().name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("moved to %q but cannot remove old marker: %w", newPath, err)
			}
			return nil
		}
		return fmt.Errorf("all archive names up to suffix -%d are taken", maxArchiveSuffix)
	})
	return moved, err
}

// renameNoReplace renames the volume from to to (same parent) and fails with an fs.ErrExist
// error if to exists. Plain rename would replace an empty directory or a file there.
func renameNoReplace(from, to volume) error {
	err := renameFile(from.dir, from.base, to.base, true)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY):
		return fmt.Errorf("rename %q to %q: %w", from.path, to.path, fs.ErrExist)
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP):
		// The filesystem (e.g. NFS) cannot rename without replacing. Check, then rename: the
		// parent is not tenant-writable, and its entries are ours.
		if _, err := from.dir.Lstat(to.base); err == nil {
			return fmt.Errorf("rename %q to %q: %w", from.path, to.path, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := renameFile(from.dir, from.base, to.base, false); err != nil {
			if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
				return fmt.Errorf("rename %q to %q: %w", from.path, to.path, fs.ErrExist)
			}
			return err
		}
		return nil
	default:
		return fmt.Errorf("rename %q to %q: %w", from.path, to.path, err)
	}
}

// renameFile renames an entry of dir; a hook so tests can simulate filesystems that cannot
// rename without replacing.
var renameFile = func(dir fsys.Dir, oldname, newname string, noReplace bool) error {
	return dir.Rename(oldname, newname, noReplace)
}
