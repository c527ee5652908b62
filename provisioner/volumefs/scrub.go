package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Scrub removes every entry inside the volume directory path, keeping the directory itself (mode,
// owner) and its marker, and records claimUID in the marker's Recycled field. claimUID is the
// claim whose data is being scrubbed (the one the PV was released from). If the marker already
// says Recycled == claimUID, Scrub removes nothing: it returns (false, nil) if the directory is
// still empty (a retry after a crash between scrub and unbind), and ErrWrittenSince if not, so
// a late or duplicated Scrub for the old claim never erases data a newer claim has written
// since, and the volume is never reported clean with data in it. Returns (true, nil) when it
// scrubbed.
//
// The marker must exist and name pv, else ErrNotOwner and nothing is touched; a non-directory
// at path is ErrNotOwner too. A missing directory is ErrMissing: it is never recreated, so a
// recycled PV cannot silently come back as a fresh, empty directory. If any entry cannot be
// removed (a mount point, say), the error names it and the marker is left as it was, so a
// retry scrubs again.
//
// Scrub holds the in-process path lock and the marker's lock throughout, so it serializes
// with Create, Delete and Archive of the same volume, also in other processes.
func Scrub(root *os.Root, path, pv, claimUID string) (bool, error) {
	if err := validatePath(path); err != nil {
		return false, err
	}
	if pv == "" {
		return false, fmt.Errorf("scrub volume %q: PV name is empty", path)
	}
	if claimUID == "" {
		return false, fmt.Errorf("scrub volume %q: claim UID is empty", path)
	}
	unlock := lockPath(path)
	defer unlock()

	ok, err := parentsExist(root, path)
	if err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", path, err)
	}
	if !ok {
		return false, fmt.Errorf("scrub volume %q: %w", path, ErrMissing)
	}
	markerPath := MarkerName(path)
	lock, m, err := lockCurrentMarker(root, markerPath)
	if err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", path, err)
	}
	if lock != nil {
		defer lock.Close()
	}
	fi, err := root.Lstat(path)
	missing := errors.Is(err, fs.ErrNotExist)
	switch {
	case err != nil && !missing:
		return false, fmt.Errorf("scrub volume %q: %w", path, err)
	case lock != nil && m.PV != pv:
		return false, fmt.Errorf("scrub volume %q: it belongs to another PV: %w", path, ErrNotOwner)
	case missing:
		return false, fmt.Errorf("scrub volume %q: %w", path, ErrMissing)
	case lock == nil:
		return false, fmt.Errorf("scrub volume %q: it has no marker: %w", path, ErrNotOwner)
	case !fi.IsDir():
		return false, fmt.Errorf("scrub volume %q: it is not a directory (%v): %w", path, fi.Mode().Type(), ErrNotOwner)
	}
	if m.Recycled == claimUID {
		// Already scrubbed for this claim. Entries there now were written since: by a newer
		// claim (this is a late scrub) or behind Kubernetes' back. Neither may be erased, and
		// the volume may not be offered as empty either.
		if err := checkEmpty(root, path); err != nil {
			return false, fmt.Errorf("scrub volume %q: already scrubbed for claim %s, but %w", path, claimUID, err)
		}
		return false, nil
	}

	if err := scrubDir(root, path, fi); err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", path, err)
	}
	raceHook("scrub-marker", path)
	updated := *m
	updated.Recycled = claimUID
	if err := replaceMarker(root, markerPath, lock, updated); err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", path, err)
	}
	return true, nil
}

// scrubDir empties the directory at path, which Lstat saw as fi, through a root opened at
// the directory itself: symbolic links inside it can reach neither the parent nor a sibling
// volume. The directory's mode is restored if the permission fallback changed it, and its
// emptiness is made durable before the caller records the scrub in the marker.
func scrubDir(root *os.Root, path string, fi fs.FileInfo) error {
	mode := fi.Mode() & dirModeBits
	vol, dir, err := openDir(root, path)
	chmodded := false
	if errors.Is(err, fs.ErrPermission) && mode&0o700 != 0o700 {
		// Not root, and no read or search permission on the volume directory itself: add
		// u+rwx as Delete's fallback does (restored below). Its parent is not writable by
		// the tenant, so path is still the directory Lstat saw; checked once it is open.
		if cerr := root.Chmod(path, mode|0o700); cerr != nil {
			return err
		}
		chmodded = true
		vol, dir, err = openDir(root, path)
	}
	if err == nil {
		defer vol.Close()
		defer dir.Close()
		var dfi fs.FileInfo
		if dfi, err = dir.Stat(); err == nil && !os.SameFile(fi, dfi) {
			err = errors.New("directory was replaced while in use")
		}
	}
	if err != nil {
		if chmodded {
			_ = root.Chmod(path, mode)
		}
		return err
	}

	err = removeContents(vol, dir)
	if err == nil {
		var left []string
		left, err = readNames(vol)
		if err == nil && len(left) > 0 {
			// Written while we removed, presumably: a retry will try again.
			err = fmt.Errorf("%q (of %d entries) is still there after removal", left[0], len(left))
		}
	}
	// Last, as the mode may be one that keeps us from reading the directory.
	if merr := restoreMode(dir, mode); err == nil {
		err = merr
	}
	if err != nil {
		return err
	}
	if err := dir.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// checkEmpty returns an ErrWrittenSince error naming an entry if the directory at path has any.
func checkEmpty(root *os.Root, path string) error {
	vol, err := root.OpenRoot(path)
	if err != nil {
		return err
	}
	defer vol.Close()
	names, err := readNames(vol)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("it holds %q (of %d entries): %w", names[0], len(names), ErrWrittenSince)
	}
	return nil
}

// openDir opens the directory at path as a root of its own, and an open descriptor of it.
func openDir(root *os.Root, path string) (*os.Root, *os.File, error) {
	vol, err := root.OpenRoot(path)
	if err != nil {
		return nil, nil, err
	}
	dir, err := vol.Open(".")
	if err != nil {
		vol.Close()
		return nil, nil, err
	}
	return vol, dir, nil
}

// restoreMode sets the mode of dir back to mode if it differs.
func restoreMode(dir *os.File, mode fs.FileMode) error {
	fi, err := dir.Stat()
	if err != nil {
		return err
	}
	if fi.Mode()&dirModeBits == mode {
		return nil
	}
	if err := dir.Chmod(mode); err != nil {
		return fmt.Errorf("restore mode %v: %w", mode, err)
	}
	if fi, err = dir.Stat(); err != nil {
		return err
	}
	if got := fi.Mode() & dirModeBits; got != mode {
		return fmt.Errorf("mode is %v after restoring %v", got, mode)
	}
	return nil
}
