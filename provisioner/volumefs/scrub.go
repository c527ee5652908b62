package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"dirpv.io/dirpv/provisioner/fsys"
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
// Scrub refuses a volume inside another volume (ErrNested) and a released one (ErrReleased).
//
// Scrub holds the in-process path lock and the marker's lock throughout, so it serializes
// with Create, Delete and Archive of the same volume, also in other processes.
func Scrub(root fsys.Dir, p string, o Owner, claimUID string) (bool, error) {
	if err := validatePath(p); err != nil {
		return false, err
	}
	if o.PV == "" {
		return false, fmt.Errorf("scrub volume %q: PV name is empty", p)
	}
	if claimUID == "" {
		return false, fmt.Errorf("scrub volume %q: claim UID is empty", p)
	}
	unlock := lockPath(p)
	defer unlock()

	v, ok, err := openVolumeParent(root, p, false)
	if err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	}
	if !ok {
		return false, fmt.Errorf("scrub volume %q: %w", p, ErrMissing)
	}
	defer v.dir.Close()
	lock, m, err := lockCurrentMarker(v.marker())
	if err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	}
	if lock != nil {
		defer lock.Close()
		if err := m.allows(o, "scrub", p); err != nil {
			return false, err
		}
	}
	info, err := v.dir.Lstat(v.base)
	missing := errors.Is(err, fs.ErrNotExist)
	switch {
	case err != nil && !missing:
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	case missing:
		return false, fmt.Errorf("scrub volume %q: %w", p, ErrMissing)
	case lock == nil:
		return false, fmt.Errorf("scrub volume %q: it has no marker: %w", p, ErrNotOwner)
	case !info.IsDir():
		return false, fmt.Errorf("scrub volume %q: it is not a directory (%v): %w", p, info.Type, ErrNotOwner)
	}
	vol, err := openVolumeDir(v)
	if err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	}
	defer vol.Close()

	if m.Recycled == claimUID {
		// Already scrubbed for this claim. Entries there now were written since: by a newer
		// claim (this is a late scrub) or behind Kubernetes' back. Neither may be erased, and
		// the volume may not be offered as empty either.
		if err := checkEmpty(vol); err != nil {
			return false, fmt.Errorf("scrub volume %q: already scrubbed for claim %s, but %w", p, claimUID, err)
		}
		return false, nil
	}

	if err := scrubDir(vol, info.Mode); err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	}
	raceHook("scrub-marker", p)
	updated := *m
	updated.Recycled = claimUID
	if err := replaceMarker(v.marker(), lock, updated); err != nil {
		return false, fmt.Errorf("scrub volume %q: %w", p, err)
	}
	return true, nil
}

// scrubDir empties the volume directory open as vol, whose mode was mode: nothing outside it
// can be reached (see emptyDir). Its mode is restored if the permission fallback changed it,
// and its emptiness is made durable before the caller records the scrub in the marker.
func scrubDir(vol fsys.Dir, mode fs.FileMode) error {
	err := emptyDir(vol)
	if err == nil {
		var left []string
		left, err = dirNames(vol, -1)
		if err == nil && len(left) > 0 {
			// Written while we removed, presumably: a retry will try again.
			slices.Sort(left)
			err = fmt.Errorf("%q (of %d entries) is still there after removal", left[0], len(left))
		}
	}
	if merr := restoreMode(vol, mode); err == nil {
		err = merr
	}
	if err != nil {
		return err
	}
	if err := vol.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// checkEmpty returns an ErrWrittenSince error naming an entry if the directory open as dir
// has any.
func checkEmpty(dir fsys.Dir) error {
	names, err := dirNames(dir, -1)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		slices.Sort(names)
		return fmt.Errorf("it holds %q (of %d entries): %w", names[0], len(names), ErrWrittenSince)
	}
	return nil
}

// restoreMode sets the mode of dir back to mode if it differs.
func restoreMode(dir fsys.Dir, mode fs.FileMode) error {
	info, err := dir.Stat()
	if err != nil {
		return err
	}
	if info.Mode == mode {
		return nil
	}
	if err := dir.Chmod(mode); err != nil {
		return fmt.Errorf("restore mode %v: %w", mode, err)
	}
	if info, err = dir.Stat(); err != nil {
		return err
	}
	if got := info.Mode; got != mode {
		return fmt.Errorf("mode is %v after restoring %v", got, mode)
	}
	return nil
}
