package volumefs

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"path"
	"syscall"
	"time"

	"dirpv.io/dirpv/provisioner/fsys"
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

const markerSuffix = ".dirpv"

// MarkerName returns the marker path of the volume path: "a/b" -> "a/.b.dirpv".
func MarkerName(p string) string {
	return path.Join(path.Dir(p), "."+path.Base(p)+markerSuffix)
}

// maxMarkerSize bounds what we read from a marker; real markers are a few hundred bytes.
const maxMarkerSize = 64 << 10

// errRetry: the marker changed while we looked at it (removed, replaced, or still being
// written by the non-link fallback); start the round again.
var errRetry = errors.New("marker changed, retry")

// Test hooks.
var (
	// linkFile publishes a finished marker; a test replaces it to exercise the fallback
	// for filesystems without hard links.
	linkFile = func(dir fsys.Dir, oldname, newname string) error { return dir.Link(oldname, newname) }
	// raceHook runs at the points where a concurrent creator could step in; tests use it
	// to make those races deterministic.
	raceHook = func(point, path string) {}
)

// publishMarker creates the marker e exclusively with m as content and returns it open and
// locked; the caller closes it to unlock. If the marker already exists the error matches
// fs.ErrExist.
//
// The content is written to m.PV's temporary file first and hard-linked into place, so
// readers never see a half-written marker, and link is exclusive even on old NFS. The lock
// is taken before the link, so it already holds when the marker becomes visible.
func publishMarker(e entry, m Marker) (fsys.File, error) {
	data, err := encodeMarker(m)
	if err != nil {
		return nil, err
	}
	tmp, f, err := createTemp(e, m.PV)
	if err != nil {
		return nil, fmt.Errorf("create marker %q: %w", e.path, err)
	}
	err = writeAll(f, data)
	if err == nil {
		err = linkFile(e.dir, tmp.name, e.name)
	}
	// While we still hold its lock, so that nobody takes it for a dead writer's.
	_ = e.dir.Unlink(tmp.name)
	if err == nil {
		return f, nil
	}
	f.Close()
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create marker %q: %w", e.path, fs.ErrExist)
	}
	if !linkUnsupported(err) {
		return nil, fmt.Errorf("create marker %q: %w", e.path, err)
	}

	// No hard links here: create the marker itself exclusively. Readers may then briefly
	// see it empty; they treat that as errRetry.
	f, err = e.dir.Create(e.name, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create marker %q: %w", e.path, err)
	}
	err = f.Lock()
	if err == nil {
		err = writeAll(f, data)
	}
	if err != nil {
		f.Close()
		_ = e.dir.Unlink(e.name)
		return nil, fmt.Errorf("create marker %q: %w", e.path, err)
	}
	return f, nil
}

// tempName is the temporary file in which PV pv writes the marker called marker before putting
// it in place. Its name starts with a dot like the marker's, so it can never be taken for a
// volume. It is the same for every writer of that PV (retries, another replica), so one that a
// writer killed mid-write left behind is found by name, not by reading the directory, and
// removed by the next operation of that PV (see removeDeadTemp).
func tempName(marker, pv string) string {
	h := fnv.New32a()
	h.Write([]byte(pv))
	return fmt.Sprintf("%s.tmp-%08x", marker, h.Sum32())
}

// createTemp creates pv's temporary file for the marker e exclusively and returns it locked. A
// writer of the same PV may be at work on it (in another process): createTemp waits for it. One
// whose writer died is removed.
func createTemp(e entry, pv string) (entry, fsys.File, error) {
	tmp := e.sibling(tempName(e.name, pv))
	for attempt := 0; ; attempt++ {
		f, err := tmp.dir.Create(tmp.name, 0o600)
		if err == nil {
			if err := f.Lock(); err != nil {
				f.Close()
				_ = tmp.dir.Unlink(tmp.name)
				return entry{}, nil, err
			}
			// Taken for a dead writer's between our create and our lock? Then it is gone.
			if sameFile(tmp, f) {
				return tmp, f, nil
			}
			f.Close()
		} else if !errors.Is(err, fs.ErrExist) {
			return entry{}, nil, err
		} else if err := removeDeadTemp(tmp); err != nil {
			return entry{}, nil, err
		}
		if attempt >= 100 {
			return entry{}, nil, fmt.Errorf("temporary file %q keeps changing", tmp.path)
		}
	}
}

// removeDeadTemp removes the temporary file tmp if the writer that made it is gone: it waits
// for the file's lock (a live writer holds it only while it writes), and if the name still
// names that file then, nobody will put it in place any more.
func removeDeadTemp(tmp entry) error {
	f, err := openMarker(tmp, true)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errRetry) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	raceHook("temp-wait", tmp.path)
	if err := f.Lock(); err != nil {
		return err
	}
	if !sameFile(tmp, f) {
		return nil
	}
	if err := tmp.dir.Unlink(tmp.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove a dead writer's temporary file %q: %w", tmp.path, err)
	}
	return nil
}

// sameFile reports whether e still names the open file f.
func sameFile(e entry, f fsys.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	li, err := e.dir.Lstat(e.name)
	return err == nil && li.ID == fi.ID
}

// replaceMarker atomically replaces the marker e, which the caller holds locked (lock, from
// lockMarker), with one holding m.
//
// The new content goes to the PV's temporary file, is synced, and is renamed over the
// marker, so readers see either the old or the new marker, never a partial one. The lock is
// on the marker's inode, so after the rename the caller's lock is on the old, now unlinked
// inode: the temporary file is locked before the rename and stays locked until
// replaceMarker returns, and whoever was waiting for the old inode's lock finds, in
// lockMarker, that the path no longer names the file it locked and starts over on the new
// marker. Every operation that removes or replaces a marker holds its lock, so the marker
// we hold cannot have been removed meanwhile (rename would silently bring it back); this is
// checked anyway just before the rename.
func replaceMarker(e entry, lock fsys.File, m Marker) error {
	data, err := encodeMarker(m)
	if err != nil {
		return err
	}
	tmp, f, err := createTemp(e, m.PV)
	if err != nil {
		return fmt.Errorf("rewrite marker %q: %w", e.path, err)
	}
	defer f.Close()
	err = writeAll(f, data)
	if err == nil {
		err = checkSameMarker(e, lock)
	}
	if err == nil {
		raceHook("marker-rename", e.path)
		err = e.dir.Rename(tmp.name, e.name, false)
	}
	if err != nil {
		_ = e.dir.Unlink(tmp.name)
		return fmt.Errorf("rewrite marker %q: %w", e.path, err)
	}
	// Make the rename durable: a marker that reverts after a crash would let a late scrub for
	// the old claim erase the next tenant's data.
	if err := e.dir.Sync(); err != nil {
		return fmt.Errorf("rewrite marker %q: sync directory: %w", e.path, err)
	}
	return nil
}

// checkSameMarker reports an error unless e still names the file open as lock.
func checkSameMarker(e entry, lock fsys.File) error {
	fi, err := lock.Stat()
	if err != nil {
		return err
	}
	li, err := e.dir.Lstat(e.name)
	if err != nil {
		return fmt.Errorf("marker changed while locked: %w", err)
	}
	if li.ID != fi.ID {
		return errors.New("marker was replaced while locked")
	}
	return nil
}

func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

func writeAll(f fsys.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		return err
	}
	// The marker is the only ownership record; it must not come back empty after a crash.
	return f.Sync()
}

// lockMarker opens the existing marker e, waits for its lock (a creator holds it until the
// directory is set up) and returns it locked with its content. errRetry if it was removed or
// replaced meanwhile.
func lockMarker(e entry) (fsys.File, *Marker, error) {
	// Writable: flock emulation on NFS needs a writable descriptor for an exclusive lock.
	f, err := openMarker(e, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errRetry
	}
	if err != nil {
		return nil, nil, err
	}
	if err := f.Lock(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("lock marker %q: %w", e.path, err)
	}
	if !sameFile(e, f) {
		// The creator gave up and removed it (maybe someone created a new one).
		f.Close()
		return nil, nil, errRetry
	}
	m, err := decodeMarker(f, e.path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, m, nil
}

// lockCurrentMarker is lockMarker following the marker across replacements (Scrub renames
// a rewritten marker over the one we may be waiting for) and removals: it returns the
// current marker locked, or (nil, nil, nil) if there is none (any more).
func lockCurrentMarker(e entry) (fsys.File, *Marker, error) {
	for attempt := 0; ; attempt++ {
		f, m, err := lockMarker(e)
		if !errors.Is(err, errRetry) {
			return f, m, err
		}
		if _, lerr := e.dir.Lstat(e.name); errors.Is(lerr, fs.ErrNotExist) {
			return nil, nil, nil
		}
		if attempt >= 100 {
			return nil, nil, fmt.Errorf("marker %q keeps changing: %w", e.path, err)
		}
		if attempt > 0 {
			// Replaced markers are complete at once; an empty one (a creator without hard
			// links between create and write, or one that died there) needs time.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// openMarker opens the marker e only if it is a regular file: never through a symlink, and
// never blocking on a FIFO.
func openMarker(e entry, write bool) (fsys.File, error) {
	info, err := e.dir.Lstat(e.name)
	if err != nil {
		return nil, err
	}
	if !info.IsRegular() {
		return nil, fmt.Errorf("marker %q is not a regular file (%v): %w", e.path, info.Type, ErrNotOwner)
	}
	f, err := e.dir.OpenFile(e.name, write)
	if errors.Is(err, fsys.ErrChanged) {
		return nil, fmt.Errorf("marker %q was replaced while being read: %w", e.path, errRetry)
	}
	return f, err
}

func decodeMarker(f fsys.File, markerPath string) (*Marker, error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxMarkerSize+1))
	if err != nil {
		return nil, fmt.Errorf("read marker %q: %w", markerPath, err)
	}
	return parseMarker(data, markerPath)
}

// parseMarker decodes a marker's content. Markers are written by dirpv only, but live where an
// operator (or a bug) may change them: anything that is not a complete marker is ErrNotOwner,
// and an empty one errRetry (a creator may still be writing it).
func parseMarker(data []byte, markerPath string) (*Marker, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("marker %q is empty (still being written?): %w", markerPath, errRetry)
	}
	if len(data) > maxMarkerSize {
		return nil, fmt.Errorf("marker %q is larger than %d bytes: %w", markerPath, maxMarkerSize, ErrNotOwner)
	}
	var m Marker
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("marker %q is corrupt (%v): %w", markerPath, err, ErrNotOwner)
	}
	if m.PV == "" {
		return nil, fmt.Errorf("marker %q is corrupt (no PV name): %w", markerPath, ErrNotOwner)
	}
	return &m, nil
}

// encodeMarker refuses a marker larger than dirpv reads back: its volume could never be
// reclaimed.
func encodeMarker(m Marker) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b)+1 > maxMarkerSize {
		return nil, fmt.Errorf("a marker of %d bytes for PV %.80q is larger than the %d bytes dirpv reads back", len(b)+1, m.PV, maxMarkerSize)
	}
	return append(b, '\n'), nil
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
