package quota

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/fsys"
)

// Dirs holds volume directories, opened through fsys on a local filesystem, to a size: it is what
// volumefs asks to make a volume that can be limited, and to set and clear its limit. Each call
// probes the filesystem it acts on, so volumes of one root may lie on different filesystems.
type Dirs struct{}

// descriptors returns the descriptors of local directories.
func descriptors(dirs ...fsys.Dir) ([]int, error) {
	fds := make([]int, len(dirs))
	for i, d := range dirs {
		fd, ok := fsys.Descriptor(d)
		if !ok {
			return nil, fmt.Errorf("%s: sizes can only be enforced on a local filesystem", d.Name())
		}
		fds[i] = fd
	}
	return fds, nil
}

// Mkdir makes the volume directory name in dir: a subvolume on btrfs, where each volume needs
// one, or a directory with mode 0700 on XFS and ext4. A filesystem that cannot enforce sizes is
// refused (ErrNotEnforced, saying what it would need) before anything is made. An existing entry
// gives an error matching fs.ErrExist.
func (Dirs) Mkdir(dir fsys.Dir, name string) error {
	fds, err := descriptors(dir)
	if err != nil {
		return err
	}
	kind, err := Probe(fds[0])
	if err != nil {
		return err
	}
	if kind == KindBtrfs {
		return CreateSubvolume(fds[0], name)
	}
	return dir.Mkdir(name, 0o700)
}

// Set holds vol, a volume directory in dir that Mkdir made, to bytes, and names what holds it
// ("project 1073741825", "btrfs subvolume 258"). lockDir is the directory whose lock file
// serializes the allocation of project IDs and the admission of limits (see Assign): a limit
// that would take the limits on the filesystem past its size times overcommit is refused
// (ErrNoRoom). Repeated, it changes the limit only.
func (Dirs) Set(lockDir, dir, vol fsys.Dir, bytes uint64, overcommit float64) (string, error) {
	fds, err := descriptors(lockDir, dir, vol)
	if err != nil {
		return "", err
	}
	kind, err := Probe(fds[2])
	if err != nil {
		return "", err
	}
	if kind == KindProject {
		id, err := Assign(fds[0], fds[1], fds[2], bytes, overcommit)
		return fmt.Sprintf("project %d", id), err
	}
	unlock, err := lock(fds[0])
	if err != nil {
		return "", err
	}
	defer unlock()
	id, err := SubvolumeID(fds[2])
	if err != nil {
		return "", err
	}
	if err := admit(KindBtrfs, fds[1], id, bytes, overcommit); err != nil {
		return "", err
	}
	if err := SetQgroupLimit(fds[2], bytes); err != nil {
		return "", err
	}
	return fmt.Sprintf("btrfs subvolume %d", id), nil
}

// Clear removes the limit of vol, a volume directory in dir, before it is removed or handed over:
// its project ID is then free once nothing is charged to it, and a deleted subvolume's qgroup,
// which btrfs may keep, holds no limit. A directory without a project or subvolume of its own is
// left as it is, and so is one on a filesystem whose quotas have been turned off since: nothing
// there is enforced, and its removal must not wait for quotas to come back.
func (Dirs) Clear(dir, vol fsys.Dir) error {
	fds, err := descriptors(dir, vol)
	if err != nil {
		return err
	}
	kind, err := Probe(fds[1])
	switch {
	case errors.Is(err, ErrNotEnforced):
		return nil
	case err != nil:
		return err
	case kind == KindBtrfs:
		var st unix.Stat_t
		if err := unix.Fstat(fds[1], &st); err != nil {
			return wrap("stat", fds[1], err)
		}
		if st.Ino != btrfsFirstFreeObjectid {
			return nil // not a subvolume
		}
		return SetQgroupLimit(fds[1], 0)
	}
	id, err := ProjectID(fds[1])
	if err != nil {
		return err
	}
	parentID, err := ProjectID(fds[0])
	if err != nil {
		return err
	}
	if id < FirstID || id == parentID {
		return nil // inherited, not its own
	}
	return Release(fds[1], id)
}

// Usage reports what vol, a volume directory in dir that Mkdir made and Set limited, holds and
// its limit, from the filesystem's own counters (no walk of its tree): its subvolume's qgroup on
// btrfs (as of the last transaction commit, which btrfs makes every 30 s by default), its
// project's quota on XFS and ext4. A directory that has no subvolume or project of its own (one
// made without a limit, which counts towards whatever holds its parent) is an error: what its
// parent's counters say is not its own. It needs CAP_SYS_ADMIN.
func (Dirs) Usage(dir, vol fsys.Dir) (used, limit uint64, err error) {
	u, err := usageOf(dir, vol)
	return u.Used, u.Limit, err
}

func usageOf(dir, vol fsys.Dir) (Usage, error) {
	fds, err := descriptors(dir, vol)
	if err != nil {
		return Usage{}, err
	}
	kind, err := Probe(fds[1])
	if err != nil {
		return Usage{}, err
	}
	if kind == KindBtrfs {
		if _, err := subvolumeRoot("get the qgroup usage of", fds[1]); err != nil {
			return Usage{}, err
		}
		return QgroupUsage(fds[1])
	}
	id, err := ProjectID(fds[1])
	if err != nil {
		return Usage{}, err
	}
	parentID, err := ProjectID(fds[0])
	if err != nil {
		return Usage{}, err
	}
	if id < FirstID || id == parentID {
		return Usage{}, fmt.Errorf("get the usage of %s: its project ID %d is inherited, not its own: no quota counts it alone", nameOf(fds[1]), id)
	}
	return ProjectUsage(fds[1], id)
}
