package volumefs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"

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
// The content is written to a unique temporary file first and hard-linked into place, so
// readers never see a half-written marker, and link(2) is exclusive even on old NFS. The
// lock is taken before the link, so it already holds when the marker becomes visible.
func publishMarker(root *os.Root, markerPath string, m Marker) (*os.File, error) {
	data, err := encodeMarker(m)
	if err != nil {
		return nil, err
	}
	var tmp string
	var f *os.File
	for range 10 {
		tmp = fmt.Sprintf("%s.tmp-%08x", markerPath, rand.Uint32())
		f, err = root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create marker %q: %w", markerPath, err)
	}
	err = lockFile(f)
	if err == nil {
		err = writeAll(f, data)
	}
	if err == nil {
		err = linkFile(root, tmp, markerPath)
	}
	// Best effort: a leftover temporary file only costs a directory entry (its name
	// starts with a dot, so it can never be taken for a volume).
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
