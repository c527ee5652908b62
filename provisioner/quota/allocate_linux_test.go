package quota

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"dirpv.io/dirpv/provisioner/quota/quotatest"
)

// tryLock reports whether the lock file in dir is free now, through a descriptor of its own
// (flock locks belong to open files, so this conflicts even within one process).
func tryLock(t *testing.T, dir string) bool {
	t.Helper()
	fd, err := unix.Open(filepath.Join(dir, LockName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	switch err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err {
	case nil:
		return true
	case unix.EWOULDBLOCK:
		return false
	default:
		t.Fatal(err)
	}
	return false
}

func TestLockExcludes(t *testing.T) {
	dir := t.TempDir()
	fd, _ := quotatest.Open(t, dir)
	unlock, err := lock(fd)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(filepath.Join(dir, LockName))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&^0o600 != 0 {
		t.Errorf("lock file mode %v, want a regular file, 0600 at most", st.Mode())
	}
	if tryLock(t, dir) {
		t.Fatal("the lock file could be locked while lock held it")
	}
	unlock()
	unlock() // a second call does nothing
	if !tryLock(t, dir) {
		t.Fatal("the lock file is still locked after unlock")
	}
	// The file stays: it is reused, not recreated.
	unlock, err = lock(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if tryLock(t, dir) {
		t.Fatal("relocking the existing file did not lock it")
	}
}

func TestLockRefusesOtherFiles(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(path string) error
		want  string
	}{
		{"symlink", func(p string) error { return os.Symlink("elsewhere", p) }, "too many levels of symbolic links"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "is a directory"},
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o600) }, "not a regular file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tt.setup(filepath.Join(dir, LockName)); err != nil {
				t.Fatal(err)
			}
			fd, _ := quotatest.Open(t, dir)
			unlock, err := lock(fd)
			if err == nil {
				unlock()
				t.Fatalf("lock with a %s as %s: no error", tt.name, LockName)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("lock with a %s as %s: %v, want %q and the directory", tt.name, LockName, err, tt.want)
			}
			if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
				t.Error("the symbolic link was followed")
			}
		})
	}
}
