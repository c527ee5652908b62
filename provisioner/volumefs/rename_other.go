//go:build !linux

package volumefs

import (
	"os"
	"syscall"
)

// renameat2NoReplace: without renameat2, Archive falls back to check-then-rename.
var renameat2NoReplace = func(dir *os.File, oldname, newname string) error {
	return syscall.ENOSYS
}
