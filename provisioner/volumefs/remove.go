package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Removing a tenant's tree.
//
// A volume holds whatever its tenant made: symbolic and hard links to anything, directories
// without permissions, trees deeper than the open-file limit, mount points. emptyDir removes
// all of it with a few open directories, in time linear in the size of the tree, and never
// changes anything outside it:
//   - every call is relative to an open directory of the tree and names one component
//     (fsys.Dir); nothing is resolved by path;
//   - entries are unlinked without being opened or followed, so a link is only ever unlinked;
//   - a directory is entered without following a symbolic link and checked to be the entry
//     that was looked at; permissions are only ever changed through such an open directory, and
//     a directory cannot be hard-linked, so it is always one of the tree's own;
//   - only the current directory is open: the walk goes back up through "..", checked against
//     the identity recorded on the way down, and starts again from the top if a directory was
//     moved meanwhile;
//   - a directory on another mount is not entered.

// maxRestarts bounds how often a walk starts again because the tree changed under it.
const maxRestarts = 100

// maxReported bounds the failures an error describes.
const maxReported = 5

// errMountPoint: another filesystem is mounted inside the tree; removal leaves it alone.
var errMountPoint = errors.New("a mount point (another filesystem is mounted there); not entered")

// level is one directory on the walk's current path.
type level struct {
	name    string // in the directory above; "" for the top
	id      fsys.ID
	pending []string // subdirectories still to empty and remove
	kept    bool     // something in it could not be removed, so it stays
}

// walk empties one tree; see emptyDir.
type walk struct {
	top      fsys.Dir // the caller's, never closed here
	topMount uint64   // the top's mount; 0 if unknown
	cur      fsys.Dir // the innermost level; top at depth 0
	levels   []*level
	restarts int
	errs     []error // the first maxReported failures
	failed   int     // all failures
}

// emptyDir removes everything inside the directory open as dir, keeping dir itself. On a
// permission error it adds u+rwx to the directory concerned (dir included) and tries again,
// for a non-root owner of the files. It goes on past an entry it cannot remove; the error
// names the first ones that failed.
func emptyDir(dir fsys.Dir) error {
	info, err := dir.Stat()
	if err != nil {
		return err
	}
	w := &walk{top: dir, cur: dir, topMount: dir.Mount(), levels: []*level{{id: info.ID}}}
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
	err := w.cur.EachName(func(name string) { w.unlink(l, name) })
	if err != nil {
		w.fail(l, "", err)
	}
}

// unlink removes the entry name of the current directory, or queues it if it is a directory.
func (w *walk) unlink(l *level, name string) {
	for attempt := 0; ; attempt++ {
		err := w.cur.Unlink(name)
		switch {
		case err == nil || errors.Is(err, syscall.ENOENT):
			return
		case errors.Is(err, syscall.EISDIR):
			l.pending = append(l.pending, name)
			return
		case denied(err) && attempt == 0 && makeWritable(w.cur):
			continue
		}
		w.fail(l, name, err)
		return
	}
}

// enter opens the subdirectory name of the current directory and scans it.
func (w *walk) enter(name string) {
	l := w.levels[len(w.levels)-1]
	info, err := w.cur.Lstat(name)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return
	case err != nil:
		w.fail(l, name, err)
		return
	case !info.IsDir():
		// Replaced since the scan: remove it as what it is now.
		w.unlink(l, name)
		return
	}
	sub, err := w.cur.OpenDir(name, info.ID)
	if err != nil {
		w.fail(l, name, err)
		return
	}
	if m := sub.Mount(); w.topMount != 0 && m != 0 && m != w.topMount {
		sub.Close()
		w.fail(l, name, errMountPoint)
		return
	}
	w.closeCur()
	w.cur = sub
	w.levels = append(w.levels, &level{name: name, id: info.ID})
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
		dir, err := w.cur.OpenDir("..", up.id)
		if err != nil {
			return false
		}
		parent = dir
	}
	w.closeCur()
	w.cur = parent
	w.levels = w.levels[:len(w.levels)-1]
	if l.kept {
		up.kept = true
		return true
	}
	for attempt := 0; ; attempt++ {
		err := w.cur.Rmdir(l.name)
		switch {
		case err == nil || errors.Is(err, syscall.ENOENT):
			return true
		case denied(err) && attempt == 0 && makeWritable(w.cur):
			continue
		case (errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)) && w.restarts < maxRestarts:
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
		w.cur.Close()
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
	w.errs = append(w.errs, &fs.PathError{Op: "remove", Path: path.Join(append(parts, name)...), Err: cause(err)})
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

// makeWritable adds u+rwx to the directory dir if it lacks any of them, and reports whether it
// did.
func makeWritable(dir fsys.Dir) bool {
	info, err := dir.Stat()
	if err != nil || info.Mode&0o700 == 0o700 {
		return false
	}
	return dir.Chmod(info.Mode|0o700) == nil
}

// denied reports a permission error.
func denied(err error) bool { return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) }

// cause is what went wrong with an entry, for a message that names the entry by its path
// inside the volume: the system error without the path it was reported with.
func cause(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}

// dirNames returns up to max names of the directory dir (max < 0: all of them).
func dirNames(dir fsys.Dir, max int) ([]string, error) {
	var names []string
	err := dir.EachName(func(name string) {
		if max < 0 || len(names) < max {
			names = append(names, name)
		}
	})
	return names, err
}

// removeVolume removes the volume directory with everything in it. Already gone: nil.
func removeVolume(v volume) error {
	d, err := openVolumeDir(v)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if err := emptyDir(d); err != nil {
		return err
	}
	if err := v.dir.Rmdir(v.base); err != nil && !errors.Is(err, syscall.ENOENT) {
		return &fs.PathError{Op: "rmdir", Path: v.path, Err: cause(err)}
	}
	return nil
}
