package volumefs

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"dirpv.io/dirpv/provisioner/fsys"
)

// ErrNotAdoptable: the directory another provisioner made cannot become the PV's volume (it is
// missing, not a plain directory, or holds a volume).
var ErrNotAdoptable = errors.New("directory cannot be adopted")

// maxAdoptDepth bounds how deep Adopt looks for volumes inside the directory; a deeper tree is
// refused, as what lies below was not checked.
const maxAdoptDepth = 64

// Adopt makes the existing directory at p, which another provisioner made for the PV m.PV, a
// volume of that PV: it writes m as its marker, so that from then on every operation treats it
// as one dirpv made. The directory must really be there, reached without a symbolic link, be
// a directory itself (not a link), lie inside no volume (ErrNested), and hold none: reclaiming
// it would otherwise remove another PV's data. A marker already there is accepted only if it
// is m.PV's (an earlier Adopt or a retry), and not released; another PV's is ErrNotOwner.
//
// With check set Adopt looks at all of this and writes nothing.
func Adopt(root fsys.Dir, p string, m Marker, check bool) error {
	if err := validatePath(p); err != nil {
		return err
	}
	if m.PV == "" {
		return fmt.Errorf("adopt volume %q: PV name is empty", p)
	}
	if m.Released != "" || m.Recycled != "" {
		return fmt.Errorf("adopt volume %q: an adopted volume is neither released nor recycled", p)
	}
	unlock := lockPath(p)
	defer unlock()
	v, ok, err := openVolumeParent(root, p, false)
	if err != nil {
		return fmt.Errorf("adopt volume %q: %w", p, err)
	}
	if !ok {
		return fmt.Errorf("adopt volume %q: a parent is missing or not a directory: %w", p, ErrNotAdoptable)
	}
	defer v.dir.Close()
	me := v.marker()
	if old, err := readMarker(me); err != nil {
		return fmt.Errorf("adopt volume %q: %w", p, err)
	} else if old != nil {
		if err := old.allows(Owner{PV: m.PV}, "adopt", p); err != nil {
			return err
		}
		return nil // adopted before
	}
	info, err := v.dir.Lstat(v.base)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("adopt volume %q: %w (%w)", p, ErrMissing, ErrNotAdoptable)
	case err != nil:
		return fmt.Errorf("adopt volume %q: %w", p, err)
	case !info.IsDir():
		return fmt.Errorf("adopt volume %q: it is not a directory (%v): %w", p, info.Type, ErrNotAdoptable)
	}
	d, err := openVolumeDir(v)
	if err != nil {
		return fmt.Errorf("adopt volume %q: %w", p, err)
	}
	err = holdsNoVolume(d, p, 0)
	d.Close()
	if err != nil {
		return fmt.Errorf("adopt volume %q: %w", p, err)
	}
	if check {
		return nil
	}
	lock, err := publishMarker(me, m)
	if errors.Is(err, fs.ErrExist) {
		// Someone adopted it meanwhile: accept it only as above.
		old, rerr := readMarker(me)
		if rerr != nil || old == nil {
			return fmt.Errorf("adopt volume %q: marker appeared: %w", p, err)
		}
		return old.allows(Owner{PV: m.PV}, "adopt", p)
	}
	if err != nil {
		return fmt.Errorf("adopt volume %q: %w", p, err)
	}
	lock.Close()
	// The directory must still be the one checked: a swap between the checks and the marker
	// would otherwise hand the PV a directory nobody looked at.
	if now, err := v.dir.Lstat(v.base); err != nil || now.ID != info.ID || !now.IsDir() {
		_ = v.dir.Unlink(me.name)
		return fmt.Errorf("adopt volume %q: the directory changed while it was adopted: %w", p, ErrNotAdoptable)
	}
	return v.dir.Sync()
}

// holdsNoVolume refuses a tree, open as dir at p, that holds a volume: an entry with the marker
// name of a sibling directory. Links are never followed; the walk keeps one directory open per
// level.
func holdsNoVolume(dir fsys.Dir, p string, depth int) error {
	if depth >= maxAdoptDepth {
		return fmt.Errorf("%q is more than %d directories deep; what lies below was not checked for volumes: %w", p, maxAdoptDepth, ErrNotAdoptable)
	}
	var names []string
	if err := dir.EachName(func(name string) { names = append(names, name) }); err != nil {
		return err
	}
	for _, name := range names {
		base, ok := strings.CutSuffix(strings.TrimPrefix(name, "."), markerSuffix)
		if ok && strings.HasPrefix(name, ".") && base != "" {
			if info, err := dir.Lstat(base); err == nil && info.IsDir() {
				return fmt.Errorf("it holds volume %q: %w", p+"/"+base, ErrNotAdoptable)
			}
		}
	}
	mount := dir.Mount()
	for _, name := range names {
		info, err := dir.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !info.IsDir() {
			continue
		}
		sub, err := dir.OpenDir(name, info.ID)
		if err != nil {
			return fmt.Errorf("%q: %w", p+"/"+name, err)
		}
		if mount != 0 && sub.Mount() != mount {
			sub.Close()
			return fmt.Errorf("%q is a mount point: %w", p+"/"+name, ErrNotAdoptable)
		}
		err = holdsNoVolume(sub, p+"/"+name, depth+1)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
