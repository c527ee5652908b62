package volumefs

import (
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
	noClaim := func() error {
		if claimUID == "" {
			return fmt.Errorf("scrub volume %q: claim UID is empty", p)
		}
		return nil
	}
	scrubbed := false
	err := withVolume(root, p, o, volumeOp{name: "scrub", check: noClaim}, func(v opened) error {
		if v.m.Recycled == claimUID {
			// Already scrubbed for this claim. Entries there now were written since: by a newer
			// claim (this is a late scrub) or behind Kubernetes' back. Neither may be erased, and
			// the volume may not be offered as empty either.
			if err := checkEmpty(v.vol); err != nil {
				return fmt.Errorf("already scrubbed for claim %s, but %w", claimUID, err)
			}
			return nil
		}

		if err := scrubDir(v.vol, v.info.Mode); err != nil {
			return err
		}
		raceHook("scrub-marker", p)
		updated := *v.m
		updated.Recycled = claimUID
		if err := replaceMarker(v.marker(), v.lock, updated); err != nil {
			return err
		}
		scrubbed = true
		return nil
	})
	return scrubbed, err
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
