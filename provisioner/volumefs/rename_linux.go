package volumefs

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameat2NoReplace renames oldname to newname inside the directory dir without ever
// replacing newname. A hook so tests can simulate filesystems without RENAME_NOREPLACE.
var renameat2NoReplace = func(dir *os.File, oldname, newname string) error {
	rc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		rerr = unix.Renameat2(int(fd), oldname, int(fd), newname, unix.RENAME_NOREPLACE)
	}); err != nil {
		return err
	}
	return rerr
}
