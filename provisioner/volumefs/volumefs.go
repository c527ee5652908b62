package volumefs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
	"dirpv.io/dirpv/provisioner/pathname"
)

// Marker is the ownership record of one volume directory. It is stored as JSON in a file beside
// the directory (same parent), named "." + base + ".dirpv" (e.g. volume "a/b" -> "a/.b.dirpv"),
// so that the tenant, who only sees the inside of the directory, can neither read nor forge it,
// and applications that want an empty volume (e.g. initdb) see an empty directory.
type Marker struct {
	PV             string `json:"pv"` // PV name: the owner key
	ClaimUID       string `json:"claimUID,omitempty"`
	ClaimNamespace string `json:"claimNamespace,omitempty"`
	ClaimName      string `json:"claimName,omitempty"`
	// NodeUID is the UID of the Node object a node-local volume was made on. A node that is
	// deleted and joins again gets a new UID: its old volumes were left behind when it went, and
	// no PV may reach them through the new Node.
	NodeUID string `json:"nodeUID,omitempty"`
	// Recycled is the UID of the claim whose data was last scrubbed from the volume.
	Recycled string `json:"recycled,omitempty"`
	// Released says how and when the volume was handed over to the operator (kept or archived
	// when its PV went). dirpv never changes a released volume again, whatever PV names it.
	Released string `json:"released,omitempty"`
	// Quota names what holds a volume of capacity: enforce to its size, e.g. "project
	// 1073741824" (as its PV's dirpv.io/quota does); the directory's own project ID or subvolume
	// is what counts.
	Quota string `json:"quota,omitempty"`
}

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

const (
	markerSuffix = ".dirpv"
	// archiveTimeFormat is the UTC timestamp in archive names.
	archiveTimeFormat = "20060102T150405Z"
	// maxArchiveSuffix bounds the "-2", "-3", ... search.
	maxArchiveSuffix = 999
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

// MarkerName returns the marker path of the volume path: "a/b" -> "a/.b.dirpv".
func MarkerName(p string) string {
	return path.Join(path.Dir(p), "."+path.Base(p)+markerSuffix)
}

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

// readMarker reads a marker without locking; (nil, nil) if there is none. A marker that
// Scrub replaces while we open it (errRetry) is read again.
func readMarker(e entry) (*Marker, error) {
	for attempt := 0; ; attempt++ {
		m, err := readMarkerOnce(e)
		if !errors.Is(err, errRetry) || attempt >= 10 {
			return m, err
		}
	}
}

func readMarkerOnce(e entry) (*Marker, error) {
	f, err := openMarker(e, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeMarker(f, e.path)
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
	var moved string
	err := withVolume(root, p, o, volumeOp{name: "archive", reclaim: true}, func(v opened) error {
		stamp := now.UTC().Format(archiveTimeFormat)
		archived := *v.m
		archived.Released = fmt.Sprintf("archived from %s at %s", v.base, now.UTC().Format(time.RFC3339))
		for n := 1; n <= maxArchiveSuffix; n++ {
			name := "archived-" + v.base + "-" + stamp
			if n > 1 {
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

// dirModeBits are the bits of a directory's mode that Create sets and Scrub keeps.
const dirModeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

func encodeMarker(m Marker) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
