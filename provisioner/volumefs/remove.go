package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
)

// removeTree removes the volume directory at path with everything in it, never following
// symbolic links (root.RemoveAll unlinks a link instead of descending into it). On a
// permission error we add u+rwx to every directory and try once more (withWritableFallback).
func removeTree(root *os.Root, path string) error {
	return withWritableFallback(
		func() error { return root.RemoveAll(path) },
		func() { makeDirsWritable(root, path) })
}

// removeContents removes every entry of the directory vol is opened at (dir is an open
// descriptor of that directory), keeping the directory itself: Scrub's version of
// removeTree, with the same permission fallback. The fallback may add u+rwx to the
// directory itself; the caller restores its mode.
//
// Every entry is removed by vol.RemoveAll, so a symbolic link is unlinked, never followed,
// and as vol is a root at the volume, nothing outside it (not even a sibling volume) can
// be reached. Removal goes on past a failing entry; the error names the first that failed.
func removeContents(vol *os.Root, dir *os.File) error {
	return withWritableFallback(
		func() error { return removeEntries(vol) },
		func() {
			if fi, err := dir.Stat(); err == nil && fi.Mode().Perm()&0o700 != 0o700 {
				_ = dir.Chmod(fi.Mode()&dirModeBits | 0o700)
			}
			makeChildDirsWritable(vol)
		})
}

// dirModeBits are the bits of a directory's mode that Create sets and Scrub keeps.
const dirModeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// withWritableFallback runs remove; if that fails for lack of permission, it runs
// makeWritable and remove once more.
//
// Tenants can leave directories without write or search permission (0o555, 0o000). Root
// does not care; a provisioner running as the (non-root) owner of the files does.
func withWritableFallback(remove func() error, makeWritable func()) error {
	err := remove()
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	makeWritable()
	return remove()
}

func removeEntries(vol *os.Root) error {
	names, err := readNames(vol)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if err := vol.RemoveAll(name); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // it names the entry we name below, or a path inside it
			}
			errs = append(errs, fmt.Errorf("remove %q: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return entriesError(errs)
	}
	return nil
}

// entriesError is the failures of removeEntries: its message is the first one (and how many
// more), errors.Is looks at all of them.
type entriesError []error

func (e entriesError) Error() string {
	if len(e) == 1 {
		return e[0].Error()
	}
	return fmt.Sprintf("%v (and %d more entries)", e[0], len(e)-1)
}

func (e entriesError) Unwrap() []error { return e }

// readNames returns the names in the directory vol is opened at, sorted.
func readNames(vol *os.Root) ([]string, error) {
	f, err := vol.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// makeDirsWritable adds u+rwx to the directory at path and every directory below it, best
// effort. The walk below the volume goes through a root opened at the volume, so even if a
// tenant swaps a directory for a symlink behind our Lstat, the chmod cannot leave the
// tenant's own volume.
func makeDirsWritable(root *os.Root, path string) {
	fi, err := root.Lstat(path)
	if err != nil || !fi.IsDir() {
		return
	}
	if fi.Mode().Perm()&0o700 != 0o700 {
		// The volume directory itself sits in a parent the tenant cannot write, so it
		// cannot be swapped for a link between Lstat and Chmod.
		if err := root.Chmod(path, fi.Mode().Perm()|0o700); err != nil {
			return
		}
	}
	vol, err := root.OpenRoot(path)
	if err != nil {
		return
	}
	defer vol.Close()
	if vfi, err := vol.Stat("."); err != nil || !os.SameFile(fi, vfi) {
		return
	}
	makeChildDirsWritable(vol)
}

// makeChildDirsWritable handles the subdirectories of dir, recursing with one open root per
// level so every operation names a single component.
func makeChildDirsWritable(dir *os.Root) {
	f, err := dir.Open(".")
	if err != nil {
		return
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, name := range names {
		fi, err := dir.Lstat(name)
		if err != nil || !fi.IsDir() { // symlinks are not directories here: skipped
			continue
		}
		if fi.Mode().Perm()&0o700 != 0o700 {
			if err := dir.Chmod(name, fi.Mode().Perm()|0o700); err != nil {
				continue
			}
		}
		sub, err := dir.OpenRoot(name)
		if err != nil {
			continue
		}
		// Descend only into the directory Lstat saw, not whatever a racing tenant put there.
		if sfi, err := sub.Stat("."); err == nil && os.SameFile(fi, sfi) {
			makeChildDirsWritable(sub)
		}
		sub.Close()
	}
}
