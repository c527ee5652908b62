package volumefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
)

// CreateOptions describes the volume directory to create.
type CreateOptions struct {
	Path  string      // relative to root, e.g. "ns-claim-pvc-123" or "team/ns/claim"
	Mode  fs.FileMode // permission bits applied exactly (umask does not matter); may include setgid, setuid, sticky
	UID   int         // -1: leave as is
	GID   int         // -1: leave as is
	Owner Marker      // Owner.PV must be non-empty
	// Limits makes the directory so that it can be held to a size (Limit does that next);
	// nil: a plain directory.
	Limits Limits
}

// Create makes the volume directory, idempotently and never sharing it.
//
// Parent directories are created (0o755 before umask) as needed; none of them may be a
// symbolic link or another volume (ErrNested). The marker is created first and
// exclusively: a retry by the same PV (Owner.PV) re-creates a missing directory and
// re-applies mode and ownership; a marker of another PV, an existing directory without
// a marker, or a non-directory at path gives ErrNotOwner.
func Create(root fsys.Dir, opt CreateOptions) error {
	p := opt.Path
	if err := validatePath(p); err != nil {
		return err
	}
	if opt.Owner.PV == "" {
		return fmt.Errorf("create volume %q: owner PV name is empty", p)
	}
	if opt.Owner.Released != "" || opt.Owner.Recycled != "" {
		return fmt.Errorf("create volume %q: a new volume is neither released nor recycled", p)
	}
	mode, err := dirMode(opt.Mode)
	if err != nil {
		return fmt.Errorf("create volume %q: %w", p, err)
	}

	unlock := lockPath(p)
	defer unlock()

	v, _, err := openVolumeParent(root, p, true)
	if err != nil {
		return err
	}
	defer v.dir.Close()
	for attempt := 0; ; attempt++ {
		err := createOnce(v, mode, opt.UID, opt.GID, opt.Owner, opt.Limits)
		if !errors.Is(err, errRetry) {
			return err
		}
		if attempt >= 100 {
			return fmt.Errorf("create volume %q: marker %q keeps changing: %w", p, MarkerName(p), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dirMode checks and normalizes the requested mode. Unix-style set-id and sticky bits
// (0o2775 parsed from a StorageClass parameter) are unused by fs.FileMode and would
// otherwise be silently dropped, so they are mapped to their fs.FileMode flags.
func dirMode(m fs.FileMode) (fs.FileMode, error) {
	for unixBit, flag := range map[fs.FileMode]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
		if m&unixBit != 0 {
			m = m&^unixBit | flag
		}
	}
	m &^= fs.ModeDir
	if m&^dirModeBits != 0 {
		return 0, fmt.Errorf("unsupported directory mode %v", m)
	}
	return m, nil
}

// dirModeBits are the bits of a directory's mode that Create sets and Scrub keeps.
const dirModeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// createOnce is one round of the marker protocol; errRetry means the marker changed under us.
func createOnce(v volume, mode fs.FileMode, uid, gid int, owner Marker, limits Limits) error {
	me := v.marker()
	lock, err := publishMarker(me, owner)
	switch {
	case err == nil:
		// We created the marker, so the path is ours unless a directory was already there.
		defer lock.Close()
		if err := mkdirVolume(v, limits); err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, fsys.ErrNoAnswer) {
				// No answer (an NFS server that stopped, a connection lost): the directory may
				// still be made. Keep our marker, so that a retry by this PV takes over what it finds.
				return fmt.Errorf("create volume %q: %w", v.path, err)
			}
			var cleanup string
			if rerr := v.dir.Unlink(me.name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				cleanup = fmt.Sprintf(" (and removing our marker again failed: %v)", rerr)
			}
			if errors.Is(err, fs.ErrExist) {
				// A directory without marker (or a file, or a symlink) belongs to none: never adopt it.
				return fmt.Errorf("volume %q already exists, and not as a volume (a directory without an ownership marker, such as another StorageClass's base directory, or some other file): %w%s", v.path, ErrNotOwner, cleanup)
			}
			return fmt.Errorf("create volume %q: %w%s", v.path, err, cleanup)
		}
		return applyAttrs(v, mode, uid, gid)
	case errors.Is(err, fs.ErrExist):
		// Fall through to the existing marker.
	default:
		return fmt.Errorf("create volume %q: %w", v.path, err)
	}

	lock, m, err := lockMarker(me)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := m.allows(Owner{PV: owner.PV, NodeUID: owner.NodeUID}, "create", v.path); err != nil {
		return err
	}
	// Retry by the same PV. Holding the marker lock means no same-PV creator is between
	// marker and mkdir, so a directory that appears now was made by someone else.
	info, err := v.dir.Lstat(v.base)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		raceHook("retry-mkdir", v.path)
		if err := mkdirVolume(v, limits); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("volume %q appeared while being created: %w", v.path, ErrNotOwner)
			}
			return fmt.Errorf("create volume %q: %w", v.path, err)
		}
	case err != nil:
		return fmt.Errorf("create volume %q: %w", v.path, err)
	case !info.IsDir():
		return fmt.Errorf("volume %q exists but is not a directory (%v): %w", v.path, info.Type, ErrNotOwner)
	}
	return applyAttrs(v, mode, uid, gid)
}

// mkdirVolume makes the volume directory, mode 0700 until applyAttrs sets its mode.
func mkdirVolume(v volume, limits Limits) error {
	if limits != nil {
		return limits.Mkdir(v.dir, v.base)
	}
	return v.dir.Mkdir(v.base, 0o700)
}

// applyAttrs sets owner and mode of the volume directory through the directory itself, so a
// symlink at its path is never followed. Ownership goes first because chown may clear set-id
// bits.
func applyAttrs(v volume, mode fs.FileMode, uid, gid int) error {
	d, err := openVolumeDir(v)
	if err != nil {
		return fmt.Errorf("set up volume %q: %w", v.path, err)
	}
	defer d.Close()
	if uid >= 0 || gid >= 0 {
		if err := d.Chown(uid, gid); err != nil {
			return fmt.Errorf("set owner of volume %q: %w", v.path, err)
		}
	}
	if err := d.Chmod(mode); err != nil {
		return fmt.Errorf("set mode of volume %q: %w", v.path, err)
	}
	return nil
}
