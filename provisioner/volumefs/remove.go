package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Removing a tenant's tree.
//
// A volume holds whatever its tenant made: symbolic and hard links to anything, directories
// without permissions, trees deeper than the open-file limit, mount points. emptyDir removes
// all of it with a few descriptors, in time linear in the size of the tree, and never changes
// anything outside it:
//   - every call is relative to a descriptor of a directory of the tree and names one
//     component; nothing is resolved by path;
//   - entries are unlinked without being opened or followed, so a link is only ever unlinked;
//   - a directory is entered with openat(O_DIRECTORY|O_NOFOLLOW) and checked to be the entry
//     that was looked at; permissions are only ever changed through such a descriptor, and a
//     directory cannot be hard-linked, so it is always one of the tree's own;
//   - only the current directory is open: the walk goes back up through "..", checked against
//     the device and inode recorded on the way down, and starts again from the top if a
//     directory was moved meanwhile;
//   - a directory on another mount is not entered.

// maxRestarts bounds how often a walk starts again because the tree changed under it.
const maxRestarts = 100

// maxReported bounds the failures an error describes.
const maxReported = 5

var (
	// errChanged: an entry is no longer what was looked at a moment ago.
	errChanged = errors.New("changed while being removed")
	// errMountPoint: another filesystem is mounted inside the tree; removal leaves it alone.
	errMountPoint = errors.New("a mount point (another filesystem is mounted there); not entered")
)

type dirID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) dirID { return dirID{uint64(st.Dev), st.Ino} }

// level is one directory on the walk's current path.
type level struct {
	name    string // in the directory above; "" for the top
	id      dirID
	pending []string // subdirectories still to empty and remove
	kept    bool     // something in it could not be removed, so it stays
}

// walk empties one tree; see emptyDir.
type walk struct {
	top      int    // the caller's descriptor of the top directory, never closed here
	topMount uint64 // mount ID of the top; 0 if the kernel does not tell
	cur      int    // descriptor of the innermost level; top at depth 0
	levels   []*level
	restarts int
	errs     []error // the first maxReported failures
	failed   int     // all failures
}

// emptyDir removes everything inside the directory open as dir, keeping dir itself. On a
// permission error it adds u+rwx to the directory concerned (dir included) and tries again,
// for a non-root owner of the files. It goes on past an entry it cannot remove; the error
// names the first ones that failed.
func emptyDir(dir *os.File) error {
	defer runtime.KeepAlive(dir)
	fd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	w := &walk{top: fd, cur: fd, topMount: mountID(fd), levels: []*level{{id: idOf(&st)}}}
	defer w.closeCur()
	for {
		w.scan()
		w.run()
		if w.failed > 0 || w.restarts >= maxRestarts {
			break
		}
		// Done once a fresh look at the top finds nothing new.
		names, err := dirNames(w.top, 1)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			break
		}
		w.restarts++
	}
	if w.failed == 0 && w.restarts >= maxRestarts {
		return fmt.Errorf("the tree keeps changing while it is removed (%d restarts)", w.restarts)
	}
	return w.err()
}

// run walks until every level is done.
func (w *walk) run() {
	for {
		l := w.levels[len(w.levels)-1]
		if n := len(l.pending); n > 0 {
			name := l.pending[n-1]
			l.pending = l.pending[:n-1]
			w.enter(name)
			continue
		}
		if len(w.levels) == 1 {
			return
		}
		if !w.leave() {
			if w.restart() {
				continue
			}
			return
		}
	}
}

// scan reads the current directory: it unlinks what is not a directory and queues the rest.
func (w *walk) scan() {
	l := w.levels[len(w.levels)-1]
	err := eachName(w.cur, func(name string) { w.unlink(l, name) })
	if err != nil {
		w.fail(l, "", err)
	}
}

// unlink removes the entry name of the current directory, or queues it if it is a directory.
func (w *walk) unlink(l *level, name string) {
	for attempt := 0; ; attempt++ {
		err := unlinkat(w.cur, name, 0)
		switch {
		case err == nil || err == unix.ENOENT:
			return
		case err == unix.EISDIR:
			l.pending = append(l.pending, name)
			return
		case (err == unix.EACCES || err == unix.EPERM) && attempt == 0 && makeWritable(w.cur):
			continue
		}
		w.fail(l, name, err)
		return
	}
}

// enter opens the subdirectory name of the current directory and scans it.
func (w *walk) enter(name string) {
	l := w.levels[len(w.levels)-1]
	var st unix.Stat_t
	err := fstatat(w.cur, name, &st)
	switch {
	case err == unix.ENOENT:
		return
	case err != nil:
		w.fail(l, name, err)
		return
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		// Replaced since the scan: remove it as what it is now.
		w.unlink(l, name)
		return
	}
	fd, err := openDirAt(w.cur, name, &st)
	if err != nil {
		w.fail(l, name, err)
		return
	}
	if m := mountID(fd); w.topMount != 0 && m != 0 && m != w.topMount {
		unix.Close(fd)
		w.fail(l, name, errMountPoint)
		return
	}
	w.closeCur()
	w.cur = fd
	w.levels = append(w.levels, &level{name: name, id: idOf(&st)})
	w.scan()
}

// leave goes back up one level and removes the directory it was in. It reports false if the
// directory above is not the one recorded on the way down (something moved it).
func (w *walk) leave() bool {
	l := w.levels[len(w.levels)-1]
	up := w.levels[len(w.levels)-2]
	raceHook("remove-leave", l.name)
	parent := w.top
	if len(w.levels) > 2 {
		fd, err := openat(w.cur, "..", unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return false
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || idOf(&st) != up.id {
			unix.Close(fd)
			return false
		}
		parent = fd
	}
	w.closeCur()
	w.cur = parent
	w.levels = w.levels[:len(w.levels)-1]
	if l.kept {
		up.kept = true
		return true
	}
	for attempt := 0; ; attempt++ {
		err := unlinkat(w.cur, l.name, unix.AT_REMOVEDIR)
		switch {
		case err == nil || err == unix.ENOENT:
			return true
		case (err == unix.EACCES || err == unix.EPERM) && attempt == 0 && makeWritable(w.cur):
			continue
		case (err == unix.ENOTEMPTY || err == unix.EEXIST) && w.restarts < maxRestarts:
			// Something was written into it meanwhile: empty it again.
			w.restarts++
			up.pending = append(up.pending, l.name)
			return true
		}
		w.fail(up, l.name, err)
		return true
	}
}

// restart starts the walk again from the top, forgetting what it had queued; false once the
// tree has changed too often.
func (w *walk) restart() bool {
	w.closeCur()
	w.cur = w.top
	w.levels = w.levels[:1]
	w.levels[0].pending, w.levels[0].kept = nil, false
	w.errs, w.failed = nil, 0
	if w.restarts++; w.restarts >= maxRestarts {
		return false
	}
	w.scan()
	return true
}

func (w *walk) closeCur() {
	if w.cur != w.top {
		unix.Close(w.cur)
		w.cur = w.top
	}
}

// fail records that name in level l could not be removed; l and every level above it stay.
func (w *walk) fail(l *level, name string, err error) {
	l.kept = true
	w.failed++
	if len(w.errs) >= maxReported {
		return
	}
	// The path inside the tree, for the message: built only for the few reported failures.
	var parts []string
	for _, x := range w.levels[1:] {
		parts = append(parts, x.name)
		if x == l {
			break
		}
	}
	w.errs = append(w.errs, &fs.PathError{Op: "remove", Path: path.Join(append(parts, name)...), Err: err})
}

func (w *walk) err() error {
	if w.failed == 0 {
		return nil
	}
	return entriesError{errs: w.errs, total: w.failed}
}

// entriesError describes the entries a removal left behind: its message names the first one
// (and how many more), errors.Is looks at every one it holds.
type entriesError struct {
	errs  []error
	total int
}

func (e entriesError) Error() string {
	if e.total == 1 {
		return e.errs[0].Error()
	}
	return fmt.Sprintf("%v (and %d more entries)", e.errs[0], e.total-1)
}

func (e entriesError) Unwrap() []error { return e.errs }

// openDirAt opens the subdirectory name of dirfd, which fstatat saw as want, for reading,
// without following a symbolic link. Without read or search permission on it (a non-root
// owner), it first adds u+rwx through a descriptor of the directory itself.
func openDirAt(dirfd int, name string, want *unix.Stat_t) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW
	fd, err := openat(dirfd, name, flags)
	if err == unix.EACCES {
		if err := chmodDirAt(dirfd, name, want, 0o700); err != nil {
			return -1, err
		}
		fd, err = openat(dirfd, name, flags)
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if idOf(&st) != idOf(want) {
		unix.Close(fd)
		return -1, errChanged
	}
	return fd, nil
}

// chmodDirAt adds the permission bits add to the subdirectory name of dirfd, which must still
// be the directory fstatat saw as want. It works through an O_PATH descriptor, which needs no
// permission on the directory and cannot be anything but that directory.
func chmodDirAt(dirfd int, name string, want *unix.Stat_t, add uint32) error {
	fd, err := openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if idOf(&st) != idOf(want) {
		return errChanged
	}
	return chmodPathFD(fd, st.Mode&0o7777|add)
}

// chmodPathFD changes the mode of the file an O_PATH descriptor refers to (fchmod refuses
// such descriptors): fchmodat2 with AT_EMPTY_PATH (Linux 6.6), else the descriptor's
// /proc/self/fd link, which names that very file.
func chmodPathFD(fd int, mode uint32) error {
	empty, _ := unix.BytePtrFromString("")
	for {
		_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(fd), uintptr(unsafe.Pointer(empty)), uintptr(mode), unix.AT_EMPTY_PATH, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.ENOSYS, unix.EINVAL, unix.EOPNOTSUPP:
			return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
		}
		return e
	}
}

// makeWritable adds u+rwx to the directory open as fd if it lacks any of them, and reports
// whether it did.
func makeWritable(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&0o700 == 0o700 {
		return false
	}
	return unix.Fchmod(fd, st.Mode&0o7777|0o700) == nil
}

// mountID is the ID of the mount fd lies on, or 0 if the kernel does not say.
func mountID(fd int) uint64 {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil ||
		stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0
	}
	return stx.Mnt_id
}

// eachName calls f with the name of every entry of the directory open as fd, from the start,
// reading a batch at a time (f may remove entries).
func eachName(fd int, f func(string)) error {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return err
	}
	buf := make([]byte, 16<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			f(name)
		}
	}
}

// dirNames returns up to max names of the directory open as fd (max < 0: all of them).
func dirNames(fd int, max int) ([]string, error) {
	var names []string
	err := eachName(fd, func(name string) {
		if max < 0 || len(names) < max {
			names = append(names, name)
		}
	})
	return names, err
}

func openat(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func unlinkat(dirfd int, name string, flags int) error {
	for {
		if err := unix.Unlinkat(dirfd, name, flags); err != unix.EINTR {
			return err
		}
	}
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		if err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW); err != unix.EINTR {
			return err
		}
	}
}

// openVolume opens the volume directory at path (relative to root) and the directory that
// holds it. The volume is opened as an entry of that directory, never through a symbolic
// link. A missing volume gives an fs.ErrNotExist error; anything but a directory, ErrNotOwner.
func openVolume(root *os.Root, p string) (parent, vol *os.File, err error) {
	parent, err = root.OpenFile(dirOf(p), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			parent.Close()
		}
	}()
	pfd, base := int(parent.Fd()), path.Base(p)
	var st unix.Stat_t
	if err := fstatat(pfd, base, &st); err != nil {
		return nil, nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, nil, fmt.Errorf("volume %q is not a directory: %w", p, ErrNotOwner)
	}
	fd, err := openDirAt(pfd, base, &st)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return parent, os.NewFile(uintptr(fd), p), nil
}

// removeVolume removes the volume directory at path with everything in it. Already gone: nil.
func removeVolume(root *os.Root, p string) error {
	parent, vol, err := openVolume(root, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer parent.Close()
	defer vol.Close()
	if err := emptyDir(vol); err != nil {
		return err
	}
	if err := unlinkat(int(parent.Fd()), path.Base(p), unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return &fs.PathError{Op: "rmdir", Path: p, Err: err}
	}
	return nil
}

func dirOf(p string) string { return path.Dir(p) }
