package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/pathname"
)

// Owner is who asks to act on a volume: the PV, and for a node-local volume the UID of the
// Node object it is on now.
type Owner struct {
	PV      string
	NodeUID string
}

var (
	// ErrNotOwner: the directory (or its marker) belongs to another PV, or to none.
	ErrNotOwner = errors.New("volume directory is not owned by this PV")
	// ErrReleased: the volume was handed over to the operator; nothing may change it.
	ErrReleased = errors.New("volume was released to the operator; dirpv does not touch it again")
	// ErrNested: the path lies inside another volume directory (an ancestor has a marker).
	ErrNested = errors.New("volume path lies inside another volume")
	// ErrInvalidPath: the path is not a safe relative volume path (see pathname.Validate).
	ErrInvalidPath = errors.New("invalid volume path")
	// ErrMissing: the volume directory does not exist (Scrub never recreates it).
	ErrMissing = errors.New("volume directory is missing")
	// ErrWrittenSince: Scrub found entries in a volume already scrubbed for the same claim.
	ErrWrittenSince = errors.New("entries were written after the volume was scrubbed; not scrubbing them again, as they may be a newer claim's")
)

// validatePath checks a volume path relative to the operator's root (the class's base
// directory and the rendered pathPattern) by the one rule for volume paths. Names starting
// with "." are never volumes (markers and temporary files are), and no component may exceed
// pathname.MaxComponent bytes, which keeps archive and marker names within NAME_MAX.
func validatePath(path string) error {
	if err := pathname.Validate(path); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidPath, path, err)
	}
	return nil
}

// volume is a volume path opened for an operation: the directory that holds it (open), and the
// volume's name there.
type volume struct {
	path string // relative to the root
	dir  fsys.Dir
	base string
}

// marker is the volume's marker entry.
func (v volume) marker() entry {
	return entry{dir: v.dir, name: "." + v.base + markerSuffix, path: MarkerName(v.path)}
}

// entry is one name in the directory that holds a volume: name there, and path, relative to
// the operator's root, for messages.
type entry struct {
	dir  fsys.Dir
	name string
	path string
}

// sibling is the entry called name beside e.
func (e entry) sibling(name string) entry {
	return entry{dir: e.dir, name: name, path: path.Join(path.Dir(e.path), name)}
}

// openVolumeParent opens the directory that holds the volume at path (relative to root), one
// component at a time, never following a symbolic link, and refuses a path inside another
// volume (an ancestor with a marker, ErrNested).
//
// With create, missing parents are made (0o755 before umask), and each ancestor is checked
// for a marker both before anything is made in it and, authoritatively, once it exists: a
// volume's marker is created before its directory, so a directory seen without a marker can
// no longer become a volume (Create of it would fail on EEXIST). Without create, a missing
// ancestor or one that is not a directory means the volume cannot exist: ok is false.
//
// Paths are relative to the operator's root, not a class's base directory, so a volume is
// found whatever class made it: a class whose base directory lies inside another class's
// volume is refused like any other nested path.
func openVolumeParent(root fsys.Dir, p string, create bool) (v volume, ok bool, err error) {
	dir, err := root.OpenDir(".", fsys.ID{})
	if err != nil {
		return volume{}, false, err
	}
	defer func() {
		if !ok {
			dir.Close()
		}
	}()
	parts := strings.Split(p, "/")
	for i, name := range parts[:len(parts)-1] {
		ancestor := path.Join(parts[:i+1]...)
		if err := checkNoMarker(dir, name, ancestor, p); err != nil {
			return volume{}, false, err
		}
		created := false
		if create {
			if err := dir.Mkdir(name, 0o755); err == nil {
				created = true
			} else if !errors.Is(err, fs.ErrExist) {
				return volume{}, false, fmt.Errorf("create parent of volume %q: %w", p, err)
			}
			raceHook("parent-mkdir", ancestor)
		}
		info, err := dir.Lstat(name)
		switch {
		case !create && errors.Is(err, fs.ErrNotExist):
			return volume{}, false, nil
		case err != nil:
			return volume{}, false, fmt.Errorf("parent %q of volume %q: %w", ancestor, p, err)
		case info.Type == fs.ModeSymlink:
			return volume{}, false, fmt.Errorf("parent %q of volume %q is a symbolic link", ancestor, p)
		case !info.IsDir() && create:
			return volume{}, false, fmt.Errorf("parent %q of volume %q is not a directory (%v)", ancestor, p, info.Type)
		case !info.IsDir():
			return volume{}, false, nil
		}
		if err := checkNoMarker(dir, name, ancestor, p); err != nil {
			if created {
				// A volume was created at ancestor while we were making it a parent; our
				// empty directory would make that volume's creator fail, so take it back.
				_ = dir.Rmdir(name)
			}
			return volume{}, false, err
		}
		sub, err := dir.OpenDir(name, info.ID)
		if err != nil {
			return volume{}, false, fmt.Errorf("parent %q of volume %q: %w", ancestor, p, err)
		}
		dir.Close()
		dir = sub
	}
	return volume{path: p, dir: dir, base: parts[len(parts)-1]}, true, nil
}

// checkNoMarker refuses a volume path p inside the volume ancestor, the entry name of dir.
func checkNoMarker(dir fsys.Dir, name, ancestor, p string) error {
	_, err := dir.Lstat("." + name + markerSuffix)
	switch {
	case err == nil:
		return fmt.Errorf("volume path %q is inside volume %q: %w", p, ancestor, ErrNested)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("check for volume at %q: %w", ancestor, err)
	}
}

// allows checks that m lets o act on the volume at path: same PV, same incarnation of the
// node, not released (except to release it again: op "release").
func (m *Marker) allows(o Owner, op, path string) error {
	switch {
	case m.PV != o.PV:
		return fmt.Errorf("%s volume %q: it belongs to another PV: %w", op, path, ErrNotOwner)
	case m.NodeUID != "" && m.NodeUID != o.NodeUID:
		return fmt.Errorf("%s volume %q: it was made on another incarnation of its node (Node UID %s, now %q): %w", op, path, m.NodeUID, o.NodeUID, ErrNotOwner)
	case m.Released != "" && op != "release":
		return fmt.Errorf("%s volume %q: %s: %w", op, path, m.Released, ErrReleased)
	}
	return nil
}

// openVolumeDir opens the volume directory itself, as the entry of its parent that Lstat saw:
// never through a symbolic link. A missing volume gives an fs.ErrNotExist error; anything but
// a directory, ErrNotOwner.
func openVolumeDir(v volume) (fsys.Dir, error) {
	info, err := v.dir.Lstat(v.base)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("volume %q is not a directory (%v): %w", v.path, info.Type, ErrNotOwner)
	}
	d, err := v.dir.OpenDir(v.base, info.ID)
	if errors.Is(err, fsys.ErrChanged) {
		return nil, fmt.Errorf("volume %q: directory was replaced while in use", v.path)
	}
	return d, err
}

// ReadMarker returns the marker of path; (nil, nil) if none.
func ReadMarker(root fsys.Dir, p string) (*Marker, error) {
	if err := validatePath(p); err != nil {
		return nil, err
	}
	v, ok, err := openVolumeParent(root, p, false)
	if err != nil || !ok {
		return nil, err
	}
	defer v.dir.Close()
	return readMarker(v.marker())
}

// volumeOp is an operation on an existing volume, as the one prologue (withVolume) runs it.
type volumeOp struct {
	name string // "delete", "scrub", ...: in messages, and for Marker.allows
	// reclaim marks an operation that ends the PV's hold on the volume: Delete, Release and
	// Archive. For them a volume that is gone is done with (nil, and f does not run), and a
	// marker of the PV's that outlived its directory (an interrupted Delete or Archive) is
	// removed; the temporary file a dead writer of the PV left beside the marker is removed
	// first, as nothing would find it once the marker is gone. The volume directory itself is
	// not opened: they do not work inside it.
	//
	// The other operations (Scrub, Limit, Unlimit, Usage) work inside the directory: a missing
	// volume is ErrMissing, nothing is removed, and f gets the directory open.
	reclaim bool
	// check, if set, checks the operation's own arguments, after the path and the PV name and
	// before anything is locked.
	check func() error
}

// opened is an existing volume of the PV, as withVolume hands it to an operation.
type opened struct {
	volume           // the volume's entry in its parent, which is open
	vol    fsys.Dir  // the volume directory, open; nil for a reclaim
	info   fsys.Info // the volume directory, as Lstat saw it
	m      *Marker   // its marker
	lock   fsys.File // the marker, open and locked
}

// withVolume is the one prologue of every operation on an existing volume: it checks the path
// and the owner o, takes the in-process path lock, opens the volume's parent, locks the current
// marker, checks that the volume is o's (Marker.allows) and a directory, and runs f while it
// holds all of that. Holding the marker lock serializes the operation with Create and the others
// on the same volume in other processes; Scrub and Release replace the marker, and
// lockCurrentMarker's same-file check makes a waiter start over on the new one.
//
// Ownership is checked before anything else about the directory is looked at, and a directory
// without a marker is no one's (ErrNotOwner). What a missing volume gives depends on op (see
// volumeOp.reclaim). An error of f is returned prefixed with op and the path.
func withVolume(root fsys.Dir, p string, o Owner, op volumeOp, f func(v opened) error) error {
	if err := validatePath(p); err != nil {
		return err
	}
	if o.PV == "" {
		return fmt.Errorf("%s volume %q: PV name is empty", op.name, p)
	}
	if op.check != nil {
		if err := op.check(); err != nil {
			return err
		}
	}
	unlock := lockPath(p)
	defer unlock()
	missing := func() error {
		if op.reclaim {
			return nil
		}
		return fmt.Errorf("%s volume %q: %w", op.name, p, ErrMissing)
	}
	v, ok, err := openVolumeParent(root, p, false)
	if err != nil {
		return fmt.Errorf("%s volume %q: %w", op.name, p, err)
	}
	if !ok {
		return missing()
	}
	defer v.dir.Close()
	me := v.marker()
	if op.reclaim {
		if err := removeDeadTemp(me.sibling(tempName(me.name, o.PV))); err != nil {
			return fmt.Errorf("%s volume %q: %w", op.name, p, err)
		}
	}
	lock, m, err := lockCurrentMarker(me)
	if err != nil {
		return fmt.Errorf("%s volume %q: %w", op.name, p, err)
	}
	if lock != nil {
		defer lock.Close()
		if err := m.allows(o, op.name, p); err != nil {
			return err
		}
	}
	info, err := v.dir.Lstat(v.base)
	gone := errors.Is(err, fs.ErrNotExist)
	switch {
	case err != nil && !gone:
		return fmt.Errorf("%s volume %q: %w", op.name, p, err)
	case gone && lock != nil && op.reclaim:
		// Our marker outlived the directory (interrupted Delete/Archive): finish the job.
		if err := v.dir.Unlink(me.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s volume %q: remove marker: %w", op.name, p, err)
		}
		return nil
	case gone:
		return missing()
	case lock == nil:
		return fmt.Errorf("%s volume %q: it has no marker: %w", op.name, p, ErrNotOwner)
	case !info.IsDir():
		return fmt.Errorf("%s volume %q: it is not a directory (%v): %w", op.name, p, info.Type, ErrNotOwner)
	}
	ov := opened{volume: v, info: info, m: m, lock: lock}
	if !op.reclaim {
		vol, err := openVolumeDir(v)
		if errors.Is(err, fs.ErrNotExist) {
			return missing()
		}
		if err != nil {
			return fmt.Errorf("%s volume %q: %w", op.name, p, err)
		}
		defer vol.Close()
		ov.vol = vol
	}
	if err := f(ov); err != nil {
		return fmt.Errorf("%s volume %q: %w", op.name, p, err)
	}
	return nil
}

// serializeInProcess turns off the in-process path lock so tests can exercise the
// flock protocol that protects against other processes.
var serializeInProcess = true

// pathLocks serializes operations on one volume path within this process. flock alone is
// not enough on NFS, where it is emulated with POSIX locks that never conflict within a
// process (and over NFSv3 without NLM there are no locks at all).
var pathLocks = struct {
	sync.Mutex
	m map[string]*pathLock
}{m: map[string]*pathLock{}}

type pathLock struct {
	sync.Mutex
	refs int
}

func lockPath(path string) (unlock func()) {
	if !serializeInProcess {
		return func() {}
	}
	pathLocks.Lock()
	l := pathLocks.m[path]
	if l == nil {
		l = &pathLock{}
		pathLocks.m[path] = l
	}
	l.refs++
	pathLocks.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		pathLocks.Lock()
		if l.refs--; l.refs == 0 {
			delete(pathLocks.m, path)
		}
		pathLocks.Unlock()
	}
}
