package volumefs

import (
	"errors"
	"io/fs"
	"os"
)

// removeTree removes the volume directory at path with everything in it, never following
// symbolic links (root.RemoveAll unlinks a link instead of descending into it).
//
// Tenants can leave directories without write or search permission (0o555, 0o000). Root
// does not care; a provisioner running as the (non-root) owner of the files does, so on a
// permission error we add u+rwx to every directory and try once more.
func removeTree(root *os.Root, path string) error {
	err := root.RemoveAll(path)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	makeDirsWritable(root, path)
	return root.RemoveAll(path)
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
