package volumefs

import (
	"errors"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Limits holds volume directories to a size (quota.Dirs, on a local filesystem).
type Limits interface {
	// Mkdir makes the volume directory name in dir so that it can be limited; an existing entry
	// gives an error matching fs.ErrExist.
	Mkdir(dir fsys.Dir, name string) error
	// Set holds vol, the volume directory in dir, to bytes, and names what holds it; it refuses a
	// limit that takes the limits on the filesystem past its size times overcommit. lock is the
	// operator's root, whose lock file serializes what Set allocates and admits.
	Set(lock, dir, vol fsys.Dir, bytes uint64, overcommit float64) (string, error)
	// Clear removes the limit of vol, the volume directory in dir, before it goes.
	Clear(dir, vol fsys.Dir) error
	// Usage reports the bytes vol, the volume directory in dir, holds and its limit (0: none),
	// from what holds it to its size, without walking its tree; a directory that nothing holds
	// on its own is an error.
	Usage(dir, vol fsys.Dir) (used, limit uint64, err error)
}

// Limit holds the volume directory path, made by Create with limits, to bytes and names what
// holds it (see Limits.Set, which also says what overcommit does), which the marker records too;
// repeated, it changes the limit. It is how a volume gets its size when made, and a larger one
// when its claim grows. The volume must be o's and not released; a missing directory is
// ErrMissing (it is never recreated here).
func Limit(root fsys.Dir, p string, o Owner, limits Limits, bytes uint64, overcommit float64) (string, error) {
	var held string
	err := withVolume(root, p, o, volumeOp{name: "limit"}, func(v opened) error {
		var err error
		if held, err = limits.Set(root, v.dir, v.vol, bytes, overcommit); err != nil || v.m.Quota == held {
			return err
		}
		updated := *v.m
		updated.Quota = held
		return replaceMarker(v.marker(), v.lock, updated)
	})
	return held, err
}

// Unlimit removes the limit of the volume directory path before it is deleted, archived or
// released (see Limits.Clear), so that what held it is free once the directory goes. A volume
// that is gone, or released already, is left alone (nil).
func Unlimit(root fsys.Dir, p string, o Owner, limits Limits) error {
	err := withVolume(root, p, o, volumeOp{name: "unlimit"}, func(v opened) error {
		return limits.Clear(v.dir, v.vol)
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
	err = withVolume(root, p, o, volumeOp{name: "usage"}, func(v opened) error {
		var err error
		used, limit, err = limits.Usage(v.dir, v.vol)
		return err
	})
	return used, limit, err
}
