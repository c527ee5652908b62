package quota

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// LockName is the file in a volume root whose flock serializes project ID allocations there.
const LockName = ".dirpv-quota.lock"

// Allocate locks the allocation of project IDs under the root directory rootFd and returns the
// smallest free ID. Before calling unlock, the caller sets that project on the new, empty volume
// directory (SetProject) and its limit (SetLimit): then the directory's inode counts against the
// ID and the next allocation sees it in use. If that fails, unlock all the same: Assign, retried,
// keeps the ID the directory got.
// unlock releases the lock (a second call does nothing); it is held by an open descriptor, so a
// process that dies releases it too.
func Allocate(rootFd int) (id uint32, unlock func(), err error) {
	unlock, err = lock(rootFd)
	if err != nil {
		return 0, nil, err
	}
	if id, err = nextFree(rootFd); err != nil {
		unlock()
		return 0, nil, err
	}
	return id, unlock, nil
}

// Assign gives the volume directory dirFd, in the directory parentFd, a project of its own
// limited to bytes, and returns its ID. lockFd is the directory whose lock file serializes
// allocations: the same one for every volume on the filesystem. A directory that has a project
// ID from FirstID up that is not its parent's (which it would have inherited) keeps it, and gets
// the limit: Assign is retried after a failure or a crash and must not hand out a second ID.
// A limit that would take the sum of the filesystem's limits past its size times overcommit is
// refused (ErrNoRoom), so is a larger one for a directory that has its own ID.
func Assign(lockFd, parentFd, dirFd int, bytes uint64, overcommit float64) (uint32, error) {
	unlock, err := lock(lockFd)
	if err != nil {
		return 0, err
	}
	defer unlock()
	id, err := ProjectID(dirFd)
	if err != nil {
		return 0, err
	}
	parentID, err := ProjectID(parentFd)
	if err != nil {
		return 0, err
	}
	own := id >= FirstID && id != parentID
	except := uint64(0)
	if own {
		except = uint64(id)
	}
	if err := admit(KindProject, parentFd, except, bytes, overcommit); err != nil {
		return 0, err
	}
	if !own {
		if id, err = nextFree(dirFd); err != nil {
			return 0, err
		}
	}
	if err := SetProject(dirFd, id); err != nil { // a no-op when retried
		return 0, err
	}
	if err := SetLimit(dirFd, id, bytes); err != nil {
		return 0, err
	}
	return id, nil
}

// lock takes the exclusive flock on LockName in rootFd, creating the file if need be, and returns
// the function that releases it.
func lock(rootFd int) (unlock func(), err error) {
	// O_NOFOLLOW: a symbolic link there is an error, not a way to create or lock another file;
	// O_NONBLOCK: a FIFO put there does not hang the open.
	const flags = unix.O_RDONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	var fd int
	for {
		if fd, err = unix.Openat(rootFd, LockName, flags, 0o600); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, wrap("open the lock file "+LockName+" in", rootFd, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			return nil, fmt.Errorf("lock %s in %s: not a regular file: remove it", LockName, nameOf(rootFd))
		}
		return nil, wrap("stat the lock file "+LockName+" in", rootFd, err)
	}
	for {
		if err = unix.Flock(fd, unix.LOCK_EX); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, wrap("lock "+LockName+" in", rootFd, err)
	}
	var once sync.Once // a second call must not close a descriptor that has been reused
	return func() { once.Do(func() { unix.Close(fd) }) }, nil
}
