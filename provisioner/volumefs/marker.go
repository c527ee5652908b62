package volumefs

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxMarkerSize bounds what we read from a marker; real markers are a few hundred bytes.
const maxMarkerSize = 64 << 10

// errRetry: the marker changed while we looked at it (removed, replaced, or still being
// written by the non-link fallback); start the round again.
var errRetry = errors.New("marker changed, retry")

// Test hooks.
var (
	// linkFile publishes a finished marker; a test replaces it to exercise the fallback
	// for filesystems without hard links.
	linkFile = func(root *os.Root, oldname, newname string) error { return root.Link(oldname, newname) }
	// serializeInProcess turns off the in-process path lock so tests can exercise the
	// flock protocol that protects against other processes.
	serializeInProcess = true
	// raceHook runs at the points where a concurrent creator could step in; tests use it
	// to make those races deterministic.
	raceHook = func(point, path string) {}
)

// publishMarker creates markerPath exclusively with m as content and returns it open and
// locked (flock); the caller closes it to unlock. If the marker already exists the error
// matches fs.ErrExist.
//
// The content is written to m.PV's temporary file first and hard-linked into place, so
// readers never see a half-written marker, and link(2) is exclusive even on old NFS. The
// lock is taken before the link, so it already holds when the marker becomes visible.
func publishMarker(root *os.Root, markerPath string, m Marker) (*os.File, error) {
	data, err := encodeMarker(m)
	if err != nil {
		return nil, err
	}
	tmp, f, err := createTemp(root, markerPath, m.PV)
	if err != nil {
		return nil, fmt.Errorf("create marker %q: %w", markerPath, err)
	}
	err = writeAll(f, data)
	if err == nil {
		err = linkFile(root, tmp, markerPath)
	}
	// While we still hold its lock, so that nobody takes it for a dead writer's.
	_ = root.Remove(tmp)
	if err == nil {
		return f, nil
	}
	f.Close()
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create marker %q: %w", markerPath, fs.ErrExist)
	}
	if !linkUnsupported(err) {
		return nil, fmt.Errorf("create marker %q: %w", markerPath, err)
	}

	// No hard links here: create the marker itself exclusively. Readers may then briefly
	// see it empty; they treat that as errRetry.
	f, err = root.OpenFile(markerPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create marker %q: %w", markerPath, err)
	}
	err = lockFile(f)
	if err == nil {
		err = writeAll(f, data)
	}
	if err != nil {
		f.Close()
		_ = root.Remove(markerPath)
		return nil, fmt.Errorf("create marker %q: %w", markerPath, err)
	}
	return f, nil
}

// tempName is the temporary file in which PV pv writes the marker markerPath before putting it
// in place. Its name starts with a dot like the marker's, so it can never be taken for a
// volume. It is the same for every writer of that PV (retries, another replica), so one that a
// writer killed mid-write left behind is found by name, not by reading the directory, and
// removed by the next operation of that PV (see removeDeadTemp).
func tempName(markerPath, pv string) string {
	h := fnv.New32a()
	h.Write([]byte(pv))
	return fmt.Sprintf("%s.tmp-%08x", markerPath, h.Sum32())
}

// createTemp creates pv's temporary file for markerPath exclusively and returns it locked. A
// writer of the same PV may be at work on it (in another process): createTemp waits for it. One
// whose writer died is removed.
func createTemp(root *os.Root, markerPath, pv string) (string, *os.File, error) {
	tmp := tempName(markerPath, pv)
	for attempt := 0; ; attempt++ {
		f, err := root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			if err := lockFile(f); err != nil {
				f.Close()
				_ = root.Remove(tmp)
				return "", nil, err
			}
			// Taken for a dead writer's between our create and our lock? Then it is gone.
			if sameFile(root, tmp, f) {
				return tmp, f, nil
			}
			f.Close()
		} else if !errors.Is(err, fs.ErrExist) {
			return "", nil, err
		} else if err := removeDeadTemp(root, tmp); err != nil {
			return "", nil, err
		}
		if attempt >= 100 {
			return "", nil, fmt.Errorf("temporary file %q keeps changing", tmp)
		}
	}
}

// removeDeadTemp removes the temporary file tmp if the writer that made it is gone: it waits
// for the file's lock (a live writer holds it only while it writes), and if the name still
// names that file then, nobody will put it in place any more.
func removeDeadTemp(root *os.Root, tmp string) error {
	f, err := openMarker(root, tmp, os.O_RDWR)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errRetry) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	raceHook("temp-wait", tmp)
	if err := lockFile(f); err != nil {
		return err
	}
	if !sameFile(root, tmp, f) {
		return nil
	}
	if err := root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove a dead writer's temporary file %q: %w", tmp, err)
	}
	return nil
}

// sameFile reports whether name (relative to root) still names the open file f.
func sameFile(root *os.Root, name string, f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	lfi, err := root.Lstat(name)
	return err == nil && os.SameFile(fi, lfi)
}

// replaceMarker atomically replaces the marker at markerPath, which the caller holds locked
// (lock, from lockMarker), with one holding m.
//
// The new content goes to the PV's temporary file, is synced, and is renamed over the
// marker, so readers see either the old or the new marker, never a partial one. The flock is
// on the marker's inode, so after the rename the caller's lock is on the old, now unlinked
// inode: the temporary file is locked before the rename and stays locked until
// replaceMarker returns, and whoever was waiting for the old inode's lock finds, in
// lockMarker, that the path no longer names the file it locked and starts over on the new
// marker. Every operation that removes or replaces a marker holds its lock, so the marker
// we hold cannot have been removed meanwhile (rename would silently bring it back); this is
// checked anyway just before the rename.
func replaceMarker(root *os.Root, markerPath string, lock *os.File, m Marker) error {
	data, err := encodeMarker(m)
	if err != nil {
		return err
	}
	tmp, f, err := createTemp(root, markerPath, m.PV)
	if err != nil {
		return fmt.Errorf("rewrite marker %q: %w", markerPath, err)
	}
	defer f.Close()
	err = writeAll(f, data)
	if err == nil {
		err = checkSameMarker(root, markerPath, lock)
	}
	if err == nil {
		raceHook("marker-rename", markerPath)
		err = root.Rename(tmp, markerPath)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("rewrite marker %q: %w", markerPath, err)
	}
	// Make the rename durable: a marker that reverts after a crash would let a late scrub for
	// the old claim erase the next tenant's data.
	if err := syncDir(root, filepath.Dir(markerPath)); err != nil {
		return fmt.Errorf("rewrite marker %q: sync directory: %w", markerPath, err)
	}
	return nil
}

// checkSameMarker reports an error unless markerPath still names the file open as lock.
func checkSameMarker(root *os.Root, markerPath string, lock *os.File) error {
	fi, err := lock.Stat()
	if err != nil {
		return err
	}
	lfi, err := root.Lstat(markerPath)
	if err != nil {
		return fmt.Errorf("marker changed while locked: %w", err)
	}
	if !os.SameFile(fi, lfi) {
		return errors.New("marker was replaced while locked")
	}
	return nil
}

// syncDir fsyncs the directory dir (relative to root). Filesystems that cannot sync a
// directory (EINVAL) are tolerated.
func syncDir(root *os.Root, dir string) error {
	d, err := root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

func writeAll(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		return err
	}
	// The marker is the only ownership record; it must not come back empty after a crash.
	return f.Sync()
}

// lockMarker opens the existing marker, waits for its lock (a creator holds it until the
// directory is set up) and returns it locked with its content. errRetry if it was removed
// or replaced meanwhile.
func lockMarker(root *os.Root, markerPath string) (*os.File, *Marker, error) {
	// O_RDWR: flock emulation on NFS needs a writable descriptor for an exclusive lock.
	f, err := openMarker(root, markerPath, os.O_RDWR)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errRetry
	}
	if err != nil {
		return nil, nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("lock marker %q: %w", markerPath, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	lfi, err := root.Lstat(markerPath)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !os.SameFile(fi, lfi)) {
		// The creator gave up and removed it (maybe someone created a new one).
		f.Close()
		return nil, nil, errRetry
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	m, err := decodeMarker(f, markerPath)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, m, nil
}

// lockCurrentMarker is lockMarker following the marker across replacements (Scrub renames
// a rewritten marker over the one we may be waiting for) and removals: it returns the
// current marker locked, or (nil, nil, nil) if there is none (any more).
func lockCurrentMarker(root *os.Root, markerPath string) (*os.File, *Marker, error) {
	for attempt := 0; ; attempt++ {
		f, m, err := lockMarker(root, markerPath)
		if !errors.Is(err, errRetry) {
			return f, m, err
		}
		if _, lerr := root.Lstat(markerPath); errors.Is(lerr, fs.ErrNotExist) {
			return nil, nil, nil
		}
		if attempt >= 100 {
			return nil, nil, fmt.Errorf("marker %q keeps changing: %w", markerPath, err)
		}
		if attempt > 0 {
			// Replaced markers are complete at once; an empty one (a creator without hard
			// links between create and write, or one that died there) needs time.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// openMarker opens a marker only if it is a regular file: never through a symlink, and
// never blocking on a FIFO.
func openMarker(root *os.Root, markerPath string, flag int) (*os.File, error) {
	lfi, err := root.Lstat(markerPath)
	if err != nil {
		return nil, err
	}
	if !lfi.Mode().IsRegular() {
		return nil, fmt.Errorf("marker %q is not a regular file (%v): %w", markerPath, lfi.Mode().Type(), ErrNotOwner)
	}
	f, err := root.OpenFile(markerPath, flag|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(lfi, fi) {
		f.Close()
		return nil, fmt.Errorf("marker %q was replaced while being read: %w", markerPath, errRetry)
	}
	return f, nil
}

func decodeMarker(f *os.File, markerPath string) (*Marker, error) {
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

// lockFile takes an exclusive flock, waiting for it. Filesystems without locks are
// tolerated: the in-process path lock still serializes this provisioner.
func lockFile(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = unix.Flock(int(fd), unix.LOCK_EX)
			if lerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	switch lerr {
	case unix.ENOLCK, unix.EOPNOTSUPP, unix.ENOSYS:
		return nil
	}
	return lerr
}

// pathLocks serializes operations on one volume path within this process. flock alone is
// not enough on NFS, where it is emulated with POSIX locks that never conflict within a
// process.
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
