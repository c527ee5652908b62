package volumefs

import (
	"errors"
	"fmt"
	"io/fs"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Limit holds the volume directory path, made by Create with limits, to bytes and names what
// holds it (see Limits.Set, which also says what overcommit does), which the marker records too;
// repeated, it changes the limit. It is how a volume gets its size when made, and a larger one
// when its claim grows. The volume must be o's and not released; a missing directory is
// ErrMissing (it is never recreated here).
func Limit(root fsys.Dir, p string, o Owner, limits Limits, bytes uint64, overcommit float64) (string, error) {
	var held string
	err := withVolume(root, p, o, "limit", func(v volume, vol fsys.Dir, m *Marker, lock fsys.File) error {
		var err error
		if held, err = limits.Set(root, v.dir, vol, bytes, overcommit); err != nil || m.Quota == held {
			return err
		}
		updated := *m
		updated.Quota = held
		return replaceMarker(v.marker(), lock, updated)
	})
	return held, err
}

// Unlimit removes the limit of the volume directory path before it is deleted, archived or
// released (see Limits.Clear), so that what held it is free once the directory goes. A volume
// that is gone, or released already, is left alone (nil).
func Unlimit(root fsys.Dir, p string, o Owner, limits Limits) error {
	err := withVolume(root, p, o, "unlimit", func(v volume, vol fsys.Dir, _ *Marker, _ fsys.File) error {
		return limits.Clear(v.dir, vol)
	})
	if errors.Is(err, ErrMissing) || errors.Is(err, ErrReleased) {
		return nil
	}
	return err
}

// Usage reports what the volume directory path, made by Create with limits, holds and its
// limit, as limits counts them (see Limits.Usage); it changes nothing. The volume must be o's and
// not released; a missing directory is ErrMissing.
func Usage(root fsys.Dir, p string, o Owner, limits Limits) (used, limit uint64, err error) {
	err = withVolume(root, p, o, "usage", func(v volume, vol fsys.Dir, _ *Marker, _ fsys.File) error {
		var err error
		used, limit, err = limits.Usage(v.dir, vol)
		return err
	})
	return used, limit, err
}

// withVolume runs f on the volume directory path, open, with its marker, while it holds the path
// lock and the marker's lock (lock) and after it checked that the volume is o's and not released. A volume that is
// missing gives ErrMissing; nothing is removed or recreated.
func withVolume(root fsys.Dir, p string, o Owner, op string, f func(v volume, vol fsys.Dir, m *Marker, lock fsys.File) error) error {
	if err := validatePath(p); err != nil {
		return err
	}
	if o.PV == "" {
		return fmt.Errorf("%s volume %q: PV name is empty", op, p)
	}
	unlock := lockPath(p)
	defer unlock()
	v, ok, err := openVolumeParent(root, p, false)
	if err != nil {
		return fmt.Errorf("%s volume %q: %w", op, p, err)
	}
	if !ok {
		return fmt.Errorf("%s volume %q: %w", op, p, ErrMissing)
	}
	defer v.dir.Close()
	lock, m, err := lockCurrentMarker(v.marker())
	if err != nil {
		return fmt.Errorf("%s volume %q: %w", op, p, err)
	}
	if lock == nil {
		if _, err := v.dir.Lstat(v.base); err != nil {
			return fmt.Errorf("%s volume %q: %w", op, p, ErrMissing)
		}
		return fmt.Errorf("%s volume %q: it has no marker: %w", op, p, ErrNotOwner)
	}
	defer lock.Close()
	if err := m.allows(o, op, p); err != nil {
		return err
	}
	vol, err := openVolumeDir(v)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s volume %q: %w", op, p, ErrMissing)
		}
		return fmt.Errorf("%s volume %q: %w", op, p, err)
	}
	defer vol.Close()
	if err := f(v, vol, m, lock); err != nil {
		return fmt.Errorf("%s volume %q: %w", op, p, err)
	}
	return nil
}
