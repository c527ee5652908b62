package volumefs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

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
}

// MarkerName returns the marker path of the volume path: "a/b" -> "a/.b.dirpv".
func MarkerName(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+markerSuffix)
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

// Create makes the volume directory, idempotently and never sharing it.
//
// Parent directories are created (0o755 before umask) as needed; none of them may be a
// symbolic link or another volume (ErrNested). The marker is created first and
// exclusively: a retry by the same PV (Owner.PV) re-creates a missing directory and
// re-applies mode and ownership; a marker of another PV, an existing directory without
// a marker, or a non-directory at path gives ErrNotOwner.
func Create(root *os.Root, opt CreateOptions) error {
	path := opt.Path
	if err := validatePath(path); err != nil {
		return err
	}
	if opt.Owner.PV == "" {
		return fmt.Errorf("create volume %q: owner PV name is empty", path)
	}
	if opt.Owner.Released != "" || opt.Owner.Recycled != "" {
		return fmt.Errorf("create volume %q: a new volume is neither released nor recycled", path)
	}
	mode, err := dirMode(opt.Mode)
	if err != nil {
		return fmt.Errorf("create volume %q: %w", path, err)
	}

	unlock := lockPath(path)
	defer unlock()

	if err := makeParents(root, path); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := createOnce(root, path, mode, opt.UID, opt.GID, opt.Owner)
		if !errors.Is(err, errRetry) {
			return err
		}
		if attempt >= 100 {
			return fmt.Errorf("create volume %q: marker %q keeps changing: %w", path, MarkerName(path), err)
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
	if m&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return 0, fmt.Errorf("unsupported directory mode %v", m)
	}
	return m, nil
}

// createOnce is one round of the marker protocol; errRetry means the marker changed under us.
func createOnce(root *os.Root, path string, mode fs.FileMode, uid, gid int, owner Marker) error {
	markerPath := MarkerName(path)
	lock, err := publishMarker(root, markerPath, owner)
	switch {
	case err == nil:
		// We created the marker, so the path is ours unless a directory was already there.
		defer lock.Close()
		if err := root.Mkdir(path, 0o700); err != nil {
			var cleanup string
			if rerr := root.Remove(markerPath); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				cleanup = fmt.Sprintf(" (and removing our marker again failed: %v)", rerr)
			}
			if errors.Is(err, fs.ErrExist) {
				// A directory without marker (or a file, or a symlink) belongs to none: never adopt it.
				return fmt.Errorf("volume %q already exists, and not as a volume (a directory without an ownership marker, such as another StorageClass's base directory, or some other file): %w%s", path, ErrNotOwner, cleanup)
			}
			return fmt.Errorf("create volume %q: %w%s", path, err, cleanup)
		}
		return applyAttrs(root, path, mode, uid, gid)
	case errors.Is(err, fs.ErrExist):
		// Fall through to the existing marker.
	default:
		return fmt.Errorf("create volume %q: %w", path, err)
	}

	lock, m, err := lockMarker(root, markerPath)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := m.allows(Owner{PV: owner.PV, NodeUID: owner.NodeUID}, "create", path); err != nil {
		return err
	}
	// Retry by the same PV. Holding the marker lock means no same-PV creator is between
	// marker and mkdir, so a directory that appears now was made by someone else.
	fi, err := root.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		raceHook("retry-mkdir", path)
		if err := root.Mkdir(path, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("volume %q appeared while being created: %w", path, ErrNotOwner)
			}
			return fmt.Errorf("create volume %q: %w", path, err)
		}
	case err != nil:
		return fmt.Errorf("create volume %q: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("volume %q exists but is not a directory (%v): %w", path, fi.Mode().Type(), ErrNotOwner)
	}
	return applyAttrs(root, path, mode, uid, gid)
}

// makeParents creates the parent directories of path one component at a time. Unlike
// root.MkdirAll it refuses symbolic links (os.Root follows links that stay inside the
// root, which could place the volume inside someone else's) and checks each ancestor for
// a marker both before creating anything in it and, authoritatively, once it exists: a
// volume's marker is created before its directory, so a directory seen without a marker
// can no longer become a volume (Create of it would fail on EEXIST).
func makeParents(root *os.Root, path string) error {
	parts := strings.Split(path, string(filepath.Separator))
	for i := 1; i < len(parts); i++ {
		p := filepath.Join(parts[:i]...)
		if err := checkNoMarker(root, p, path); err != nil {
			return err
		}
		created := false
		if err := root.Mkdir(p, 0o755); err == nil {
			created = true
		} else if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create parent of volume %q: %w", path, err)
		}
		raceHook("parent-mkdir", p)
		fi, err := root.Lstat(p)
		if err != nil {
			return fmt.Errorf("create parent of volume %q: %w", path, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %q of volume %q is not a directory (%v)", p, path, fi.Mode().Type())
		}
		if err := checkNoMarker(root, p, path); err != nil {
			if created {
				// A volume was created at p while we were making it a parent; our empty
				// directory would make that volume's creator fail, so take it back.
				_ = root.Remove(p)
			}
			return err
		}
	}
	return nil
}

func checkNoMarker(root *os.Root, ancestor, path string) error {
	_, err := root.Lstat(MarkerName(ancestor))
	switch {
	case err == nil:
		return fmt.Errorf("volume path %q is inside volume %q: %w", path, ancestor, ErrNested)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("check for volume at %q: %w", ancestor, err)
	}
}

// checkAncestors reports whether every proper ancestor of path exists as a real directory,
// and refuses a path inside another volume (an ancestor with a marker, ErrNested). A symbolic
// link among the ancestors is an error (os.Root would follow it within the root, and we cannot
// tell whose volume lies behind it); any other non-directory means path cannot exist.
//
// Paths are relative to the operator's root, not a class's base directory, so a volume is
// found whatever class made it: a class whose base directory lies inside another class's
// volume is refused like any other nested path.
func checkAncestors(root *os.Root, path string) (bool, error) {
	parts := strings.Split(path, string(filepath.Separator))
	for i := 1; i < len(parts); i++ {
		p := filepath.Join(parts[:i]...)
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if fi.Mode().Type() == fs.ModeSymlink {
			return false, fmt.Errorf("parent %q of volume %q is a symbolic link", p, path)
		}
		if !fi.IsDir() {
			return false, nil
		}
		if err := checkNoMarker(root, p, path); err != nil {
			return false, err
		}
	}
	return true, nil
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

// applyAttrs sets owner and mode of the directory at path through a descriptor of the very
// directory Lstat saw, so a symlink at path is never followed (root.Chmod and root.Chown
// would follow it). Ownership goes first because chown may clear set-id bits.
func applyAttrs(root *os.Root, path string, mode fs.FileMode, uid, gid int) error {
	lfi, err := root.Lstat(path)
	if err != nil {
		return fmt.Errorf("set up volume %q: %w", path, err)
	}
	if !lfi.IsDir() {
		return fmt.Errorf("volume %q is not a directory (%v): %w", path, lfi.Mode().Type(), ErrNotOwner)
	}
	f, err := root.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("set up volume %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("set up volume %q: %w", path, err)
	}
	if !os.SameFile(lfi, fi) {
		return fmt.Errorf("set up volume %q: directory was replaced while in use", path)
	}
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("set owner of volume %q: %w", path, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("set mode of volume %q: %w", path, err)
	}
	return nil
}

// ReadMarker returns the marker of path; (nil, nil) if none.
func ReadMarker(root *os.Root, path string) (*Marker, error) {
	if err := validatePath(path); err != nil {
		return nil, err
	}
	ok, err := checkAncestors(root, path)
	if err != nil || !ok {
		return nil, err
	}
	return readMarker(root, MarkerName(path))
}

// readMarker reads a marker without locking; (nil, nil) if there is none. A marker that
// Scrub replaces while we open it (errRetry) is read again.
func readMarker(root *os.Root, markerPath string) (*Marker, error) {
	for attempt := 0; ; attempt++ {
		m, err := readMarkerOnce(root, markerPath)
		if !errors.Is(err, errRetry) || attempt >= 10 {
			return m, err
		}
	}
}

func readMarkerOnce(root *os.Root, markerPath string) (*Marker, error) {
	f, err := openMarker(root, markerPath, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeMarker(f, markerPath)
}

// ownership is the shared first step of Delete, Archive and Release: if the volume at path
// is o's, it returns its marker, locked (the caller closes lock), and gone=true if there is
// nothing (left) to do. Holding the marker lock serializes them with Create and Scrub of the
// same volume in other processes; in particular Scrub replaces the marker, and lockMarker's
// same-file check makes us start over on the new one.
func ownership(root *os.Root, path string, o Owner, op string) (lock *os.File, m *Marker, gone bool, err error) {
	if err := validatePath(path); err != nil {
		return nil, nil, false, err
	}
	if o.PV == "" {
		return nil, nil, false, fmt.Errorf("%s volume %q: PV name is empty", op, path)
	}
	ok, err := checkAncestors(root, path)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s volume %q: %w", op, path, err)
	}
	if !ok {
		return nil, nil, true, nil
	}
	markerPath := MarkerName(path)
	if err := removeDeadTemp(root, tempName(markerPath, o.PV)); err != nil {
		return nil, nil, false, fmt.Errorf("%s volume %q: %w", op, path, err)
	}
	lock, m, err = lockCurrentMarker(root, markerPath)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s volume %q: %w", op, path, err)
	}
	fail := func(err error) (*os.File, *Marker, bool, error) {
		if lock != nil {
			lock.Close()
		}
		return nil, nil, false, err
	}
	fi, err := root.Lstat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(fmt.Errorf("%s volume %q: %w", op, path, err))
	}
	switch {
	case m == nil && !exists:
		return nil, nil, true, nil
	case m == nil:
		return fail(fmt.Errorf("%s volume %q: it has no marker: %w", op, path, ErrNotOwner))
	}
	if err := m.allows(o, op, path); err != nil {
		return fail(err)
	}
	switch {
	case !exists:
		// Our marker outlived the directory (interrupted Delete/Archive): finish the job.
		if err := root.Remove(markerPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(fmt.Errorf("%s volume %q: remove marker: %w", op, path, err))
		}
		lock.Close()
		return nil, nil, true, nil
	case !fi.IsDir():
		return fail(fmt.Errorf("%s volume %q: it is not a directory (%v): %w", op, path, fi.Mode().Type(), ErrNotOwner))
	}
	return lock, m, false, nil
}

// Delete removes the volume directory and its marker. Already gone -> nil.
// A directory without marker, with another PV's marker, or released is left alone.
// The marker is removed last, so an interrupted Delete can be retried.
func Delete(root *os.Root, path string, o Owner) error {
	if err := validatePath(path); err != nil {
		return err
	}
	unlock := lockPath(path)
	defer unlock()
	lock, _, gone, err := ownership(root, path, o, "delete")
	if err != nil || gone {
		return err
	}
	defer lock.Close()
	if err := removeVolume(root, path); err != nil {
		return fmt.Errorf("delete volume %q: %w", path, err)
	}
	if err := root.Remove(MarkerName(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete volume %q: remove marker: %w", path, err)
	}
	return nil
}

// Release hands the volume over to the operator: its marker records why (e.g. "kept
// (onDelete: retain) at 2026-11-25T08:00:00Z"), and from then on no operation of any PV
// changes it. Releasing it again, or a volume already gone, is a no-op.
func Release(root *os.Root, path string, o Owner, why string) error {
	if why == "" {
		return fmt.Errorf("release volume %q: no reason given", path)
	}
	if err := validatePath(path); err != nil {
		return err
	}
	unlock := lockPath(path)
	defer unlock()
	lock, m, gone, err := ownership(root, path, o, "release")
	if err != nil || gone {
		return err
	}
	defer lock.Close()
	if m.Released != "" {
		return nil
	}
	updated := *m
	updated.Released = why
	if err := replaceMarker(root, MarkerName(path), lock, updated); err != nil {
		return fmt.Errorf("release volume %q: %w", path, err)
	}
	return nil
}

// Archive renames the directory to "archived-<base>-<UTC timestamp 20060102T150405Z>" in the same parent
// (and its marker alongside, renamed to the archive's marker name), never overwriting anything:
// if the name is taken, append "-2", "-3", ... Returns the archive's relative path.
// Directory already gone -> ("", nil). The archive is released to the operator: its marker
// still names the PV, and says so.
//
// If the directory was moved but the old marker could not be removed, the archive's path
// is returned together with the error; a retry then removes the stale marker.
func Archive(root *os.Root, path string, o Owner, now time.Time) (string, error) {
	if err := validatePath(path); err != nil {
		return "", err
	}
	unlock := lockPath(path)
	defer unlock()
	lock, m, gone, err := ownership(root, path, o, "archive")
	if err != nil || gone {
		return "", err
	}
	defer lock.Close()

	parent, base := filepath.Dir(path), filepath.Base(path)
	// Rename relative to one descriptor of the parent, so both names are single
	// components and nothing in between is resolved again.
	pdir, err := root.OpenFile(parent, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return "", fmt.Errorf("archive volume %q: %w", path, err)
	}
	defer pdir.Close()

	stamp := now.UTC().Format(archiveTimeFormat)
	archived := *m
	archived.Released = fmt.Sprintf("archived from %s at %s", base, now.UTC().Format(time.RFC3339))
	for n := 1; n <= maxArchiveSuffix; n++ {
		name := "archived-" + base + "-" + stamp
		if n > 1 {
			name += fmt.Sprintf("-%d", n)
		}
		newPath := filepath.Join(parent, name)
		// Reserving the archive's marker first keeps a concurrent Create or Archive from
		// claiming the name between our check and the rename.
		reserved, err := publishMarker(root, MarkerName(newPath), archived)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("archive volume %q: reserve %q: %w", path, newPath, err)
		}
		err = renameNoReplace(root, pdir, path, newPath)
		reserved.Close()
		if err != nil {
			if rerr := root.Remove(MarkerName(newPath)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				return "", fmt.Errorf("archive volume %q: %w (and drop reservation: %v)", path, err, rerr)
			}
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return "", fmt.Errorf("archive volume %q: %w", path, err)
		}
		if err := root.Remove(MarkerName(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return newPath, fmt.Errorf("archive volume %q: moved to %q but cannot remove old marker: %w", path, newPath, err)
		}
		return newPath, nil
	}
	return "", fmt.Errorf("archive volume %q: all archive names up to suffix -%d are taken", path, maxArchiveSuffix)
}

// renameNoReplace renames the volume path to newPath (same parent, open as pdir) and fails
// with an fs.ErrExist error if newPath exists. Plain rename(2) would replace an empty
// directory or a file there.
func renameNoReplace(root *os.Root, pdir *os.File, path, newPath string) error {
	err := renameat2NoReplace(pdir, filepath.Base(path), filepath.Base(newPath))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY):
		return fmt.Errorf("rename %q to %q: %w", path, newPath, fs.ErrExist)
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP):
		// The filesystem (e.g. NFS) has no RENAME_NOREPLACE. Check, then rename: the
		// parent is not tenant-writable, and root.Rename itself refuses to replace a
		// directory, which is what a volume rename could otherwise overwrite.
		if _, err := root.Lstat(newPath); err == nil {
			return fmt.Errorf("rename %q to %q: %w", path, newPath, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := root.Rename(path, newPath); err != nil {
			if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
				return fmt.Errorf("rename %q to %q: %w", path, newPath, fs.ErrExist)
			}
			return err
		}
		return nil
	default:
		return fmt.Errorf("rename %q to %q: %w", path, newPath, err)
	}
}

func encodeMarker(m Marker) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
